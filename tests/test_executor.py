"""RayExecutor on a real local Ray runtime with 2 CPUs and 8 logical GPUs (no GPU needed).

One Ray instance and one executor serve the whole module, so slot actors started by one test
are reused by the next (an actor costs ~1 s of start-up on the 2-core CI machine). The runner is
`fake_runner` below: it sleeps, reports progress, honours cancel and records what it was given.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time

import pytest

from harness.executor import WORKER_DIED, RayExecutor
from harness.runner import RunOutcome, RunSpec, RunStatus

ray = pytest.importorskip("ray")

_ids = itertools.count()


def fake_runner(spec: RunSpec, on_progress=None, cancel=None) -> RunOutcome:
    """Stands in for run_candidate: sleeps SLEEP seconds, reporting a step every 50 ms."""
    import ray as _ray

    cancel = cancel if cancel is not None else threading.Event()
    t0 = time.time()
    step = 0
    while time.time() - t0 < float(spec.env.get("SLEEP", "0.3")):
        if cancel.wait(0.05):
            return RunOutcome(run_id=spec.run_id, status=RunStatus.CANCELLED, error="cancelled")
        step += 1
        if on_progress is not None:
            on_progress({"step": step, "val_bpb": 3.0 - 0.001 * step})
    return RunOutcome(run_id=spec.run_id, status=RunStatus.OK, val_bpb=1.0, steps=step, result={
        "cuda": spec.env.get("CUDA_VISIBLE_DEVICES"), "ray_gpu_ids": [int(g) for g in _ray.get_gpu_ids()],
        "nproc": spec.nproc, "pid": os.getpid()})


class Unloadable:
    """A runner that cannot be unpickled in the slot actor: its creation task fails."""

    def __init__(self):
        self.state = 1  # pickle calls __setstate__ only for a non-empty state

    def __call__(self, spec, on_progress=None, cancel=None):
        raise AssertionError("never called")

    def __setstate__(self, state):
        raise RuntimeError("boom while loading the runner")


def make_spec(tmp_path, sleep: float, name: str = "r") -> RunSpec:
    rid = f"{name}{next(_ids)}"
    return RunSpec(run_id=rid, run_dir=tmp_path / rid, source="print('x')\n", env={"SLEEP": str(sleep)},
                   time_cap_s=60.0)


def collect(ex: RayExecutor, ids, timeout: float = 60.0) -> dict[str, RunOutcome]:
    want, got = set(ids), {}
    deadline = time.monotonic() + timeout
    while want - got.keys():
        assert time.monotonic() < deadline, f"timed out waiting for {sorted(want - got.keys())}"
        for o in ex.poll(timeout=0.5):
            got[o.run_id] = o
    assert got.keys() == want, f"unexpected outcomes {sorted(got.keys() - want)}"
    return got


def wait_for(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def ex():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=8, log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
    # Ray workers cannot import this test module (tests/ is not on their sys.path): ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = RayExecutor(runner=fake_runner, progress_interval_s=0.1)
    yield executor
    executor.shutdown()
    ray.shutdown()


def test_one_and_four_gpu_runs_share_eight_gpus(ex, tmp_path):
    sizes = [1, 1, 4, 1, 1, 1, 4, 1, 1, 1, 1, 4, 1, 1]
    specs = {}
    for g in sizes:
        s = make_spec(tmp_path, 0.6)
        specs[s.run_id] = g
        ex.submit(s, g)
    got = collect(ex, specs)
    spans = []
    for rid, o in got.items():
        g, pl = specs[rid], o.result["placement"]
        assert o.status == RunStatus.OK, o.error
        assert o.result["nproc"] == g  # one process per GPU under torchrun
        assert len(pl["gpu_ids"]) == g and o.result["ray_gpu_ids"] == pl["gpu_ids"]
        assert o.result["cuda"] == pl["cuda_visible_devices"] == ",".join(map(str, pl["gpu_ids"]))
        assert pl["node"] and pl["queue_wait_s"] >= 0 and pl["finished_at"] > pl["started_at"]
        spans.append((pl["started_at"], pl["finished_at"], set(pl["gpu_ids"]), rid))
    for a, b in itertools.combinations(spans, 2):
        if a[0] < b[1] and b[0] < a[1]:  # ran at the same time
            assert not a[2] & b[2], f"{a[3]} and {b[3]} shared GPUs {a[2] & b[2]}"
    assert ex.capacity()["gpus"] == 8 and not ex.running() and not ex.queued()


def test_cpu_only_runs_use_cpu_slots(ex, tmp_path):
    specs = [make_spec(tmp_path, 0.4, "cpu") for _ in range(4)]
    for s in specs:
        ex.submit(s, 0)
    assert len(ex.running()) == 2  # 2 CPUs
    got = collect(ex, [s.run_id for s in specs])
    for o in got.values():
        assert o.status == RunStatus.OK and o.result["cuda"] == "" and o.result["placement"]["gpu_ids"] == []
        assert o.result["nproc"] == 1


def test_priority_runs_first(ex, tmp_path):
    low = [make_spec(tmp_path, d, "low") for d in (0.3, 1.2, 0.3, 0.3)]  # the 2 CPU slots free 0.9 s apart
    for s in low:
        ex.submit(s, 0, priority=0)
    high = make_spec(tmp_path, 0.1, "high")
    ex.submit(high, 0, priority=10)
    assert ex.queued() == [high.run_id, low[2].run_id, low[3].run_id]
    got = collect(ex, [s.run_id for s in low] + [high.run_id])
    start = {rid: o.result["placement"]["started_at"] for rid, o in got.items()}
    assert start[high.run_id] < min(start[low[2].run_id], start[low[3].run_id])


def test_progress_flows_back_and_cancel(ex, tmp_path):
    running = make_spec(tmp_path, 30, "long")
    ex.submit(running, 1)
    p = wait_for(lambda: ex.progress().get(running.run_id), what="progress")
    assert p["step"] >= 1 and "val_bpb" in p
    queued = [make_spec(tmp_path, 30, "cq") for _ in range(3)]
    for s in queued:
        ex.submit(s, 0)
    assert ex.queued() == [queued[2].run_id]
    for rid in [running.run_id] + [s.run_id for s in queued]:
        assert ex.cancel(rid)
    assert not ex.cancel("no-such-run")
    got = collect(ex, [running.run_id] + [s.run_id for s in queued], timeout=20)
    assert all(o.status == RunStatus.CANCELLED for o in got.values())
    assert got[queued[2].run_id].error == "cancelled before start"
    assert ex.progress() == {}


def test_killed_worker_comes_back_as_crash_and_executor_goes_on(ex, tmp_path):
    victim, bystander = make_spec(tmp_path, 30, "victim"), make_spec(tmp_path, 2.0, "by")
    ex.submit(victim, 1)
    ex.submit(bystander, 4)
    wait_for(lambda: victim.run_id in ex.progress(), what="victim running")
    info = ex.slot_info(victim.run_id)
    assert info["pid"] != os.getpid() and len(info["gpu_ids"]) == 1
    os.kill(info["pid"], signal.SIGKILL)
    got = collect(ex, [victim.run_id, bystander.run_id], timeout=30)
    assert got[victim.run_id].status == RunStatus.CRASH
    assert got[victim.run_id].error.startswith(f"{WORKER_DIED}: "), got[victim.run_id].error
    assert got[bystander.run_id].status == RunStatus.OK
    after = make_spec(tmp_path, 0.2, "after")
    ex.submit(after, 1)
    assert collect(ex, [after.run_id])[after.run_id].status == RunStatus.OK


def test_eight_gpu_run_is_not_starved_by_one_gpu_runs(ex, tmp_path):
    first = [make_spec(tmp_path, 1.0, "s") for _ in range(8)]
    for s in first:
        ex.submit(s, 1)
    big = make_spec(tmp_path, 0.5, "big")
    ex.submit(big, 8, priority=5)
    rest = [make_spec(tmp_path, 1.0, "t") for _ in range(24)]
    for s in rest:
        ex.submit(s, 1)
    got = collect(ex, [s.run_id for s in first + rest] + [big.run_id], timeout=90)
    assert all(o.status == RunStatus.OK for o in got.values())
    start = {rid: o.result["placement"]["started_at"] for rid, o in got.items()}
    assert len(got[big.run_id].result["placement"]["gpu_ids"]) == 8
    later = [start[s.run_id] for s in rest]
    assert start[big.run_id] < max(later)  # it reserved the node instead of waiting for the queue to drain
    assert 0.0 < ex.busy_fraction() <= 1.0


def test_busy_fraction_and_capacity(ex, tmp_path):
    specs = [make_spec(tmp_path, 0.5, "b") for _ in range(8)]
    for s in specs:
        ex.submit(s, 1)
    collect(ex, [s.run_id for s in specs])
    assert 0.0 < ex.busy_fraction() <= 1.0
    cap = ex.capacity()
    assert (cap["gpus"], cap["gpus_busy"], cap["cpus"], cap["max_gpus_per_node"]) == (8, 0, 2, 8)


def test_submit_rejects_impossible_runs(ex, tmp_path):
    with pytest.raises(ValueError, match="needs 16 GPUs on one node but the largest node has 8"):
        ex.submit(make_spec(tmp_path, 0.1), 16)
    with pytest.raises(ValueError, match="gpus must be an int"):
        ex.submit(make_spec(tmp_path, 0.1), -1)
    s = make_spec(tmp_path, 5)
    ex.submit(s, 0)
    with pytest.raises(ValueError, match="already queued or running"):
        ex.submit(s, 0)
    ex.cancel(s.run_id)
    collect(ex, [s.run_id])


def test_slot_that_cannot_start_is_an_executor_error_not_a_worker_death(ex, tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "runner", Unloadable())  # read when a slot is created; 2-GPU slots are new
    s = make_spec(tmp_path, 0.1, "bad")
    ex.submit(s, 2)
    o = collect(ex, [s.run_id])[s.run_id]
    assert o.status == RunStatus.CRASH and o.error.startswith("executor error: slot actor failed to start: ")
    assert "boom while loading the runner" in o.error and not o.error.startswith(WORKER_DIED)
