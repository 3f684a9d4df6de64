"""Hostile candidates: a patch is untrusted code, and these are real planted candidates that try to get out.

One search (the driver in its own process, holding an LLM key and another secret in its environment,
running a private copy of the harness) gets candidates from tests/faulty_trainers/plants.py that try
to read secrets from their environment, from every process of the search and from the files the
harness owns; to write outside their run folder through the patch; to change the harness's code, its
config and the run store; to reach the network during the re-score; and to extend their own time
budget. Each attack records what it managed in hostile_<name>.json in its own folder.

What the harness does about each, honestly:
  prevented  environment allowlist; secrets scrubbed from the driver before Ray starts; training in a
             user namespace (no reading the driver's memory or environment, even as root); patches
             that touch anything but train_gpt.py; the static audit for plain attacks; no network and
             hidden training data in the re-score; the harness's own clock
  detected   writes to the harness's files, the config, the Python start-up hooks and the run store
             (training has no filesystem sandbox): the culprit is found by rerunning suspects alone,
             its run is void and flagged `tampering`, its candidate blocked, files and rows put back
  allowed    reading files its user may read (nothing the harness writes holds a secret), and the
             network during training
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from faulty_trainers import plants, scenarios

from harness.sandbox import is_secret_name
from harness.store import Store

SECRETS = (scenarios.SECRET, scenarios.OTHER_SECRET)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> scenarios.Hostile:
    return scenarios.hostile(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def store(hostile) -> Store:
    assert hostile.db.exists(), hostile.run.stdout[-3000:] + hostile.run.stderr[-3000:]
    return Store(hostile.db.parent, readonly=True)


def candidate(store: Store, name: str):
    cands = [c for c in store.candidates() if c.proposer == f"planted:{name}"]
    assert len(cands) == 1, f"{name}: {len(cands)} candidates"
    return cands[0]


def last_run(store: Store, name: str):
    runs = store.runs(candidate_id=candidate(store, name).id)
    assert len(runs) == 1, runs
    return runs[0]


def report(store: Store, name: str, file: str) -> dict:
    path = Path(last_run(store, name).run_dir) / file
    assert path.is_file(), f"the {name} attack never ran ({path})"
    return json.loads(path.read_text())


def audit(run_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "audit", run_dir], cwd=scenarios.ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_search_survives_its_candidates(hostile, store):
    assert hostile.run.rc == 0, hostile.run.stdout[-4000:] + hostile.run.stderr[-4000:]
    assert store.scalar("SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')") == 0
    for name in ("env", "proc", "files", "net"):
        assert last_run(store, name).status == "ok"  # the attacks ran to the end and found nothing


# --- secrets ---------------------------------------------------------------------------------

def test_the_candidate_environment_holds_no_secret(store):
    for file in ("hostile_env.json", "rescore/hostile_env_eval.json"):
        env = report(store, "env", file)
        assert not [k for k in env if is_secret_name(k)], file
        assert not any(s in v for v in env.values() for s in SECRETS), file


def test_the_driver_scrubbed_its_own_environment_before_starting_ray(store):
    names = store.events(kind="secrets_scrubbed")[0].data["data"]["names"]
    assert {"OPENAI_API_KEY", "HF_TOKEN"} <= set(names)


def test_no_process_of_the_search_shows_a_secret_and_the_driver_memory_is_out_of_reach(store):
    run = last_run(store, "proc")
    for file in ("hostile_proc.json", "rescore/hostile_proc.json"):
        found = report(store, "proc", file)
        assert found["driver"] is not None and len(found["tree"]) > 3, found  # it did find the search's processes
        leaked = [f for f in found["secrets"] if f[2] in SECRETS]
        assert not leaked, f"{file}: {leaked}"
    isolation = json.loads((Path(run.run_dir) / "outcome.json").read_text())["isolation"]
    training = report(store, "proc", "hostile_proc.json")
    driver = str(training["driver"])
    if isolation["training"].startswith("user namespace"):
        assert training["memory_readable"][driver] is False  # the key is in the driver's memory: unreachable
    else:
        pytest.skip(f"no user namespace on this machine: {isolation['training']}")


def test_files_the_harness_owns_hold_no_secret(store):
    found = report(store, "files", "hostile_files.json")
    assert found["files_read"] > 50  # it could read the store, the config and the harness (not prevented)...
    assert any(r.endswith(".toml") for r in found["roots"])
    assert not [f for f in found["secrets"] if f[1] in SECRETS]  # ...and none of them holds a secret


def test_secret_named_variables_in_a_proposal_never_reach_the_run(store):
    run = last_run(store, "env_secret")
    assert "env_secret_stripped" in run.flags
    env = json.loads((Path(run.run_dir) / "env.json").read_text())
    assert not [k for k in env if is_secret_name(k)]


# --- writing outside the run folder ----------------------------------------------------------

@pytest.mark.parametrize(("name", "words"), [
    ("diff_absolute_path", "is absolute or leaves the directory"),
    ("diff_dotdot_path", "is absolute or leaves the directory"),
    ("diff_symlink", "creates a symlink"),
    ("diff_second_file", "the patch changes 'a/run.sh'"),
])
def test_a_patch_cannot_write_outside_the_run_folder(hostile, store, name, words):
    c = candidate(store, name)
    assert c.state == "rejected" and c.reason.startswith("apply:") and words in c.reason, c.reason
    assert not store.runs(candidate_id=c.id)
    assert not Path("/etc/cron.d/pgolf").exists()
    for path, before in hostile.harness_before.items():
        assert path.read_bytes() == before, path


@pytest.mark.parametrize(("name", "code"), [
    ("plain_socket", "network_import"), ("plain_write_harness", "write_outside_workdir"),
    ("plain_clock", "clock_env_write"),
])
def test_plain_attacks_are_stopped_by_the_static_audit_before_any_training(store, name, code):
    c = candidate(store, name)
    assert c.state == "rejected" and c.reason.startswith(f"audit: {code}"), c.reason


def test_changing_the_harness_config_and_store_is_detected_undone_and_blocked(hostile, store):
    tamper = report(store, "tamper", "hostile_tamper.json")
    assert "appended" in tamper.values() and tamper["store"].startswith("rewrote"), tamper  # it did get to write
    run = last_run(store, "tamper")
    assert run.status == "invalid" and "tampering" in run.flags and run.val_bpb is None
    assert store.candidate(run.candidate_id).state == "stopped"
    # everything is as it was
    for path, before in hostile.harness_before.items():
        assert path.read_bytes() == before, f"{path} was not put back"
    assert not (hostile.harness / "harness" / "sitecustomize.py").exists()
    assert "a candidate was here" not in hostile.config.read_text()
    with sqlite3.connect(f"file:{hostile.db}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='trigger'").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM runs WHERE val_bpb < 0.01").fetchone()[0] == 0
    # the runs that happened to be in flight beside it were rerun alone and kept their results
    quarantined = [e for e in store.events(kind="requeued") if e.data["data"]["reason"].startswith("rerun alone")]
    assert quarantined and {store.run(e.run_id).status for e in quarantined} <= {"ok", "invalid", "timeout"}
    assert [r.id for r in store.runs(status="invalid")] == [run.id]
    # and pgolf audit on its run folder says so
    out = audit(run.run_dir)
    assert out.returncode == 1 and re.search(r"ERROR\s+runner_flag.*tampering", out.stdout), out.stdout


# --- network and time ------------------------------------------------------------------------

def test_the_rescore_has_no_network_and_pgolf_audit_says_which_isolation_applied(hostile, store):
    run = last_run(store, "net")
    evaluation = report(store, "net", "rescore/hostile_net_eval.json")
    training = report(store, "net", "hostile_net.json")
    out = audit(run.run_dir)
    isolation = json.loads((Path(run.run_dir) / "outcome.json").read_text())["isolation"]
    assert re.search(r"INFO\s+isolation\s+.*rescore: ", out.stdout), out.stdout
    assert re.search(r"INFO\s+isolation\s+.*training: ", out.stdout), out.stdout
    if not isolation["rescore"].startswith("user, network"):
        assert "rescore_network_not_isolated" in run.flags
        pytest.skip(f"no network namespace on this machine: {isolation['rescore']}")
    assert evaluation["host_listener"].startswith("refused") and evaluation["interfaces"] == ["lo"]
    assert b"eval" not in hostile.net_hits
    # training is not network-isolated (the rules forbid the network in evaluation): said, not hidden
    assert training["host_listener"] == "connected" and b"train" in hostile.net_hits
    assert "has the network" in isolation["training"]


def test_a_candidate_cannot_extend_its_own_time_budget(store):
    run = last_run(store, "time")
    asked = report(store, "time", "hostile_time.json")
    assert asked["MAX_WALLCLOCK_SECONDS"] == "1e9" and asked["sigterm"] == "ignored"
    assert run.status == "timeout"
    limit = scenarios.kill_after()
    assert limit - 0.5 <= run.wall_s <= limit + 15, run.wall_s  # killed by the harness's clock, SIGKILL after TERM
    assert not Path(f"/proc/{asked['pid']}").exists()


def test_every_attack_was_planted(store):
    names = set(plants.attacks(0)) | set(plants.PLAIN_ATTACKS) | set(plants.ESCAPING_DIFFS) | {"env_secret"}
    assert {c.proposer.split(":", 1)[1] for c in store.candidates(kind="search")} == names


def test_scrubbing_hides_secrets_from_children_and_from_proc_environ():
    code = ("import os, subprocess, sys; from harness.sandbox import scrub_secrets_from_environ as s;"
            "names = s(); own = open('/proc/self/environ', 'rb').read();"
            "child = subprocess.run(['env'], capture_output=True).stdout;"
            "print(names, SECRET.encode() in own, SECRET.encode() in child, 'PATH' in os.environ)")
    env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": scenarios.SECRET, "PYTHONPATH": str(scenarios.ROOT)}
    out = subprocess.run([sys.executable, "-c", code.replace("SECRET", repr(scenarios.SECRET))], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["['OPENAI_API_KEY']", "False", "False", "True"], out.stdout + out.stderr
