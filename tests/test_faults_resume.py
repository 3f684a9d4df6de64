"""The fault matrix at the search level, part 2: the driver dies, and the LLM endpoint is down all night.

`pgolf search CONFIG` (the real CLI, in its own process) is SIGKILLed by the one documented kill
hook (harness/faults.py) while it schedules runs, inside the transaction that records a finished
run, and right after it wrote the record folder, each time run again with the same command. The
config gives the LLM proposer half the proposals and points it at a closed 127.0.0.1 port; Optuna
does the search. The baseline learns nothing (learning rates 0) so a tuned candidate is promoted
and the promotion itself can be interrupted. Nothing completed may be lost or run twice.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest
from faulty_trainers import scenarios

from harness.audit import audit_record_folder
from harness.store import Store


@pytest.fixture(scope="module")
def resume(tmp_path_factory) -> scenarios.KillResume:
    return scenarios.kill_resume(tmp_path_factory.mktemp("resume"))


@pytest.fixture(scope="module")
def store(resume) -> Store:
    return Store(resume.db.parent, readonly=True)


def output(inv: scenarios.Invocation) -> str:
    return f"rc={inv.rc}\n{inv.stdout[-4000:]}\n{inv.stderr[-4000:]}"


def test_each_kill_point_killed_the_driver_and_the_same_command_finished_the_search(resume, store):
    *killed, last = resume.invocations
    for inv, point in zip(killed, scenarios.KILL_POINTS, strict=True):
        assert inv.rc == -signal.SIGKILL, f"{point} was never reached:\n{output(inv)}"
    assert last.rc == 0, output(last)
    assert "Traceback" not in last.stderr
    assert store.scalar("SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')") == 0
    assert resume.leftovers == [0, 0, 0]  # no trainer outlived its driver


def test_nothing_completed_is_lost_or_run_twice(resume, store):
    after = {r.id: (r.status, r.finished_at, r.attempt) for r in store.runs()}
    for before in resume.finished_before:
        for run_id, row in before.items():
            assert after[run_id] == row, f"{run_id} changed after a restart: {row} -> {after[run_id]}"
    triples = store.query("SELECT candidate_id, rung, seed, COUNT(*) AS n FROM runs GROUP BY 1, 2, 3")
    assert all(t.n == 1 for t in triples)
    for r in store.runs():
        finishes = [e for e in store.events(kind="finished") if e.run_id == r.id]
        assert len(finishes) == 1, f"{r.id} recorded {len(finishes)} times"
    for r in store.runs(status="ok"):
        assert (Path(r.run_dir) / "train.log").read_text().count("final_int8_zlib_roundtrip_exact") == 1


def test_a_kill_while_scheduling_leaves_the_runs_queued_and_they_run_once(resume, store):
    assert resume.finished_before[1] == {}  # killed at the third submission: nothing had finished
    started = store.events(kind="driver_started")
    assert len(started) == 4
    # the submitted runs were still queued in the store: the restart submitted them again, reaping nothing;
    # only the restart after the kill inside a database write found runs in flight
    reaped = store.events(kind="reaped")
    assert all(started[1].id < e.id < started[2].id for e in reaped)


def test_a_kill_inside_a_database_write_loses_nothing(resume, store):
    with sqlite3.connect(f"file:{resume.db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    adopted = store.events(kind="adopted")
    assert len(adopted) == 1, "the run whose commit was killed should be taken from its run folder"
    run = store.run(adopted[0].run_id)
    assert run.status == "ok" and run.attempt == 0 and run.val_bpb is not None
    assert not [e for e in store.events(kind="reaped") if e.run_id == run.id]  # not trained again
    outcome = json.loads((Path(run.run_dir) / "outcome.json").read_text())
    assert outcome["val_bpb"] == pytest.approx(run.val_bpb)


def test_a_kill_after_the_record_was_written_keeps_exactly_one_record(resume, store):
    folders = [p for p in (resume.records / "track_cpu_smoke").iterdir()]
    assert len(folders) == 1 and not folders[0].name.startswith("."), folders  # no duplicate, no staging left
    summary = store.get_meta("summary")
    assert summary["record"] == str(folders[0]) and summary["verdict"] == "keep"
    j = store.one("SELECT * FROM judgements")
    assert j.verdict == "keep" and j.record_path == str(folders[0])
    assert store.candidate(j.candidate_id).state == "promoted"
    assert "was written before the driver stopped; keeping it" in resume.invocations[-1].stdout
    report = audit_record_folder(folders[0], byte_cap=400_000)
    assert report.ok, [f.message for f in report.findings]


def test_the_llm_endpoint_down_all_night_leaves_the_search_to_the_other_proposers(tmp_path_factory):
    down = scenarios.llm_down(tmp_path_factory.mktemp("llm_down"))
    assert down.run.rc == 0, output(down.run)
    store = Store(down.db.parent, readonly=True)
    calls = store.query("SELECT outcome, reason FROM llm_calls")
    assert calls and all(c.outcome == "http_error" for c in calls), calls
    assert any(str(down.llm_port) in c.reason or "onnect" in c.reason for c in calls)
    assert {c.proposer for c in store.candidates(kind="search")} == {"optuna"}
    assert store.get_meta("summary")["candidates"] == 3
    assert store.scalar("SELECT COUNT(*) FROM runs WHERE status='ok'") >= 4  # the search went on without it
    # it backed off between rounds of failed conversations instead of asking on every tick
    assert len(calls) <= 2 * 2 * 3
