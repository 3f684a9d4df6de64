"""The search loop asks the executor to run confirm seeds on one GPU model, and only them; a resumed search
holds them to the model its earlier confirm seeds used. (Placement itself, on a real multi-node Ray
cluster with two GPU models: tests/test_cluster.py.)

The real Search loop, store, pre-flight, judge and promotion; the executor is an in-process stand-in that
records what it was asked and says every run ran on one fake GPU model. The tripwire is off: the test
process is not a real search.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faulty_trainers.scenarios import search_toml, track_toml
from test_agents_loop import Planted, QuickExecutor

from harness import loop, tamper_watch
from harness.config import load_config
from harness.promote import confirm_seeds
from harness.runner import RunOutcome, RunSpec

MODEL = "FakeGPU-A"
SEEDS = 2


class RecordingExecutor(QuickExecutor):
    def __init__(self) -> None:
        super().__init__(slots=2, run_s=0.05)
        self.groups: dict[str, str | None] = {}
        self.held: dict[str, str] = {}

    def submit(self, spec: RunSpec, gpus: int, priority: int = 0, same_gpu_model: str | None = None) -> None:
        self.groups[spec.run_id] = same_gpu_model
        super().submit(spec, gpus, priority)

    def hold_gpu_model(self, group: str, model: str) -> None:
        self.held[group] = model

    def poll(self, timeout: float = 0) -> list[RunOutcome]:
        out = super().poll(timeout)
        for o in out:  # a 1-GPU slot of MODEL ran it
            o.result["placement"] = {"gpu": {"sku": MODEL, "count": 1, "driver": None}}
        return out


@pytest.fixture()
def config(tmp_path: Path, local_data, monkeypatch):
    root = local_data.dataset_dir.parent.parent
    (tmp_path / "track.toml").write_text(track_toml("one-gpu-rungs", root=root, rungs=(("screen", 1), ("full", 1))))
    (tmp_path / "search.toml").write_text(search_toml(tmp_path, "gpu-model", f"""
[budget]
max_candidates = 4
[proposers]
optuna = 0.0
catalog = 1.0
[promotion]
seeds = {SEEDS}
ablate = false
[knobs]
include = ["MATRIX_LR"]
"""))
    monkeypatch.setattr(tamper_watch.Tripwire, "for_harness", staticmethod(lambda paths: None))
    return load_config(tmp_path / "search.toml")


def run_search(cfg) -> tuple[loop.Search, RecordingExecutor]:
    executors: list[RecordingExecutor] = []

    def factory() -> RecordingExecutor:
        executors.append(RecordingExecutor())
        return executors[-1]

    search = loop.Search(cfg, executor_factory=factory, announce=lambda msg: None)
    search.proposers.clear()
    search.proposers["planted"] = Planted(["0.03", "0.035", "0.045", "0.05"])
    search.run()
    return search, executors[0]


def test_confirm_seeds_and_only_they_are_held_to_one_gpu_model(config):
    search, ex = run_search(config)
    runs = {r.id: r for r in search.store.runs()}
    top = len(search.track.rungs) - 1
    confirm = {rid for rid, r in runs.items() if r.rung_index == top and r.seed in confirm_seeds(SEEDS)}
    assert confirm and len(confirm) < len(ex.groups)  # the baseline's confirm seeds at least, and other runs
    assert {rid for rid, g in ex.groups.items() if g == loop.CONFIRM_GROUP} == confirm
    assert all(g is None for rid, g in ex.groups.items() if rid not in confirm)
    assert ex.held == {}  # a fresh search: the first confirm run to start picks the model
    assert {r.gpu_sku for r in runs.values() if r.status == "ok"} == {MODEL}

    _, ex2 = run_search(config)  # the same command again: the store has confirm seeds on MODEL
    assert ex2.held == {loop.CONFIRM_GROUP: MODEL}
