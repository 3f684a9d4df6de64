"""CatalogProposer: singles first, then greedy combinations of what did well; never twice."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import pytest

from agents.catalog import CatalogProposer, TechniqueLike
from agents.patches import PatchError, apply_patch, combine, diff_hash, make_diff
from harness.proposals import ScoredCandidate, SearchView, Validation

BASE = textwrap.dedent(
    """\
    import os

    model_dim = int(os.environ.get("MODEL_DIM", 512))
    matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))


    def mlp(x):
        x = relu(x)
        return x * x


    def train(model, opt):
        for step in range(10):
            loss = model(step)
            loss.backward()
            opt.step()
        return model
    """
)


@dataclass(frozen=True)
class Technique:
    name: str
    patch: str
    knobs: dict = field(default_factory=dict)
    conflicts: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ScaledTechnique(Technique):
    scale: str = "both"


def tech(name: str, old: str, new: str, **kw) -> Technique:
    assert old in BASE
    return Technique(name, make_diff(BASE, BASE.replace(old, new)), **kw)


CATALOG = [
    tech(
        "leaky",
        "x = relu(x)",
        'x = leaky_relu(x, float(os.environ.get("LEAKY_SLOPE", 0.5)))',
        knobs={"LEAKY_SLOPE": {"low": 0.1, "high": 0.9}},
        conflicts=("gelu",),
        description="LeakyReLU(0.5) squared",
    ),
    tech("gelu", "x = relu(x)", "x = gelu(x)"),
    tech("clip", "        opt.step()\n", "        clip_grad_norm(model, 1.0)\n        opt.step()\n"),
    tech("ema", "    return model\n", "    ema.copy_to(model)\n    return model\n", requires=("clip",)),
    Technique("stale", "--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -1,1 +1,1 @@\n-import sys\n+import re\n"),
]


def validate(patch: str) -> Validation:
    try:
        source = apply_patch(BASE, patch)
    except PatchError as e:
        return Validation(False, "apply", str(e))
    return Validation(True, "ok", "", source, len(source))


def view(*rows: ScoredCandidate, tried: frozenset[str] = frozenset()) -> SearchView:
    return SearchView(BASE, "b0", "cpu-smoke", 16_000_000, None, tuple(rows), (), tried)


def merged(*names: str) -> str:
    patch = ""
    for t in CATALOG:
        if t.name in names:
            patch = combine(BASE, patch, t.patch)
    return patch


def row(cid: str, bpb: float, *names: str, rung: str = "screen") -> ScoredCandidate:
    return ScoredCandidate(cid, bpb, 15_000_000, rung, merged(*names), {}, "catalog", tuple(names))


def make(validator=validate, catalog=CATALOG) -> tuple[CatalogProposer, list[dict]]:
    events: list[dict] = []
    return CatalogProposer(catalog, validator, on_event=events.append), events


def test_techniques_satisfy_the_protocol():
    assert all(isinstance(t, TechniqueLike) for t in CATALOG)


def test_singles_first_with_their_requirements_then_nothing_until_scores_come():
    proposer, events = make()
    out = proposer.propose(view(), 10)
    assert [p.techniques for p in out] == [("leaky",), ("gelu",), ("clip",), ("clip", "ema")]
    leaky = out[0]
    assert leaky.proposer == "catalog" and leaky.parents == ()
    assert leaky.knob_ranges == {"LEAKY_SLOPE": {"low": 0.1, "high": 0.9}}
    assert leaky.rationale == "catalog technique leaky: LeakyReLU(0.5) squared"
    both = apply_patch(BASE, out[3].patch)
    assert "clip_grad_norm" in both and "ema.copy_to" in both
    stale = [e for e in events if e["outcome"] == "apply_error"]
    assert len(stale) == 1 and stale[0]["techniques"] == ["stale"] and "B does not apply" in stale[0]["reason"]
    assert proposer.propose(view(), 10) == []  # never the same combination twice


def test_n_limits_each_call_and_the_next_call_continues():
    proposer, _ = make()
    first = proposer.propose(view(), 2)
    second = proposer.propose(view(), 2)
    assert [p.techniques for p in first + second] == [("leaky",), ("gelu",), ("clip",), ("clip", "ema")]


def scored_view() -> SearchView:
    return view(
        row("c-base", 1.30),
        row("c-leaky", 1.25, "leaky"),
        row("c-gelu", 1.35, "gelu"),  # worse than the baseline: not built on
        row("c-clip", 1.28, "clip"),
        row("c-ema", 1.27, "clip", "ema"),
    )


def test_greedy_adds_good_techniques_to_the_best_candidate():
    proposer, events = make()
    out = proposer.propose(scored_view(), 5)  # a fresh proposer: what was scored counts as tried
    assert [(p.techniques, p.parents) for p in out] == [
        (("leaky", "clip", "ema"), ("c-leaky",)),
        (("leaky", "clip"), ("c-leaky",)),
    ]
    merged = apply_patch(BASE, out[0].patch)
    assert "leaky_relu" in merged and "clip_grad_norm" in merged and "ema.copy_to" in merged
    assert out[0].rationale.startswith("catalog: c-leaky (leaky) plus clip")
    assert out[0].knob_ranges == {"LEAKY_SLOPE": {"low": 0.1, "high": 0.9}}
    assert [e["outcome"] for e in events] == ["apply_error", "ok", "ok"]  # stale, then the two
    assert proposer.propose(scored_view(), 5) == []


def test_declared_conflicts_are_never_combined():
    v = view(row("c-base", 1.30), row("c-gelu", 1.20, "gelu"), row("c-leaky", 1.25, "leaky"))
    out = make()[0].propose(v, 10)
    assert ("clip",) in [p.techniques for p in out]
    assert not any({"gelu", "leaky"} <= set(p.techniques) for p in out)


def test_scores_only_compare_within_a_rung():
    # against the screen-rung baseline both singles look bad; against the smoke baseline both did well
    v = view(
        row("c-base-screen", 1.10),
        row("c-base", 1.60, rung="smoke"),
        row("c-leaky", 1.50, "leaky", rung="smoke"),
        row("c-clip", 1.55, "clip", rung="smoke"),
    )
    out = make()[0].propose(v, 10)
    assert (("leaky", "clip"), ("c-leaky",)) in [(p.techniques, p.parents) for p in out]


def test_undeclared_overlap_is_an_apply_error_and_is_not_retried():
    clash = tech("swish", "x = relu(x)", "x = swish(x)")
    proposer, events = make(catalog=[CATALOG[0], clash])
    swish = ScoredCandidate("c-swish", 1.26, None, "screen", clash.patch, {}, "catalog", ("swish",))
    v = view(row("c-base", 1.30), row("c-leaky", 1.25, "leaky"), swish)
    assert proposer.propose(v, 5) == [] and proposer.propose(v, 5) == []
    conflicts = [e for e in events if e["outcome"] == "apply_error"]
    assert len(conflicts) == 1 and "conflict" in conflicts[0]["reason"]


def test_validator_rejection_is_recorded_with_its_stage():
    def no_clip(patch: str) -> Validation:
        if "clip_grad_norm" in patch:
            return Validation(False, "size", "estimated 16,100,000 bytes > cap 16,000,000")
        return validate(patch)

    proposer, events = make(no_clip)
    out = proposer.propose(view(), 10)
    assert [p.techniques for p in out] == [("leaky",), ("gelu",)]
    sized = [e for e in events if e["outcome"] == "size_error"]
    assert [e["techniques"] for e in sized] == [["clip"], ["clip", "ema"]]
    assert all(e["patch_hash"] and e["reason"].startswith("estimated") for e in sized)


def test_patches_tried_elsewhere_are_skipped_as_duplicates():
    leaky_hash = diff_hash(CATALOG[0].patch)
    proposer, events = make()
    out = proposer.propose(view(tried=frozenset({leaky_hash})), 1)
    assert [p.techniques for p in out] == [("gelu",)]
    assert events[0]["outcome"] == "duplicate" and events[0]["techniques"] == ["leaky"]


def test_observed_failures_are_not_built_on():
    proposer, _ = make()
    singles = proposer.propose(view(), 10)
    proposer.observe("c-leaky", singles[0], None, "crash")
    v = view(row("c-base", 1.30), row("c-leaky", 1.25, "leaky"), row("c-clip", 1.28, "clip"))
    out = proposer.propose(v, 10)
    assert all("leaky" not in p.techniques for p in out)


@pytest.mark.parametrize("n", [0, -1])
def test_no_proposals_for_nonpositive_n(n):
    assert make()[0].propose(view(), n) == []


def test_a_small_track_tries_small_scale_techniques_first_and_carries_their_env():
    """On a tiny CPU track a full-scale-only idea cannot show its gain: those come last. A track that pins a knob
    hides the technique's patched default, so the proposal carries the setting as env."""
    scaled = [ScaledTechnique(**vars(t), scale=s) for t, s in zip(CATALOG[:3], ("full", "both", "small"), strict=True)]
    env = {"gelu": {"MODEL_DIM": "64"}}
    agent = CatalogProposer(scaled, validate, scale="small", env_for=lambda t: env.get(t.name, {}))
    proposals = agent.propose(view(), 3)
    assert [p.techniques for p in proposals] == [("gelu",), ("clip",), ("leaky",)]
    assert [p.env for p in proposals] == [{"MODEL_DIM": "64"}, {}, {}]
    full = CatalogProposer(scaled, validate, scale="full").propose(view(), 3)
    assert [p.techniques for p in full] == [("leaky",), ("gelu",), ("clip",)]  # catalog order: full first anyway
