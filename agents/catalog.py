"""The offline catalog agent: known techniques, alone first, then greedy combinations.

Needs no network and no key, so the loop always has a proposer. Each technique is a patch
against the baseline trainer plus the knobs it exposes; the catalog itself lives in
`search_space.techniques` and only has to look like `TechniqueLike`.

Order of ideas: every technique alone (with what it requires), in catalog order, those expected to
help at the track's scale first (a tiny CPU track cannot show a full-scale-only gain); then, greedily,
the best candidate built from catalog techniques plus one more technique that did well alone and
conflicts with none of its techniques. Diffs are merged with `patches.combine`, every patch goes
through the validator, and no combination is proposed twice (also across restarts: combinations
already on the leaderboard, among the failures, or whose patch hash was tried are skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from agents.events import STAGE_OUTCOME, attempt_event
from agents.patches import PatchError, combine, diff_hash, one_line
from agents.prompts import best_first
from harness.proposals import Proposal, ScoredCandidate, SearchView, Validator


@runtime_checkable
class TechniqueLike(Protocol):
    """What the catalog agent needs from a technique."""

    @property
    def name(self) -> str: ...

    @property
    def patch(self) -> str: ...  # unified diff against the baseline train_gpt.py

    @property
    def knobs(self) -> Mapping[str, Mapping]: ...  # env var -> {low, high, log} for nested tuning

    @property
    def conflicts(self) -> Sequence[str]: ...  # techniques it cannot be combined with

    @property
    def requires(self) -> Sequence[str]: ...  # techniques it needs


Combo = frozenset[str]
_FAILED = {"crash", "timeout", "over_budget", "invalid", "rejected", "failed", "error"}


class CatalogProposer:
    name = "catalog"

    def __init__(
        self,
        techniques: Iterable[TechniqueLike],
        validator: Validator,
        *,
        on_event: Callable[[dict], None] | None = None,
        scale: str | None = None,
        env_for: Callable[[TechniqueLike], Mapping[str, str]] | None = None,
    ) -> None:
        """`scale`: the track's ("small" or "full"); techniques whose `scale` is neither it nor "both" come last.
        `env_for`: the env overrides a technique's proposal carries (a track that pins a knob hides a patched
        default); none by default."""
        techniques = list(techniques)
        if scale is not None:
            techniques.sort(key=lambda t: getattr(t, "scale", "both") not in (scale, "both"))
        self.techniques = {t.name: t for t in techniques}
        self._env_for = env_for or (lambda t: {})
        self._order = {name: i for i, name in enumerate(self.techniques)}
        self._validator = validator
        self._on_event = on_event or (lambda event: None)
        self._tried: set[Combo] = set()
        self._broken: dict[str, str] = {}  # technique -> why its patch cannot be used here
        self._observed: dict[Combo, tuple[float | None, str]] = {}

    def propose(self, view: SearchView, n: int) -> list[Proposal]:
        tried = self._tried | self._combos_in(view)
        known = set(view.tried_patch_hashes) | {diff_hash(c.patch) for c in (*view.leaderboard, *view.failures)}
        out: list[Proposal] = []
        for combo, parent in self._ideas(view, tried):
            if len(out) >= n:
                break
            tried.add(combo)
            self._tried.add(combo)
            proposal = self._build(view, combo, parent, known)
            if proposal is not None:
                known.add(diff_hash(proposal.patch))
                out.append(proposal)
        return out

    def observe(self, candidate_id: str, proposal: Proposal, val_bpb: float | None, status: str) -> None:
        if proposal.techniques:
            self._observed[frozenset(proposal.techniques)] = (val_bpb, status)

    # Ideas ------------------------------------------------------------------------------------

    def _combos_in(self, view: SearchView) -> set[Combo]:
        return {frozenset(c.techniques) for c in view.leaderboard if c.techniques}

    def closure(self, names: Iterable[str]) -> Combo | None:
        """The names plus everything they require; None if a requirement is missing or broken."""
        todo, done = list(names), set()
        while todo:
            name = todo.pop()
            if name in done:
                continue
            if name not in self.techniques or name in self._broken:
                return None
            done.add(name)
            todo += list(self.techniques[name].requires)
        return frozenset(done)

    def conflicting(self, combo: Combo) -> bool:
        return any(other in combo and other != name for name in combo for other in self.techniques[name].conflicts)

    def _ideas(self, view: SearchView, tried: set[Combo]) -> Iterator[tuple[Combo, ScoredCandidate | None]]:
        for name in list(self.techniques):
            combo = self.closure([name])
            if combo is not None and combo not in tried and not self.conflicting(combo):
                yield combo, None
        beats = self._beats_reference(view)
        rows = [
            c
            for c in best_first(view.leaderboard)
            if c.techniques and set(c.techniques) <= set(self.techniques) and beats(c)
        ]
        good = self._good_singles(rows)
        for base in rows:  # the best candidate first; the next ones once its extensions are used up
            for name in good:
                combo = self.closure([*base.techniques, name])
                if combo is None or combo in tried or name in base.techniques or self.conflicting(combo):
                    continue
                yield combo, base

    def _beats_reference(self, view: SearchView) -> Callable[[ScoredCandidate], bool]:
        """Did a row do better than the baseline (no patch, no env) at the same rung? True if unknown."""
        reference: dict[str, float] = {}
        for c in view.leaderboard:
            if not c.patch and not c.env and not c.techniques and c.val_bpb is not None:
                reference[c.rung] = min(c.val_bpb, reference.get(c.rung, c.val_bpb))

        def beats(c: ScoredCandidate) -> bool:
            if self._observed.get(frozenset(c.techniques), (None, ""))[1] in _FAILED:
                return False
            return c.rung not in reference or (c.val_bpb is not None and c.val_bpb < reference[c.rung])

        return beats

    def _good_singles(self, rows: list[ScoredCandidate]) -> list[str]:
        """Techniques whose single run (with its requirements) did well, best first."""
        good: list[str] = []
        for c in rows:
            combo = frozenset(c.techniques)
            for name in c.techniques:
                if self.closure([name]) == combo and name not in good:
                    good.append(name)
        return good

    # Building a proposal ----------------------------------------------------------------------

    def _build(
        self, view: SearchView, combo: Combo, parent: ScoredCandidate | None, known: set[str]
    ) -> Proposal | None:
        names = sorted(combo, key=self._order.__getitem__)
        patch = ""
        for name in names:
            try:
                patch = combine(view.baseline_source, patch, self.techniques[name].patch)
            except PatchError as e:
                reason = f"{name}: {e}"
                if str(e).startswith("B does not apply"):
                    self._broken[name] = reason  # stale against this baseline: never try it again
                self._event("apply_error", reason, names, parent)
                return None
        if not patch:
            self._event("apply_error", f"{', '.join(names)}: the patches change nothing", names, parent)
            return None
        if diff_hash(patch) in known:
            self._event("duplicate", "the same patch was tried already", names, parent, patch)
            return None
        validation = self._validator(patch)
        if not validation.ok:
            outcome = STAGE_OUTCOME.get(validation.stage, "apply_error")
            self._event(outcome, validation.reason or validation.stage, names, parent, patch)
            return None
        knobs: dict[str, dict] = {}
        env: dict[str, str] = {}
        for name in names:
            knobs.update({k: dict(v) for k, v in self.techniques[name].knobs.items()})
            env.update(self._env_for(self.techniques[name]))
        self._event("ok", "", names, parent, patch)
        return Proposal(
            patch=patch,
            env=env,
            proposer="catalog",
            rationale=self._rationale(names, parent),
            parents=(parent.candidate_id,) if parent else (),
            techniques=tuple(names),
            knob_ranges=knobs,
        )

    def _rationale(self, names: list[str], parent: ScoredCandidate | None) -> str:
        added = [n for n in names if parent is None or n not in parent.techniques]
        notes = [getattr(self.techniques[n], "description", "") or "" for n in added]
        what = "; ".join(f"{n}: {one_line(d, 200)}" if d else n for n, d in zip(added, notes, strict=True))
        if parent is None:
            return f"catalog technique {what}"
        return f"catalog: {parent.candidate_id} ({' + '.join(parent.techniques)}) plus {what}"

    def _event(
        self, outcome: str, reason: str, names: list[str], parent: ScoredCandidate | None, patch: str = ""
    ) -> None:
        self._on_event(
            attempt_event(
                kind="catalog",
                proposer="catalog",
                role="catalog",
                outcome=outcome,
                reason=reason,
                patch_hash=diff_hash(patch) if patch else None,
                patch=patch,
                parents=(parent.candidate_id,) if parent else (),
                techniques=tuple(names),
            )
        )
