"""The promotion state machine on a real run store: what it selects, and what it does when the judge says no."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agents.patches import make_diff
from harness.candidate import Candidate, run_id
from harness.config import Promotion, SearchConfig, load_track
from harness.promote import Promoter
from harness.proposals import Proposal
from harness.store import Store

TRACK = load_track("cpu-smoke")
TOP = len(TRACK.rungs) - 1


class StoreSearch:
    """What the Promoter uses of a Search: the real store, the config, and enqueueing runs into that store."""

    def __init__(self, root: Path, promotion: Promotion):
        self.store = Store(root)
        self.cfg = dataclasses.replace(SearchConfig(), promotion=promotion)
        self.track = TRACK
        self.reference_id = "ref"
        self.baseline_hash = "b0"
        self.said: list[str] = []

    def announce(self, msg: str) -> None:
        self.said.append(msg)

    def enqueue(self, candidate_id: str, rung_index: int, seed: int, purpose: str) -> bool:
        rung = self.track.rungs[rung_index]
        return self.store.enqueue_run(run_id(candidate_id, rung.name, seed), candidate_id, rung.name, rung_index,
                                      seed, rung.gpus)

    def add_candidate(self, p, kind: str = "search", rung_index: int = 0) -> str:
        """What Search.add_candidate does for a proposal that passes pre-flight: store it, queue its first run."""
        c = Candidate(self.baseline_hash, self.track.name, p.patch, dict(p.env))
        self.store.add_candidate({"id": c.id, "baseline_hash": self.baseline_hash, "track": TRACK.name,
                                  "patch": p.patch, "patch_hash": c.patch_hash, "env": dict(p.env),
                                  "proposer": p.proposer, "kind": kind})
        self.enqueue(c.id, rung_index, 1337, kind)
        return c.id

    def add(self, cid: str, kind: str = "search") -> None:
        self.store.add_candidate({"id": cid, "baseline_hash": "b0", "track": TRACK.name, "patch": "",
                                  "patch_hash": cid, "env": {"MATRIX_LR": cid}, "proposer": "optuna", "kind": kind})

    def finish(self, cid: str, seed: int, val_loss: float) -> None:
        self.enqueue(cid, TOP, seed, "search")
        rid = run_id(cid, TRACK.rungs[TOP].name, seed)
        self.store.finish_run(rid, {"status": "ok", "val_loss": val_loss, "val_bpb": val_loss / 1.84,
                                    "bytes_total": 100_000})

    def finish_queued(self, losses: dict[str, list[float]]) -> None:
        """Play the executor: every queued run finishes with the next loss given for its candidate."""
        for r in self.store.runs(status="queued"):
            loss = losses[r.candidate_id].pop(0)
            self.store.finish_run(r.id, {"status": "ok", "val_loss": loss, "val_bpb": loss / 1.84,
                                         "bytes_total": 100_000})


def search(tmp_path: Path, **promotion) -> StoreSearch:
    s = StoreSearch(tmp_path / "store", Promotion(ablate=False, **promotion))
    s.add("ref", kind="reference")
    s.add("a")
    s.add("b")
    s.finish("ref", 1337, 4.350)
    s.finish("a", 1337, 4.300)  # best at the search seed: a lucky draw
    s.finish("b", 1337, 4.310)
    return s


def test_when_the_best_fails_confirmation_the_next_best_is_confirmed(tmp_path):
    s = search(tmp_path, attempts=2)
    p = Promoter(s)
    assert p.step() and p.state["winner"] == "a" and p.state["phase"] == "judge"
    assert p.alpha == 0.005  # two attempts share alpha 0.01
    s.finish_queued({"a": [4.351, 4.349, 4.352], "ref": [4.350, 4.352, 4.348]})  # a's gain was seed noise
    assert p.step()  # judged a: discard; selects b and enqueues its confirm seeds (the baseline's are kept)
    assert p.state["winner"] == "b" and p.state["attempt"] == 2 and p.state["judged"] == ["a"]
    assert {r.candidate_id for r in s.store.runs(status="queued")} == {"b"}
    s.finish_queued({"b": [4.311, 4.309, 4.312]})
    assert not p.step()
    assert p.state["phase"] == "done"
    verdicts = {j.candidate_id: j.verdict for j in s.store.query("SELECT * FROM judgements")}
    assert verdicts["a"] == "discard" and "b" in verdicts
    restarted = Promoter(s)  # the state lives in the store: a restarted driver does not judge again
    assert restarted.state["phase"] == "done" and not restarted.step()


def test_attempts_are_bounded(tmp_path):
    s = search(tmp_path, attempts=1)
    p = Promoter(s)
    assert p.step()
    s.finish_queued({"a": [4.351, 4.349, 4.352], "ref": [4.350, 4.352, 4.348]})
    assert not p.step()
    assert p.state["phase"] == "done" and p.state["verdict"] == "discard"
    assert not s.store.runs(candidate_id="b", rung=TRACK.rungs[TOP].name) or \
        all(r.seed == 1337 for r in s.store.runs(candidate_id="b"))


def test_a_best_under_the_margin_is_not_worth_confirming(tmp_path):
    s = StoreSearch(tmp_path / "store", Promotion(ablate=False))
    s.add("ref", kind="reference")
    s.add("a")
    s.finish("ref", 1337, 4.350)
    s.finish("a", 1337, 4.348)  # 0.002 nats: a confirmation needs 0.005
    p = Promoter(s)
    assert not p.step()
    assert p.state["verdict"] == "none" and "under the 0.005 margin" in p.state["reason"]
    assert not s.store.runs(status="queued")


def test_a_flagged_baseline_is_named_as_the_reason(tmp_path):
    s = StoreSearch(tmp_path / "store", Promotion(ablate=False))
    s.add("ref", kind="reference")
    s.add("a")
    s.finish("a", 1337, 4.300)
    s.enqueue("ref", TOP, 1337, "reference")
    s.store.finish_run(run_id("ref", TRACK.rungs[TOP].name, 1337),
                       {"status": "ok", "val_loss": 4.35, "val_bpb": 2.36, "bytes_total": 100_000,
                        "flags": ["over_time"]})
    p = Promoter(s)
    assert not p.step()
    assert p.state["reason"].startswith("the baseline's top-rung runs are flagged (over_time)")


def test_ablation_keeps_one_of_two_redundant_parts(tmp_path):
    """A patched default and the same env override each hold the whole gain alone; dropping both would leave
    the baseline, so the minimal diff keeps the part whose removal cost the most."""
    s = StoreSearch(tmp_path / "store", Promotion())
    screen = TRACK.rungs[TOP - 1].name
    base = "import os\nmlp_mult = int(os.environ.get('MLP_MULT', 2))\n"
    best = s.add_candidate(Proposal(patch=make_diff(base, base.replace("2))", "3))")), env={"MLP_MULT": "3"},
                                    proposer="catalog"), rung_index=TOP)
    s.add("ref", kind="reference")
    for cid, loss in (("ref", 4.35), (best, 4.30)):
        s.finish(cid, 1337, loss)
        s.enqueue(cid, TOP - 1, 1337, "search")
        s.store.finish_run(run_id(cid, screen, 1337), {"status": "ok", "val_loss": loss, "val_bpb": loss / 1.84})
    p = Promoter(s)
    assert p.step() and p.state["phase"] == "reduce"
    variants = p.state["variants"]
    assert set(variants) == {"hunk:0", "env:MLP_MULT"}
    for name, loss in (("hunk:0", 4.301), ("env:MLP_MULT", 4.302)):  # both hold the gain; the env drop costs more
        run = next(r for r in s.store.runs(candidate_id=variants[name]))
        s.store.finish_run(run.id, {"status": "ok", "val_loss": loss, "val_bpb": loss / 1.84})
    assert p.step() and p.state["phase"] == "verify_minimal"
    assert p.state["dropped"] == ["hunk:0"]
    minimal = s.store.candidate(p.state["minimal"])
    assert minimal.patch == "" and minimal.env == {"MLP_MULT": "3"}
