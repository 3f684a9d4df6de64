"""The run store: single writer in WAL mode, readers alongside, never two runs of one idea."""

import sqlite3
import subprocess
import sys

import pytest

from harness.candidate import Candidate, patch_fingerprint, run_id
from harness.errors import StoreError
from harness.store import Store, find_store


def _cand(store, cid="c1", **kw):
    store.add_candidate({"id": cid, "baseline_hash": "b", "track": "t", "patch": "", "patch_hash": "p", "env": {},
                         "proposer": "test", **kw})


def test_wal_and_reader_alongside_writer(tmp_path):
    s = Store(tmp_path)
    assert s.scalar("PRAGMA journal_mode") == "wal"
    _cand(s)
    r = Store(tmp_path, readonly=True)
    assert r.candidate("c1").proposer == "test"
    with pytest.raises(sqlite3.OperationalError):
        r.conn.execute("DELETE FROM candidates")


def test_same_candidate_rung_seed_never_queued_twice(tmp_path):
    s = Store(tmp_path)
    _cand(s)
    assert s.enqueue_run("c1-smoke-s1", "c1", "smoke", 0, 1, gpus=0)
    assert not s.enqueue_run("c1-smoke-s1-again", "c1", "smoke", 0, 1, gpus=0)
    assert s.add_candidate({"id": "c1", "baseline_hash": "b", "track": "t", "patch": "", "patch_hash": "p",
                            "env": {}, "proposer": "x"}) is False


def test_finish_run_records_metrics_and_events(tmp_path):
    s = Store(tmp_path)
    _cand(s)
    s.enqueue_run("r1", "c1", "smoke", 0, 1, gpus=0)
    s.mark_running("r1")
    s.update_progress("r1", {"step": 3, "total": 10, "val_bpb": 3.1})
    s.finish_run("r1", {"status": "ok", "val_bpb": 2.5, "val_loss": 4.0, "bytes_total": 123, "flags": ["x"],
                        "val_history": [{"step": 0, "val_bpb": 4.0}, {"step": 10, "val_bpb": 2.5}],
                        "result": {"placement": {"node": "n1", "gpu_ids": [0], "queue_wait_s": 0.5}}})
    run = s.run("r1")
    assert (run.status, run.val_bpb, run.flags, run.node, run.gpu_ids) == ("ok", 2.5, ["x"], "n1", [0])
    assert [m.step for m in s.query("SELECT step FROM metrics WHERE run_id='r1' ORDER BY step")] == [0, 10]
    assert s.scalar("SELECT COUNT(*) FROM progress") == 0
    assert [e.kind for e in s.events()] == ["proposed", "queued", "started", "finished"]


def test_reap_orphans_requeues_running(tmp_path):
    s = Store(tmp_path)
    _cand(s)
    s.enqueue_run("r1", "c1", "smoke", 0, 1, gpus=0)
    s.mark_running("r1")
    s.close()
    s2 = Store(tmp_path)
    assert s2.reap_orphans() == ["r1"]
    r = s2.run("r1")
    assert r.status == "queued" and r.attempt == 1


def test_transaction_is_all_or_nothing_when_killed(tmp_path):
    """A writer SIGKILLed inside a transaction leaves the store as it was before the transaction."""
    Store(tmp_path).close()
    code = f"""
import os, signal
from harness.store import Store
s = Store({str(tmp_path)!r})
with s.transaction() as conn:
    conn.execute("INSERT INTO meta(key, value) VALUES ('half', '1')")
    os.kill(os.getpid(), signal.SIGKILL)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert p.returncode == -9
    assert Store(tmp_path).get_meta("half") is None


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no run store"):
        Store(tmp_path / "nope", readonly=True)
    with pytest.raises(StoreError, match="pass the search folder"):
        find_store(tmp_path)
    Store(tmp_path / "a")
    assert find_store(tmp_path) == tmp_path / "a"


def test_candidate_id_ignores_diff_noise():
    a = "--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -1,3 +1,3 @@\n x\n-y = 1\n+y = 2\n"
    b = ("diff --git a/train_gpt.py b/train_gpt.py\n--- a/train_gpt.py\n+++ b/train_gpt.py\n"
         "@@ -5,1 +5,1 @@\n-y = 1\n+y = 2  \n")
    assert patch_fingerprint(a) == patch_fingerprint(b)
    ca, cb = Candidate("h", "t", a, {"A": "1"}), Candidate("h", "t", b, {"A": "1"})
    assert ca.id == cb.id and ca.id != Candidate("h", "t", a, {"A": "2"}).id
    assert run_id(ca.id, "smoke", 1337) == f"{ca.id}-smoke-s1337"
