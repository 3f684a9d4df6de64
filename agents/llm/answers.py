"""From an agent's answer to a checked patch: parse, apply, diff against the baseline, dedup, then the
pre-flight pipeline (the validator: apply, compile, static audit, size estimate; then the CPU smoke).

Every rejection is a `Verdict` whose stage and one-line reason the proposer records and, within the
repair bound, sends back to the agent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agents.events import STAGE_OUTCOME
from agents.patches import PatchError, apply_answer, diff_hash, make_diff, parse_edits, similarity, structure
from harness.proposals import ScoredCandidate, SearchView, SmokeCheck, Validation, Validator


@dataclass(frozen=True)
class Verdict:
    outcome: str  # an agents.events outcome: "ok", "parse_error", ..., "smoke_error", "duplicate"
    stage: str  # the stage that rejected the patch ("parse", "apply", ..., "smoke", "dedup"), or "ok"
    reason: str = ""  # one line: what failed and how to fix it
    patch: str = ""  # the canonical diff against the baseline, when the answer produced one
    rationale: str = ""
    knobs: dict[str, dict] = field(default_factory=dict)  # declared knob ranges the patched file reads
    smoke_s: float = 0.0  # seconds the CPU smoke took (0 when it did not run)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def rejected(stage: str, reason: str, patch: str = "", rationale: str = "", smoke_s: float = 0.0) -> Verdict:
    stage = stage if stage in STAGE_OUTCOME else "apply"
    return Verdict(STAGE_OUTCOME[stage], stage, reason or f"failed at {stage}", patch, rationale, smoke_s=smoke_s)


class AnswerChecker:
    """Judges answers and patches for one proposer; thread-safe as long as its callables are.

    `seen(key)` tells whether the proposer returned a patch with this diff hash already. `smoke`, when
    given, runs after the validator passed: a tiny CPU training run of the patched file."""

    def __init__(
        self,
        validator: Validator,
        smoke: SmokeCheck | None,
        similarity_threshold: float,
        seen: Callable[[str], bool],
    ) -> None:
        self.validator = validator
        self.smoke = smoke
        self.similarity_threshold = similarity_threshold
        self._seen = seen

    def answer(
        self, view: SearchView, source: str, parents: Sequence[ScoredCandidate], env: Mapping[str, str], text: str
    ) -> Verdict:
        """The verdict on an answer that edits `source` (the baseline or a parent's file)."""
        parsed = parse_edits(text)
        if parsed.errors:
            return rejected("parse", parsed.errors[0])
        try:
            new_source = apply_answer(source, parsed)
        except PatchError as e:
            return rejected("apply", str(e), rationale=parsed.rationale)
        patch = make_diff(view.baseline_source, new_source)
        if not patch:
            return rejected("apply", "the change undoes the parent's patch: the file is the baseline")
        verdict = self.patch(view, patch, parents, env)
        if not verdict.ok:
            return Verdict(verdict.outcome, verdict.stage, verdict.reason, patch, parsed.rationale, {}, verdict.smoke_s)
        # A knob the file never reads would make the nested Optuna search tune nothing.
        knobs = {k: v for k, v in parsed.knob_ranges.items() if re.search(rf"[\"']{k}[\"']", new_source)}
        return Verdict("ok", "ok", "", patch, parsed.rationale, knobs, verdict.smoke_s)

    def patch(
        self, view: SearchView, patch: str, parents: Sequence[ScoredCandidate], env: Mapping[str, str]
    ) -> Verdict:
        """Dedup, then the pre-flight pipeline, for a diff against the baseline."""
        reason = self.duplicate(view, patch, parents)
        if reason:
            return rejected("dedup", reason, patch)
        validation, smoke_s = self.validate(patch, env)
        if not validation.ok:
            return rejected(validation.stage, validation.reason, patch, smoke_s=smoke_s)
        return Verdict("ok", "ok", "", patch, smoke_s=smoke_s)

    def validate(self, patch: str, env: Mapping[str, str]) -> tuple[Validation, float]:
        """The validator's verdict, then (when it passed) the smoke's; and the seconds the smoke took."""
        validation = self.validator(patch)
        if not validation.ok or self.smoke is None or validation.source is None:
            return validation, 0.0
        start = time.monotonic()
        smoked = self.smoke(validation.source, patch, env)
        return (validation if smoked.ok else smoked), time.monotonic() - start

    def duplicate(self, view: SearchView, patch: str, parents: Sequence[ScoredCandidate]) -> str:
        """Why the patch is a (near-)duplicate of an earlier candidate, or "" when it is new."""
        key = diff_hash(patch)
        if self._seen(key) or key in view.tried_patch_hashes:
            return f"the same change as an earlier candidate (patch hash {key})"
        base = "".join(c.patch for c in parents)
        if base and not structure(patch) - structure(base):
            return ""  # adds nothing beyond its parents' lines: a merge, new if its hash is
        ids = {c.candidate_id for c in parents}
        earlier = [(c.candidate_id, c.patch) for c in (*view.leaderboard, *view.failures) if c.patch]
        for cid, other in earlier:
            if cid in ids:
                continue
            score = similarity(patch, other, base)
            if score >= self.similarity_threshold:
                return f"{score:.2f} similar to candidate {cid}, which was tried already; propose a different idea"
        return ""
