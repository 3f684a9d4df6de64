"""The README's main command, end to end: `pgolf search --preset smoke`, killed with SIGKILL in the
middle and run again. Every completed run is kept, none runs twice, the orphans are reaped and
requeued, and the search ends with a promoted record folder that passes the audit."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.audit import audit_record_folder
from harness.store import Store

ROOT = Path(__file__).resolve().parents[1]


def _search_cmd(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "search", "--preset", "smoke", "--store", str(tmp / "runs"),
            "--records", str(tmp / "records")]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", OPENAI_API_KEY="sk-test-never-reaches-a-candidate")
    return env


def _finished(db: Path) -> dict[str, tuple]:
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            rows = conn.execute("SELECT id, finished_at, val_bpb FROM runs WHERE status NOT IN ('queued','running')")
            return {r[0]: (r[1], r[2]) for r in rows}
        except sqlite3.OperationalError:
            return {}


def _running(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute("SELECT COUNT(*) FROM runs WHERE status='running'").fetchone()[0]


@pytest.fixture(scope="session")
def smoke_search(tmp_path_factory) -> dict:
    """Run the embedded default, SIGKILL the driver once it has finished some runs and has others in
    flight, then run the same command to the end. Yields what the tests need to check."""
    tmp = tmp_path_factory.mktemp("smoke")
    db = tmp / "runs" / "smoke" / "pgolf.db"
    log1 = open(tmp / "first.log", "w")
    first = subprocess.Popen(_search_cmd(tmp), cwd=ROOT, env=_env(tmp), stdout=log1, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.time() + 600
    killed_with: dict[str, tuple] = {}
    while time.time() < deadline and first.poll() is None:
        done = _finished(db)
        if len(done) >= 3 and _running(db) >= 1:
            os.kill(first.pid, signal.SIGKILL)  # the driver only: what a crash or an OOM kill does
            first.wait()
            killed_with = done
            break
        time.sleep(0.5)
    log1.close()
    assert killed_with, f"never caught the search mid-flight:\n{(tmp / 'first.log').read_text()[-3000:]}"
    time.sleep(1)
    second = subprocess.run(_search_cmd(tmp), cwd=ROOT, env=_env(tmp), capture_output=True, text=True,
                            timeout=900)
    return {"tmp": tmp, "db": db, "before": killed_with, "second": second,
            "first_log": (tmp / "first.log").read_text()}


def test_resume_keeps_completed_runs_and_runs_nothing_twice(smoke_search):
    second = smoke_search["second"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed:" in second.stdout  # the in-flight runs were reaped and requeued
    store = Store(smoke_search["db"].parent, readonly=True)
    after = {r.id: (r.finished_at, r.val_bpb) for r in store.runs()}
    for run_id, before in smoke_search["before"].items():
        assert after[run_id] == before, f"{run_id} was run again after the resume"
    assert store.scalar("SELECT COUNT(*) FROM runs WHERE status IN ('queued','running')") == 0
    reaped = [e.run_id for e in store.events(kind="reaped")]
    assert reaped, "no orphan was reaped"
    for rid in reaped:
        assert store.run(rid).status != "running" and store.run(rid).attempt >= 1
    # one training launch per run: a run folder holds the log of exactly one attempt
    for r in store.runs(status="ok"):
        log = Path(r.run_dir) / "train.log"
        assert log.read_text().count("final_int8_zlib_roundtrip_exact") == 1


def test_smoke_search_promotes_an_audited_record(smoke_search):
    store = Store(smoke_search["db"].parent, readonly=True)
    summary = store.get_meta("summary")
    assert summary["record"], f"no record promoted: {store.get_meta('promotion')}\n{smoke_search['second'].stdout}"
    record = Path(summary["record"])
    assert record.parent.name == "track_cpu_smoke"
    report = audit_record_folder(record, byte_cap=400_000)
    assert report.ok, [f.message for f in report.findings]
    sub = json.loads((record / "submission.json").read_text())
    assert len(sub["seeds"]) == 3 and sub["val_bpb"] < sub.get("comparison_baseline_bpb", 99)
    j = store.one("SELECT * FROM judgements WHERE verdict='keep'")
    assert j is not None and j.p_value < 0.01 and j.delta_nats <= -0.005


def test_smoke_search_walks_every_rung_with_harness_owned_scores(smoke_search):
    store = Store(smoke_search["db"].parent, readonly=True)
    rungs = {r.rung for r in store.runs(status="ok")}
    assert rungs == {"smoke", "screen", "full"}
    ref = store.one("SELECT id FROM candidates WHERE kind='reference'")
    assert {r.rung for r in store.runs(candidate_id=ref.id)} == {"smoke", "screen", "full"}
    for r in store.runs(status="ok"):
        assert r.rescore_val_bpb is not None and r.val_bpb == pytest.approx(r.rescore_val_bpb)
        assert r.bytes_total == r.bytes_code + r.bytes_model
    proposers = {c.proposer for c in store.candidates(kind="search")}
    assert {"optuna", "catalog"} <= proposers
    summary = store.get_meta("summary")
    assert [(a["from"], a["to"]) for a in summary["rung_agreement"]] == [("smoke", "screen"), ("screen", "full")]


def test_optuna_study_lives_in_the_run_store(smoke_search):
    import optuna

    storage = f"sqlite:///{smoke_search['db']}"
    study = optuna.load_study(study_name="smoke", storage=storage)
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.RUNNING not in states  # no zombie trials after the kill
    assert len(study.trials) >= 1


def test_secrets_never_reach_a_candidate(smoke_search):
    secret = "sk-test-never-reaches-a-candidate"
    for path in (smoke_search["tmp"] / "runs").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".txt", ".py", ".diff"):
            assert secret not in path.read_text(errors="replace"), path


def test_dashboard_renders_the_real_smoke_search(smoke_search):
    """The dashboard's panels over the store the README's command filled, at 80x24 and wide."""
    from test_dash import assert_panels, frame

    store = Store(smoke_search["db"].parent, readonly=True)
    for width, height in ((80, 24), (200, 50)):
        text = frame(store, width, height, now=time.time())
        assert_panels(text, width, height)
    wide = frame(store, 200, 50, now=time.time())
    ref = store.one("SELECT id FROM candidates WHERE kind='reference'").id
    assert ref[:8] in wide or "baseline" in wide
    assert "optuna" in wide and "catalog" in wide
