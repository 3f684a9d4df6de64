"""The fault matrix at the search level, part 1: trainer faults and a dead Ray worker.

One real search (the driver in its own process, real Ray, real trainers on the local corpus) whose
planted candidates (tests/faulty_trainers/plants.py) crash at start, mid-training and mid-export,
print a NaN loss, run out of memory, hang silently, print past the cap, and leave a missing, a
truncated and a lying result file; the test SIGKILLs the Ray worker process running one more.
For each: the search goes on, the run store says what happened, and nothing completed is lost or
run twice.
"""

from __future__ import annotations

import pytest
from faulty_trainers import plants, scenarios

from harness.store import Store

KILL_AFTER = scenarios.kill_after()  # the harness's own deadline for a training process


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> scenarios.FaultSearch:
    return scenarios.fault_search(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def store(search) -> Store:
    assert search.db.exists(), search.run.stdout[-3000:] + search.run.stderr[-3000:]
    return Store(search.db.parent, readonly=True)


def runs_of(store: Store, fault: str) -> list:
    cands = [c for c in store.candidates() if c.proposer == f"planted:{fault}"]
    assert len(cands) == 1, f"planted {fault} was proposed {len(cands)} times"
    return store.runs(candidate_id=cands[0].id)


def the_run(store: Store, fault: str):
    runs = runs_of(store, fault)
    assert len(runs) == 1, f"{fault}: {len(runs)} runs"
    return runs[0]


def test_the_search_goes_on_to_its_end(search, store):
    assert search.run.rc == 0, search.run.stdout[-3000:] + search.run.stderr[-3000:]
    summary = store.get_meta("summary")
    assert summary["stop_reason"].endswith("(max_candidates)")
    assert store.scalar("SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')") == 0
    ref = store.one("SELECT id FROM candidates WHERE kind='reference'")
    assert [r.status for r in store.runs(candidate_id=ref.id)] == ["ok"]
    assert the_run(store, "healthy").status == "ok"


@pytest.mark.parametrize(("fault", "status", "words"), [
    ("crash_start", "crash", "planted fault: crash at start"),
    ("crash_mid", "crash", "planted fault: crash mid-training"),
    ("crash_export", "crash", "planted fault: crash mid-export"),
    ("nan_loss", "crash", "FAIL: non-finite loss at step 2"),
    ("out_of_memory", "crash", "can't allocate memory"),
    ("silent_hang", "timeout", "killed after"),
    ("prints_past_cap", "timeout", "killed after"),
    ("result_missing", "crash", "result.json missing"),
    ("result_truncated", "crash", "result.json is not valid JSON (truncated?"),
])
def test_each_fault_is_recorded_with_its_cause(store, fault, status, words):
    run = the_run(store, fault)
    assert run.status == status and words in (run.error or ""), (run.status, run.error)
    assert "\n" not in run.error and run.val_bpb is None
    cand = store.candidate(run.candidate_id)
    assert cand.state == "stopped" and words in cand.reason  # the proposers see why


@pytest.mark.parametrize("fault", ["silent_hang", "prints_past_cap"])
def test_a_run_past_its_cap_is_killed_by_the_harness_clock(store, fault):
    run = the_run(store, fault)
    assert KILL_AFTER - 0.5 <= run.wall_s <= KILL_AFTER + 15, run.wall_s  # cap + eval + startup + grace
    if fault == "prints_past_cap":
        assert "last step 2/3" in run.error  # it kept printing step lines until the kill


def test_a_lying_result_file_is_flagged_and_the_harness_numbers_win(store):
    run = the_run(store, "result_lies")
    assert run.status == "ok"
    assert {"rescore_mismatch", "bytes_mismatch"} <= set(run.flags)
    assert run.val_bpb == pytest.approx(run.rescore_val_bpb)  # the re-score, not the claim
    assert run.bytes_total == run.bytes_code + run.bytes_model  # recounted from the files
    from harness.views import standings

    board = {s.candidate_id: s for s in standings(store)}
    assert board[run.candidate_id].blocked  # never ranked, never promoted


def test_a_killed_ray_worker_is_requeued_and_its_run_finishes(search, store):
    assert search.worker_kill, "the victim never reached step 2"
    run = the_run(store, "worker_killed")
    assert run.status == "ok" and run.attempt == 1, (run.status, run.attempt, run.error)
    requeued = [e for e in store.events(kind="requeued") if e.run_id == run.id]
    assert len(requeued) == 1 and requeued[0].data["data"]["reason"].startswith("ray worker died")
    assert search.worker_kill["run_dir"] == run.run_dir
    assert not scenarios.Path(f"/proc/{search.worker_kill['worker_pid']}/cmdline").exists()


def test_nothing_completed_is_lost_or_run_twice(store):
    triples = store.query("SELECT candidate_id, rung, seed, COUNT(*) AS n FROM runs GROUP BY 1, 2, 3")
    assert all(t.n == 1 for t in triples)
    for fault in plants.FAULTS:
        runs_of(store, fault)  # each planted candidate exactly once, with exactly one run
    for r in store.runs():
        finishes = [e for e in store.events(kind="finished") if e.run_id == r.id]
        assert len(finishes) == 1, f"{r.id} was recorded {len(finishes)} times"
    for r in store.runs(status="ok"):  # one training per folder: what was scored is what was recorded
        log = (scenarios.Path(r.run_dir) / "train.log").read_text()
        assert log.count("final_int8_zlib_roundtrip_exact") == 1
