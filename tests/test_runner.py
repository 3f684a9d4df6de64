"""harness.runner: one candidate run as a real child process, with real kills and a real re-score.

The trainer here is tests/stub_trainers/contract_stub.py, which follows the trainer contract
in milliseconds and misbehaves on request (STUB_MODE). Caps are 1-2 s so the suite is quick;
nothing asserts a duration beyond "it finished" or "it was killed".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import sandbox
from harness.runner import RunOutcome, RunSpec, RunStatus, run_candidate

ROOT = Path(__file__).resolve().parents[1]
STUB = Path(__file__).with_name("stub_trainers") / "contract_stub.py"
SECRET = "sk-test-secret-0123456789"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """An official-layout data folder with train and val shards (contents irrelevant to the stub)."""
    d = tmp_path / "data" / "datasets" / "stub_sp1024"
    d.mkdir(parents=True)
    for name in ("fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        (d / name).write_bytes(b"\0" * 64)
    tok = tmp_path / "data" / "tokenizers"
    tok.mkdir()
    (tok / "stub_1024_bpe.model").write_bytes(b"tokenizer")
    return d


def make_spec(tmp_path: Path, data_dir: Path, mode: str = "ok", run_id: str = "run1", **kw) -> RunSpec:
    tokenizer = data_dir.parents[1] / "tokenizers" / "stub_1024_bpe.model"
    env = {"DATA_PATH": str(data_dir), "TOKENIZER_PATH": str(tokenizer),
           "STUB_MODE": mode, "STUB_ORIG_DATA": str(data_dir), "SEED": "1337", "TRAIN_BATCH_TOKENS": "8192"}
    env.update(kw.pop("env", {}))
    defaults = dict(patch="", time_cap_s=2.0, grace_s=0.5, startup_s=1.0, term_grace_s=1.0)
    defaults.update(kw)
    return RunSpec(run_id=run_id, run_dir=tmp_path / "runs" / run_id, source=STUB.read_text(), env=env, **defaults)


def gone(pid: int) -> bool:
    """True when the process no longer exists (or is only an unreaped zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:].split()[0] == b"Z"


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2:].split()[1])


def wait_for(pred, timeout: float = 20.0, every: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return pred()


def read_pids(run_dir: Path) -> dict[str, int]:
    return json.loads((run_dir / "stub_pids.json").read_text())


# ---------------------------------------------------------------------------------------------
# the good path
# ---------------------------------------------------------------------------------------------

def test_ok_run_is_parsed_recounted_and_rescored(tmp_path, data_dir):
    progress: list[dict] = []
    patch = "--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -1 +1 @@\n-x\n+y\n"
    spec = make_spec(tmp_path, data_dir, patch=patch)
    o = run_candidate(spec, on_progress=progress.append)
    rd = spec.run_dir
    assert o.status is RunStatus.OK, o.error
    assert o.error is None and o.flags == []
    # files the harness writes
    assert (rd / "train_gpt.py").read_text() == STUB.read_text()
    assert (rd / "patch.diff").read_text() == patch
    env_json = json.loads((rd / "env.json").read_text())
    assert env_json["STUB_MODE"] == "ok" and env_json["MAX_WALLCLOCK_SECONDS"] == "2"
    assert (rd / "logs" / "run1.txt").exists() and (rd / "train.log").exists()
    assert json.loads((rd / "outcome.json").read_text())["status"] == "ok"
    assert not (rd / "home").exists() and not (rd / "tmp").exists()  # scratch removed
    # harness-owned byte count
    assert o.bytes_code == len(STUB.read_bytes())
    assert o.bytes_model == (rd / "final_model.int8.ptz").stat().st_size == 1000
    assert o.bytes_total == o.bytes_code + o.bytes_model
    # the re-score is the official score and agrees with the claim
    assert o.rescore_val_bpb == pytest.approx(1.23456789)
    assert o.val_bpb == o.rescore_val_bpb and o.claimed_val_bpb == pytest.approx(1.23456789)
    assert o.val_loss == pytest.approx(1.23456789 * 1.6875)
    assert o.pre_quant_val_bpb is not None
    assert (rd / "rescore" / "result.json").exists()
    assert not (rd / "rescore" / "final_model.int8.ptz").exists()  # the copy is cleaned up
    assert not (rd / "rescore" / "val_data").exists()
    # log parsing and progress
    assert o.steps == 6 and o.exit_code == 0 and o.wall_s > 0 and o.rescore_wall_s > 0
    assert [h["step"] for h in o.val_history] == [0, 2, 4, 6]
    assert o.device == "cpu" and o.peak_memory_mib == 12.5 and o.world_size == 1
    vals = [p for p in progress if "val_bpb" in p]
    trains = [p for p in progress if "train_loss" in p]
    assert [p["step"] for p in vals] == [0, 2, 4, 6] and len(trains) == 6
    assert all(p["total"] == 6 and "elapsed_s" in p and "train_time_ms" in p and "step_avg_ms" in p for p in progress)
    # JSON round trip
    back = RunOutcome.from_dict(json.loads(json.dumps(o.to_dict())))
    assert back == o and back.status is RunStatus.OK and back.status.is_finished()


def test_status_finished_and_spec_validation(tmp_path, data_dir):
    assert not RunStatus.QUEUED.is_finished() and not RunStatus.RUNNING.is_finished()
    assert all(s.is_finished() for s in RunStatus if s not in (RunStatus.QUEUED, RunStatus.RUNNING))
    for bad in (dict(run_id="../escape"), dict(run_id=""), dict(nproc=0), dict(time_cap_s=0),
                dict(env={"A": 1}), dict(byte_cap=0), dict(grace_s=-1)):
        with pytest.raises(ValueError):
            make_spec(tmp_path, data_dir, **bad)
    with pytest.raises(TypeError):
        run_candidate({"run_id": "x"})  # type: ignore[arg-type]


def test_rescore_disabled_uses_the_claim_and_flags_it(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, rescore=False))
    assert o.status is RunStatus.OK and "not_rescored" in o.flags
    assert o.val_bpb == pytest.approx(1.23456789) and o.rescore_val_bpb is None


# ---------------------------------------------------------------------------------------------
# crashes
# ---------------------------------------------------------------------------------------------

def test_crash_at_start(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "crash_start"))
    assert o.status is RunStatus.CRASH and o.exit_code == 1
    assert "RuntimeError: stub: bad config at start" in o.error and "see train.log" in o.error
    assert "\n" not in o.error and o.val_bpb is None


def test_crash_mid_training_keeps_the_partial_log(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "crash_mid"))
    assert o.status is RunStatus.CRASH
    assert "ValueError: stub: shape mismatch in block 1 at step 3" in o.error
    assert o.steps == 2 and [h["step"] for h in o.val_history] == [0, 2]
    assert not (o.run_dir and Path(o.run_dir, "rescore").exists())


def test_nan_loss_is_a_crash_with_that_reason(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "nan"))
    assert o.status is RunStatus.CRASH
    assert o.error.startswith("FAIL: non-finite loss at step 3") and "exit code 1" in o.error


def test_bad_interpreter_is_a_crash_not_an_exception(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, python=str(tmp_path / "no-such-python")))
    assert o.status is RunStatus.CRASH and "could not start" in o.error


# ---------------------------------------------------------------------------------------------
# kills: timeouts, cancel, a dead driver
# ---------------------------------------------------------------------------------------------

def test_silent_hang_is_killed_with_its_whole_tree(tmp_path, data_dir):
    spec = make_spec(tmp_path, data_dir, "hang", time_cap_s=1.0)
    o = run_candidate(spec)
    assert o.status is RunStatus.TIMEOUT and "killed after" in o.error and "MAX_WALLCLOCK_SECONDS" in o.error
    pids = read_pids(spec.run_dir)
    assert gone(pids["stub"]) and gone(pids["grandchild"])
    assert o.steps == 2  # what it printed before hanging is kept


def test_sigterm_ignoring_and_escaped_processes_are_killed(tmp_path, data_dir):
    """SIGTERM ignored everywhere and a grandchild in its own session: SIGKILL + the subreaper get them."""
    spec = make_spec(tmp_path, data_dir, "hang_term_ignore,escape", time_cap_s=1.0, term_grace_s=0.5)
    o = run_candidate(spec)
    assert o.status is RunStatus.TIMEOUT
    pids = read_pids(spec.run_dir)
    assert set(pids) == {"stub", "grandchild", "escaped"}
    assert all(gone(p) for p in pids.values()), pids


def test_leftover_processes_die_with_a_successful_run(tmp_path, data_dir):
    spec = make_spec(tmp_path, data_dir, "grandchild,escape")
    o = run_candidate(spec)
    assert o.status is RunStatus.OK, o.error
    assert all(gone(p) for p in read_pids(spec.run_dir).values())


def test_printing_past_the_cap_is_a_timeout(tmp_path, data_dir):
    progress: list[dict] = []
    spec = make_spec(tmp_path, data_dir, "spam", time_cap_s=1.0, env={"STUB_STEP_S": "0.005"})
    o = run_candidate(spec, on_progress=progress.append)
    assert o.status is RunStatus.TIMEOUT
    assert o.steps is not None and o.steps > 6 and len(progress) > 6
    assert not (spec.run_dir / "rescore").exists()


def test_cancel_kills_the_run(tmp_path, data_dir):
    spec = make_spec(tmp_path, data_dir, "hang", time_cap_s=60.0)
    cancel = threading.Event()

    def trip():
        wait_for(lambda: (spec.run_dir / "stub_pids.json").exists())
        cancel.set()

    t = threading.Thread(target=trip)
    t.start()
    o = run_candidate(spec, cancel=cancel)
    t.join()
    assert o.status is RunStatus.CANCELLED and "cancelled" in o.error
    assert all(gone(p) for p in read_pids(spec.run_dir).values())


def test_cancel_before_start_runs_nothing(tmp_path, data_dir):
    cancel = threading.Event()
    cancel.set()
    spec = make_spec(tmp_path, data_dir)
    o = run_candidate(spec, cancel=cancel)
    assert o.status is RunStatus.CANCELLED and not (spec.run_dir / "train.log").exists()


_DRIVER = """
import json, sys
from pathlib import Path
from harness.runner import RunSpec, run_candidate
a = json.loads(sys.argv[1])
spec = RunSpec(run_id=a["run_id"], run_dir=Path(a["run_dir"]), source=Path(a["source"]).read_text(), env=a["env"],
               time_cap_s=a["time_cap_s"], grace_s=0.5, startup_s=1.0, term_grace_s=0.5)
print("OUTCOME " + json.dumps(run_candidate(spec).to_dict()), flush=True)
"""


def _driver(tmp_path: Path, data_dir: Path, mode: str, time_cap_s: float) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "runs" / "drv"
    args = {"run_id": "drv", "run_dir": str(run_dir), "source": str(STUB), "time_cap_s": time_cap_s,
            "env": {"DATA_PATH": str(data_dir), "STUB_MODE": mode}}
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": SECRET}
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps(args)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, run_dir


def test_run_dies_with_a_killed_driver(tmp_path, data_dir):
    proc, run_dir = _driver(tmp_path, data_dir, "hang_term_ignore,escape", time_cap_s=120.0)
    try:
        assert wait_for(lambda: (run_dir / "stub_pids.json").exists(), timeout=30), proc.stdout.read()
        pids = read_pids(run_dir)
        pids["shim"] = ppid_of(pids["stub"])
        assert pids["shim"] != proc.pid
        os.kill(proc.pid, signal.SIGKILL)  # the driver (or its Ray actor) dies without cleaning up
        proc.wait()
        assert wait_for(lambda: all(gone(p) for p in pids.values()), timeout=15), pids
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_candidates_cannot_read_the_drivers_secret_environment(tmp_path, data_dir):
    """The driver holds OPENAI_API_KEY in its initial environment; /proc/<ancestor>/environ must not leak it."""
    proc, run_dir = _driver(tmp_path, data_dir, "probe_ancestors", time_cap_s=5.0)
    out, _ = proc.communicate(timeout=60)
    line = next(x for x in out.splitlines() if x.startswith("OUTCOME "))
    o = RunOutcome.from_dict(json.loads(line[len("OUTCOME "):]))
    assert o.status is RunStatus.OK, o.error
    if "net" in sandbox.isolation_support(sys.executable):  # the re-score runs in a user namespace
        assert json.loads((run_dir / "rescore" / "stub_eval.json").read_text())["ancestors"]["secret_seen"] is False
    if os.geteuid() != 0:  # root outside a user namespace may read anything (CAP_SYS_PTRACE)
        assert json.loads((run_dir / "stub_ancestors.json").read_text())["secret_seen"] is False


# ---------------------------------------------------------------------------------------------
# result files that are missing, broken or lying; budgets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, words", [("no_result", "result.json missing"),
                                         ("truncated_result", "not valid JSON")])
def test_missing_or_truncated_result_is_a_crash(tmp_path, data_dir, mode, words):
    o = run_candidate(make_spec(tmp_path, data_dir, mode))
    assert o.status is RunStatus.CRASH and words in o.error and "RESULT_JSON" in o.error


def test_stale_result_from_an_earlier_attempt_is_not_trusted(tmp_path, data_dir):
    spec = make_spec(tmp_path, data_dir, "no_result")
    spec.run_dir.mkdir(parents=True)
    (spec.run_dir / "result.json").write_text(json.dumps({"val_bpb": 0.5, "val_loss": 0.8}))
    o = run_candidate(spec)
    assert o.status is RunStatus.CRASH and "result.json missing" in o.error


def test_missing_artifact_is_a_crash(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "no_artifact"))
    assert o.status is RunStatus.CRASH and "artifact missing" in o.error and "ARTIFACT_PATH" in o.error


def test_claiming_fewer_bytes_is_flagged_and_recounted(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "lie_bytes"))
    assert o.status is RunStatus.OK, o.error
    assert "bytes_mismatch" in o.flags and o.bytes_model == 1000
    assert any("bytes_model=500" in n for n in o.notes)


def test_claiming_a_better_score_is_flagged_and_the_rescore_wins(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "lie_bpb"))
    assert o.status is RunStatus.OK, o.error
    assert "rescore_mismatch" in o.flags
    assert o.claimed_val_bpb == pytest.approx(1.23456789 - 0.05)
    assert o.val_bpb == o.rescore_val_bpb == pytest.approx(1.23456789)


def test_over_the_byte_cap_is_over_budget(tmp_path, data_dir):
    code = len(STUB.read_bytes())
    spec = make_spec(tmp_path, data_dir, env={"STUB_MODEL_BYTES": "5000"}, byte_cap=code + 4999)
    o = run_candidate(spec)
    assert o.status is RunStatus.OVER_BUDGET and o.bytes_total == code + 5000
    assert "over the" in o.error and "by 1" in o.error
    assert not (spec.run_dir / "rescore").exists()  # no eval time spent on an invalid artifact


def test_reported_train_time_over_the_cap_is_flagged(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "over_time"))
    assert o.status is RunStatus.OK and "over_time" in o.flags


def test_self_modifying_code_is_counted_as_submitted(tmp_path, data_dir):
    spec = make_spec(tmp_path, data_dir, "self_modify")
    o = run_candidate(spec)
    assert "code_modified" in o.flags and o.bytes_code == len(STUB.read_bytes())
    assert (spec.run_dir / "train_gpt.py").read_text() == STUB.read_text()


def test_rescore_crash_is_invalid(tmp_path, data_dir):
    o = run_candidate(make_spec(tmp_path, data_dir, "rescore_crash"))
    assert o.status is RunStatus.INVALID
    assert o.error.startswith("re-score failed:") and "state_dict key mismatch" in o.error
    assert o.val_bpb is None and o.claimed_val_bpb == pytest.approx(1.23456789)


def test_rescore_without_val_shards_is_invalid(tmp_path, data_dir):
    for f in data_dir.glob("fineweb_val_*"):
        f.unlink()
    o = run_candidate(make_spec(tmp_path, data_dir))
    assert o.status is RunStatus.INVALID and "fineweb_val_" in o.error


# ---------------------------------------------------------------------------------------------
# isolation
# ---------------------------------------------------------------------------------------------

def test_secrets_never_reach_the_candidate(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value-123")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NCCL_DEBUG", "WARN")
    env = {"MY_API_KEY": "x", "GITHUB_TOKEN": "y", "INNOCENT": f"prefix-{SECRET}", "VAL_TOKENS": "4096"}
    spec = make_spec(tmp_path, data_dir, "dump_env", env=env)
    o = run_candidate(spec)
    assert o.status is RunStatus.OK, o.error
    assert "env_secret_stripped" in o.flags
    for dump in (spec.run_dir / "stub_env.json", spec.run_dir / "rescore" / "stub_env.json"):
        child = json.loads(dump.read_text())
        for name in ("OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_API_KEY", "GITHUB_TOKEN", "INNOCENT"):
            assert name not in child
        assert child["TRAIN_BATCH_TOKENS"] == "8192" and child["VAL_TOKENS"] == "4096"  # knobs survive
        assert child["OMP_NUM_THREADS"] == "1" and child["NCCL_DEBUG"] == "WARN"  # allowlisted
        assert child["HOME"].startswith(str(spec.run_dir)) and child["TMPDIR"].startswith(str(spec.run_dir))
        assert "PYTEST_CURRENT_TEST" not in child  # nothing outside the allowlist
    for path in spec.run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and b"hf_secret_value" not in data, path


def test_rescore_sees_only_val_shards(tmp_path, data_dir):
    spec = make_spec(tmp_path, data_dir)
    o = run_candidate(spec)
    assert o.status is RunStatus.OK, o.error
    seen = json.loads((spec.run_dir / "rescore" / "stub_eval.json").read_text())
    assert seen["data_listing"] == ["fineweb_val_000000.bin"]
    assert Path(seen["data_path"]).is_relative_to(spec.run_dir)
    caps = sandbox.isolation_support(sys.executable)
    if "net" in caps:
        assert seen["interfaces"] == ["lo"] and "rescore_network_not_isolated" not in o.flags
    else:
        assert "rescore_network_not_isolated" in o.flags
    # the val shards it reads are the real files behind a read-only mount, or private copies
    assert (data_dir / "fineweb_val_000000.bin").read_bytes() == b"\0" * 64
    if "fs" in caps:
        assert seen["writable"] == []
        # the training data folder (and its `datasets` parent) is covered by an empty tmpfs
        assert seen["orig_listing"] == [] or "No such file" in seen["orig_listing"]
    else:
        assert "rescore_fs_not_isolated" in o.flags
    assert sorted(p.name for p in data_dir.iterdir())[:2] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]


def test_torchrun_multi_process_run_and_rescore(tmp_path, data_dir):
    pytest.importorskip("torch.distributed.run")
    spec = make_spec(tmp_path, data_dir, nproc=2, time_cap_s=30.0, startup_s=30.0)
    o = run_candidate(spec)
    assert o.status is RunStatus.OK, o.error
    assert o.world_size == 2 and o.val_bpb == pytest.approx(1.23456789)


_PROTECT = """
import os, subprocess, sys
from harness import sandbox
protected = sandbox.protect_own_environ() if sys.argv[1] == "protect" else False
probe = "import os; print(b'OPENAI_API_KEY=' in open(f'/proc/{os.getppid()}/environ', 'rb').read())"
r = subprocess.run([sys.executable, "-c", probe], env={"PATH": os.defpath}, capture_output=True, text=True)
print(protected, r.stdout.strip() or "denied")
"""


@pytest.mark.parametrize("how", ["protect", "control"])
def test_protect_own_environ_hides_the_drivers_secrets_from_same_uid_children(how):
    """A same-uid child can read /proc/<parent>/environ unless the parent made itself non-dumpable."""
    cmd = [sys.executable, "-c", _PROTECT, how]
    if os.geteuid() == 0:  # root reads everything: run the pair as an unprivileged user
        # (harness.sandbox is stdlib-only; a system interpreter is one that user can surely execute)
        cmd[0] = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv")
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": SECRET}
    r = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot run the probe here: {r.stderr.strip()[-200:]}")
    protected, child_saw = r.stdout.split()
    if how == "protect":
        assert (protected, child_saw) == ("True", "denied")
    else:
        assert (protected, child_saw) == ("False", "True")  # the hole exists without the protection
