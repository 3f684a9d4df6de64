"""What proposers exchange with the loop: read-only views in, proposals out.

Proposers (Optuna, the offline catalog agent, LLM agents) never touch the store or the
scheduler. They get a frozen `SearchView` and return `Proposal`s; the loop turns those
into candidates, validates them, and later feeds outcomes back through `observe`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Proposal:
    """A patch and/or env overrides to try, with where it came from and why."""

    patch: str = ""  # unified diff against the baseline trainer ("" = no code change)
    env: dict[str, str] = field(default_factory=dict)  # knob overrides, values as the trainer parses them
    proposer: str = ""  # "optuna", "catalog", "llm:explorer", ...
    rationale: str = ""
    parents: tuple[str, ...] = ()  # candidate ids this was derived from
    techniques: tuple[str, ...] = ()  # catalog technique names the patch contains
    knob_ranges: dict[str, dict] = field(default_factory=dict)  # knobs the patch exposes, for nested Optuna tuning
    trial_number: int | None = None  # Optuna trial this proposal belongs to, if any


@dataclass(frozen=True)
class ScoredCandidate:
    """One row of the leaderboard as proposers see it."""

    candidate_id: str
    val_bpb: float | None
    bytes_total: int | None
    rung: str
    patch: str
    env: dict[str, str]
    proposer: str
    techniques: tuple[str, ...] = ()
    rationale: str = ""


@dataclass(frozen=True)
class FailedCandidate:
    candidate_id: str
    patch: str
    env: dict[str, str]
    status: str  # crash, timeout, over_budget, invalid, rejected
    reason: str  # one line
    proposer: str = ""


@dataclass(frozen=True)
class SearchView:
    """Everything a proposer may look at. Take a copy before modifying anything in it."""

    baseline_source: str
    baseline_hash: str
    track: str
    byte_cap: int
    baseline_bytes: int | None  # measured artifact bytes of the baseline, once known
    leaderboard: tuple[ScoredCandidate, ...] = ()
    failures: tuple[FailedCandidate, ...] = ()
    tried_patch_hashes: frozenset[str] = frozenset()  # normalized-diff hashes already proposed


@dataclass(frozen=True)
class Validation:
    """Outcome of the pre-flight pipeline for one patch: apply, compile, audit, size, smoke."""

    ok: bool
    stage: str  # "apply", "compile", "audit", "size", "smoke", "dedup" or "ok"
    reason: str = ""  # one line: what failed and how to fix it
    source: str | None = None  # the patched trainer when it applied
    estimated_bytes: int | None = None


Validator = Callable[[str], Validation]
# The CPU smoke stage (harness.smoke.CpuSmoke): (patched source, patch, env overrides) -> Validation, run
# after a Validator passed; stage "smoke" when the tiny CPU run crashes, diverges, fails to export or times out.
SmokeCheck = Callable[[str, str, Mapping[str, str]], Validation]


@runtime_checkable
class Proposer(Protocol):
    """Decides what to try next. Ray Tune's suggest/on_trial_complete, Optuna's ask/tell.

    A proposer that works in the background (agents.llm.LLMProposer) also has `busy` (work in flight:
    an empty answer means "not yet"), `saturated` (asking now would give and start nothing), `drain()`
    (deliver its queued events in the caller's thread) and `close(timeout)`; the loop uses them when
    present, so the protocol itself stays two methods."""

    name: str

    def propose(self, view: SearchView, n: int) -> list[Proposal]:
        """Up to n new proposals (fewer, or none, when out of ideas or budget)."""
        ...

    def observe(self, candidate_id: str, proposal: Proposal, val_bpb: float | None, status: str) -> None:
        """Feed back the outcome of a proposal's candidate at its highest rung so far."""
        ...
