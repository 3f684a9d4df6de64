"""Run ONE training run of a candidate as a child process, owned and measured by the harness.

`run_candidate(spec)` writes the run folder, starts the trainer (torchrun for nproc > 1) under
the supervisor shim in `harness/sandbox.py`, tails its log for progress, kills it whole at the
deadline or on cancel, then judges what it left behind without trusting what it printed:

* bytes are recounted from the files (`train_gpt.py`, the artifact) and compared with the
  result file and the log (`bytes_mismatch`); over the cap is OVER_BUDGET;
* wall clock is measured from outside; a reported train time over the cap is flagged `over_time`;
* the artifact is re-scored by a fresh EVAL_ONLY=1 process that sees only the val shards, inside
  a user + network (+ mount) namespace when the machine allows it. That score is the official one;
  a claim that differs by more than `RESCORE_TOLERANCE` is flagged `rescore_mismatch`.

A bad run never raises: every outcome is a `RunOutcome` whose `error` is one line naming the
cause and the fix. Only a malformed `RunSpec` (a programmer error) raises, at construction.

Containment. The child is `python harness/sandbox.py ... -- <trainer>` started with
start_new_session=True, so its pid is the run's process-group id. The shim (not a preexec_fn:
that is unsafe in the threaded Ray actors that call us) sets PR_SET_PDEATHSIG and polls getppid,
so a SIGKILLed driver/actor still takes the run down; it is a child subreaper, so grandchildren
that call setsid are found and killed too. The harness kills by SIGTERM to the shim (which
terminates its whole tree, SIGKILL after term_grace_s) and then SIGKILLs the process group as a
backstop; it watches the child with waitid(WNOWAIT), so the group id cannot be recycled before
that last killpg. The child's environment is an allowlist plus spec.env minus secrets. Training
runs in a user namespace (`unshare -r`) where the machine allows it, so even a root candidate
cannot read the memory or environment of the processes outside (the driver holds the LLM key);
`RunOutcome.isolation` records what contained the training and the re-score (pgolf audit shows it).

Run folder (run_dir):
    train_gpt.py  patch.diff  env.json    what ran (env.json: the env overrides, secrets removed)
    train.log                             the trainer's stdout + stderr, written by the harness
    logs/<RUN_ID>.txt                     the trainer's own log
    result.json  final_model.int8.ptz     RESULT_JSON and ARTIFACT_PATH
    rescore/                              train_gpt.py, train.log, result.json of the re-score
    outcome.json                          this module's verdict (RunOutcome.to_dict())
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import sandbox
from harness.logparse import LogSummary, error_line
from harness.process import Exec, execute
from harness.run_types import RunOutcome, RunSpec, RunStatus

log = logging.getLogger(__name__)

__all__ = ["RunOutcome", "RunSpec", "RunStatus", "run_candidate"]  # the types live in harness.run_types

SANDBOX_SCRIPT = Path(sandbox.__file__).resolve()
RESCORE_TOLERANCE = 1e-4  # |re-score - claimed| above this (in bpb) flags rescore_mismatch
ARTIFACT_NAME = "final_model.int8.ptz"
VAL_SHARD_GLOB = "fineweb_val_*.bin"
# Variables the harness owns: a candidate's env cannot set them.
HARNESS_KEYS = ("RESULT_JSON", "ARTIFACT_PATH", "RUN_ID", "EVAL_ONLY", "HOME", "TMPDIR", "PYTHONUNBUFFERED",
                "PYTHONDONTWRITEBYTECODE")
_PATH_KEYS = ("DATA_PATH", "TOKENIZER_PATH")


def _shim_cmd(spec: RunSpec, argv: list[str], nproc: int, prefix: list[str] = (), opts: list[str] = ()) -> list[str]:
    if nproc > 1:
        trainer = [spec.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]
    else:
        trainer = [spec.python, *argv]
    return [*prefix, spec.python, str(SANDBOX_SCRIPT), "--parent-pid", str(os.getpid()),
            "--term-grace", str(spec.term_grace_s), *opts, "--", *trainer]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def _read_result(path: Path) -> tuple[dict | None, str | None]:
    """(result, None) or (None, one-line error)."""
    fix = "the trainer must write one JSON object to RESULT_JSON before exiting (docs/architecture.md)"
    if not path.exists():
        return None, f"{path.name} missing: {fix}"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return None, f"{path.name} unreadable ({e}): {fix}"
    if not text.strip():
        return None, f"{path.name} is empty: {fix}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{path.name} is not valid JSON (truncated? {e.msg} at char {e.pos}): {fix}"
    if not isinstance(data, dict):
        return None, f"{path.name} holds a {type(data).__name__}, not an object: {fix}"
    return data, None


def _crash_reason(lines: collections.deque, summary: LogSummary, returncode: int | None) -> str:
    line = error_line(lines)
    if summary.fail_reasons and not (line or "").startswith("FAIL:"):
        line = f"FAIL: {summary.fail_reasons[-1]}"
    if returncode is not None and returncode < 0:
        try:
            signame = signal.Signals(-returncode).name
        except ValueError:
            signame = f"signal {-returncode}"
        hint = "; likely out of host memory" if returncode == -signal.SIGKILL else ""
        how = f"killed by {signame}{hint}"
    else:
        how = f"exit code {returncode}"
    return f"{line or 'no output'} ({how}; see train.log)"


def _val_shards(data_path: str | None) -> list[Path]:
    if not data_path:
        return []
    return sorted(Path(data_path).glob(VAL_SHARD_GLOB))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _rm(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def _prepare_env(spec: RunSpec, outcome: RunOutcome) -> dict[str, str]:
    """The candidate's env overrides: secrets removed (flagged), data paths made absolute."""
    overrides, dropped = sandbox.sanitize_overrides(spec.env)
    if dropped:
        outcome.flag("env_secret_stripped", "removed from the candidate env: " + ", ".join(sorted(dropped)))
    ignored = sorted(k for k in overrides if k in HARNESS_KEYS and k != "RUN_ID")
    if "RUN_ID" in overrides and overrides["RUN_ID"] != spec.run_id:
        ignored.append("RUN_ID")
    if ignored:
        outcome.notes.append("harness-owned variables ignored from the candidate env: " + ", ".join(ignored))
    for k in HARNESS_KEYS:
        overrides.pop(k, None)
    for k in _PATH_KEYS:
        if overrides.get(k):
            overrides[k] = str(Path(overrides[k]).expanduser().absolute())
    overrides.setdefault("MAX_WALLCLOCK_SECONDS", f"{spec.time_cap_s:g}")
    return overrides


def _forced_env(run_id: str, workdir: Path, result: Path, artifact: Path, eval_only: bool) -> dict[str, str]:
    return {
        "RUN_ID": run_id, "RESULT_JSON": str(result), "ARTIFACT_PATH": str(artifact),
        "EVAL_ONLY": "1" if eval_only else "0", "HOME": str(workdir / "home"), "TMPDIR": str(workdir / "tmp"),
        "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
    }


def _emit(on_progress: Callable[[dict], None] | None, p: dict, elapsed: float) -> None:
    if on_progress is None:
        return
    info: dict[str, Any] = {"step": p["step"], "total": p["total"], "train_time_ms": p["train_time_ms"],
                            "step_avg_ms": p["step_avg_ms"], "elapsed_s": round(elapsed, 3)}
    if p["kind"] == "val":
        info["val_bpb"], info["val_loss"] = p["val_bpb"], p["val_loss"]
    else:
        info["train_loss"] = p["train_loss"]
    try:
        on_progress(info)
    except Exception:  # a broken progress sink must not kill a run
        log.exception("on_progress callback failed")


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def run_candidate(spec: RunSpec, on_progress: Callable[[dict], None] | None = None,
                  cancel: threading.Event | None = None) -> RunOutcome:
    """Train, measure and re-score one candidate. Never raises for a bad run."""
    if not isinstance(spec, RunSpec):
        raise TypeError(f"run_candidate needs a RunSpec, got {type(spec).__name__}")
    outcome = RunOutcome(run_id=spec.run_id, status=RunStatus.RUNNING, run_dir=str(spec.run_dir),
                         started_at=time.time())
    try:
        _run(spec, outcome, on_progress, cancel)
    except Exception as e:  # our own bug or the machine (disk full...): report it, keep the driver alive
        outcome.status = RunStatus.CRASH
        outcome.flag("harness_error", f"{type(e).__name__}: {e}")
        outcome.error = f"harness error {type(e).__name__}: {e} (infrastructure or pgolf bug, not the candidate)"
        try:
            (spec.run_dir / "harness_error.txt").write_text(traceback.format_exc())
        except OSError:
            pass
    if outcome.error:
        outcome.error = " ".join(outcome.error.split())  # one line, whatever the candidate printed
    outcome.finished_at = time.time()
    try:
        (spec.run_dir / "outcome.json").write_text(json.dumps(outcome.to_dict(), indent=1, default=str))
    except OSError:
        pass
    return outcome


def _training_isolation(spec: RunSpec, o: RunOutcome) -> tuple[list[str], list[str]]:
    """The unshare prefix and shim options of the training process; what they contain goes to o.isolation."""
    caps = sandbox.isolation_support(spec.python)
    if spec.confine and "net" in caps and "fs" in caps:
        o.isolation["training"] = ("user, network and mount namespaces (unshare -rnm): loopback only; read-only: "
                                   + ", ".join(spec.confine))
        return ["unshare", "-rnm"], ["--lo-up", *(arg for p in spec.confine for arg in ("--readonly", p))]
    # A user namespace: even a root candidate cannot read the memory or environment of the processes
    # that hold the API key (the driver). It still has the network and can write where its user may:
    # the driver checks its own files and the run store after each run (harness/tripwire.py).
    userns = "user" in caps
    o.isolation["training"] = (
        ("user namespace (unshare -r): cannot read or trace processes outside it" if userns else
         "none: no user namespace here; a root candidate can read other processes' memory")
        + "; has the network and may write outside its run folder (the driver checks its files and the run store)")
    if spec.confine:
        o.isolation["training"] += "; the read-only confinement asked for needs mount and network namespaces"
    return (["unshare", "-r"] if userns else []), []


def _run(spec: RunSpec, o: RunOutcome, on_progress, cancel) -> None:
    if cancel is not None and cancel.is_set():
        o.status, o.error = RunStatus.CANCELLED, "cancelled before start"
        return
    sandbox.protect_own_environ()
    rd = spec.run_dir.absolute()
    rd.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", ARTIFACT_NAME, "final_model.pt", "train.log", "logs", "rescore", "outcome.json",
                  "harness_error.txt", "home", "tmp"):
        _rm(rd / stale)
    (rd / "home").mkdir()
    (rd / "tmp").mkdir()
    code = spec.source.encode("utf-8")
    (rd / "train_gpt.py").write_bytes(code)
    (rd / "patch.diff").write_text(spec.patch, encoding="utf-8")
    overrides = _prepare_env(spec, o)
    (rd / "env.json").write_text(json.dumps(overrides, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    o.code_sha256 = hashlib.sha256(code).hexdigest()

    # ---- train -----------------------------------------------------------------------------
    result_path, artifact = rd / "result.json", rd / ARTIFACT_NAME
    env = sandbox.child_environ(overrides, _forced_env(spec.run_id, rd, result_path, artifact, eval_only=False))
    summary = LogSummary()
    recent: collections.deque[str] = collections.deque(maxlen=400)
    t0 = time.monotonic()

    def on_line(line: str) -> None:
        recent.append(line)
        p = summary.feed(line)
        if p is not None and p["kind"] in ("val", "train"):
            _emit(on_progress, p, time.monotonic() - t0)

    prefix, opts = _training_isolation(spec, o)
    ex = execute(_shim_cmd(spec, ["train_gpt.py"], spec.nproc, prefix, opts), cwd=rd, env=env,
                  log_path=rd / "train.log",
                  kill_after_s=spec.kill_after_s, term_grace_s=spec.term_grace_s,
                  max_log_bytes=spec.max_log_bytes, cancel=cancel, on_line=on_line)
    o.wall_s, o.exit_code = round(ex.wall_s, 3), ex.returncode
    o.val_history = summary.val_history
    o.steps, o.train_time_ms, o.stopped_early = summary.last_step, summary.train_time_ms, summary.stopped_early
    o.peak_memory_mib = summary.peak_memory_mib
    try:
        _judge_training(spec, o, rd, ex, summary, recent)
    finally:
        if not spec.keep_fp_model:
            _rm(rd / "final_model.pt")
        if not spec.keep_scratch:
            _rm(rd / "home")
            _rm(rd / "tmp")
    if o.status is not RunStatus.RUNNING:
        return

    # ---- re-score --------------------------------------------------------------------------
    if not spec.rescore:
        o.flag("not_rescored", "re-score disabled: val_bpb is the candidate's own claim")
        o.val_bpb, o.val_loss = o.claimed_val_bpb, o.claimed_val_loss
        o.status = RunStatus.OK
        return
    _rescore(spec, o, rd, overrides, cancel)


def _judge_training(spec: RunSpec, o: RunOutcome, rd: Path, ex: Exec, summary: LogSummary,
                    recent: collections.deque) -> None:
    """Set o.status to a final status, or leave RUNNING when the run is fit for re-scoring."""
    if ex.spawn_error:
        o.status = RunStatus.CRASH
        o.error = f"could not start {spec.python}: {ex.spawn_error} (check RunSpec.python)"
        return
    if ex.killed == "cancel":
        o.status, o.error = RunStatus.CANCELLED, f"cancelled by the harness after {ex.wall_s:.1f} s"
        return
    if ex.killed == "timeout":
        caps = f"train cap {spec.time_cap_s:g} s"
        if spec.eval_cap_s:
            caps += f" + eval cap {spec.eval_cap_s:g} s"
        o.status = RunStatus.TIMEOUT
        o.error = (f"killed after {ex.wall_s:.1f} s ({caps} + grace {spec.grace_s:g} s + startup {spec.startup_s:g} s):"
                   f" the trainer must stop at MAX_WALLCLOCK_SECONDS and finish its eval in time;"
                   f" last step {summary.last_step}/{summary.total_steps}")
        return
    if ex.killed == "log_limit":
        o.status = RunStatus.CRASH
        o.error = f"log exceeded {spec.max_log_bytes} bytes and the run was killed: print less (see train.log)"
        return
    if ex.returncode == sandbox.SETUP_FAILED and not summary.lines:
        o.status, o.error = RunStatus.CRASH, "sandbox setup failed (the harness died?) (see train.log)"
        o.flag("harness_error")
        return
    if ex.returncode != 0:
        o.status, o.error = RunStatus.CRASH, _crash_reason(recent, summary, ex.returncode)
        return

    result, err = _read_result(rd / "result.json")
    if result is None:
        o.status, o.error = RunStatus.CRASH, err
        return
    o.result = result
    o.claimed_val_bpb, o.claimed_val_loss = _finite(result.get("val_bpb")), _finite(result.get("val_loss"))
    o.pre_quant_val_bpb = _finite(result.get("pre_quant_val_bpb"))
    o.pre_quant_val_loss = _finite(result.get("pre_quant_val_loss"))
    o.steps = _int(result.get("steps")) if _int(result.get("steps")) is not None else o.steps
    o.train_time_ms = _finite(result.get("train_time_ms")) or o.train_time_ms
    o.eval_time_ms = _finite(result.get("eval_time_ms"))
    if isinstance(result.get("stopped_early"), bool):
        o.stopped_early = result["stopped_early"]
    o.peak_memory_mib = _finite(result.get("peak_memory_mib")) or o.peak_memory_mib
    o.device = str(result["device"]) if result.get("device") is not None else None
    o.world_size = _int(result.get("world_size"))
    if not o.val_history and isinstance(result.get("val_history"), list):
        o.val_history = [h for h in result["val_history"] if isinstance(h, dict)]
    if o.claimed_val_bpb is None:
        o.status = RunStatus.CRASH
        o.error = f"result.json has no finite val_bpb (got {result.get('val_bpb')!r}): the run diverged or the" \
                  " trainer skipped its final eval (see train.log)"
        return
    if summary.final_val_bpb is not None and abs(summary.final_val_bpb - o.claimed_val_bpb) > RESCORE_TOLERANCE:
        o.flag("log_result_mismatch", f"log {summary.final_name} val_bpb {summary.final_val_bpb} vs result.json"
                                      f" {o.claimed_val_bpb}")

    # Harness-owned byte count.
    art = rd / ARTIFACT_NAME
    if not art.is_file():
        o.status = RunStatus.CRASH
        o.error = f"artifact missing: the trainer must write the quantized model to ARTIFACT_PATH ({ARTIFACT_NAME})"
        return
    code_file = rd / "train_gpt.py"
    code_now = code_file.read_bytes() if code_file.is_file() else b""
    submitted = spec.source.encode("utf-8")
    if code_now != submitted:
        o.flag("code_modified", "train_gpt.py changed during the run; bytes counted from the submitted source")
        code_file.write_bytes(submitted)
    o.bytes_code = len(submitted)
    o.bytes_model = art.stat().st_size
    o.bytes_total = o.bytes_code + o.bytes_model
    o.artifact_sha256 = _sha256(art)
    mismatches = []
    for key, real in (("bytes_code", o.bytes_code), ("bytes_model", o.bytes_model), ("bytes_total", o.bytes_total)):
        claimed = result.get(key)
        if claimed is not None and _int(claimed) != real:
            mismatches.append(f"result {key}={claimed!r} vs recount {real}")
    if summary.submission_format is not None and summary.submission_bytes != o.bytes_total:
        mismatches.append(f"log 'Total submission size {summary.submission_format}: {summary.submission_bytes}'"
                          f" vs recount {o.bytes_total}")
    if mismatches:
        o.flag("bytes_mismatch", "; ".join(mismatches))

    # Harness-owned time checks (wall_s itself is measured outside).
    if o.train_time_ms is not None and o.train_time_ms > (spec.time_cap_s + spec.time_tolerance_s) * 1000:
        o.flag("over_time", f"reported train_time {o.train_time_ms:.0f} ms > cap {spec.time_cap_s:g} s")
    eval_limit_ms = ((spec.eval_cap_s or 0.0) + spec.time_tolerance_s) * 1000
    if spec.eval_cap_s and o.eval_time_ms is not None and o.eval_time_ms > eval_limit_ms:
        o.flag("over_eval_time", f"reported eval_time {o.eval_time_ms:.0f} ms > cap {spec.eval_cap_s:g} s")

    if o.bytes_total > spec.byte_cap:
        o.status = RunStatus.OVER_BUDGET
        o.val_bpb, o.val_loss = o.claimed_val_bpb, o.claimed_val_loss  # informative only: not re-scored
        o.error = (f"artifact is {o.bytes_total} bytes (code {o.bytes_code} + model {o.bytes_model}), over the"
                   f" {spec.byte_cap}-byte cap by {o.bytes_total - spec.byte_cap}: shrink the model or compress harder")


def _hidden_dirs(data_path: str, keep: list[Path]) -> list[str]:
    """Folders to cover with an empty tmpfs in the re-score: the training data, never what it needs."""
    real = Path(os.path.realpath(data_path))
    candidates = [real]
    if real.parent.name == "datasets":
        candidates.append(real.parent)
    out = []
    for d in candidates:
        if not d.is_dir() or len(d.parts) < 3:
            continue
        if any(k == d or d in k.parents for k in keep):
            continue
        out.append(str(d))
    return out


def _rescore(spec: RunSpec, o: RunOutcome, rd: Path, overrides: dict[str, str], cancel) -> None:
    sd = rd / "rescore"
    _rm(sd)
    (sd / "home").mkdir(parents=True)
    (sd / "tmp").mkdir()
    shutil.copyfile(rd / "train_gpt.py", sd / "train_gpt.py")
    shutil.copyfile(rd / ARTIFACT_NAME, sd / ARTIFACT_NAME)
    data_path = overrides.get("DATA_PATH")
    shards = _val_shards(data_path)
    if not shards:
        o.status = RunStatus.INVALID
        o.error = f"re-score impossible: no {VAL_SHARD_GLOB} under DATA_PATH={data_path!r} (set DATA_PATH in the env)"
        return
    caps = sandbox.isolation_support(spec.python)
    val_dir = sd / "val_data"
    val_dir.mkdir()
    for s in shards:  # hard links are only safe behind the read-only bind mount; else private copies
        if "fs" in caps:
            _link_or_copy(s, val_dir / s.name)
        else:
            shutil.copyfile(s, val_dir / s.name)
            (val_dir / s.name).chmod(0o444)
    r_over = dict(overrides, DATA_PATH=str(val_dir))
    tok = overrides.get("TOKENIZER_PATH")
    if tok and Path(tok).is_file():
        shutil.copyfile(tok, sd / Path(tok).name)
        r_over["TOKENIZER_PATH"] = str(sd / Path(tok).name)

    prefix, opts = [], []
    if "net" in caps and "fs" in caps:
        o.isolation["rescore"] = ("user, network and mount namespaces (unshare -rnm): loopback only, training data"
                                  " hidden, val shards read-only")
    elif "net" in caps:
        o.isolation["rescore"] = "user and network namespaces (unshare -rn): loopback only; training data readable"
    else:
        o.isolation["rescore"] = "none: no network namespace here (unshare -rn fails); the re-score has the network"
    if "net" in caps:
        prefix = ["unshare", "-rnm"] if "fs" in caps else ["unshare", "-rn"]
        opts = ["--lo-up"]
    else:
        o.flag("rescore_network_not_isolated", "unshare -rn does not work here: the re-score ran with the network")
    if "fs" in caps and data_path:
        keep = [sd, Path(os.path.realpath(sd)), Path(spec.python).absolute(), SANDBOX_SCRIPT]
        for d in _hidden_dirs(data_path, keep):
            opts += ["--hide", d]
        opts += ["--readonly", str(val_dir)]
    elif data_path:
        o.flag("rescore_fs_not_isolated", "no mount namespace: the re-score could read the training data by path")

    result_path = sd / "result.json"
    env = sandbox.child_environ(r_over, _forced_env(f"{spec.run_id}_rescore", sd, result_path, sd / ARTIFACT_NAME,
                                                    eval_only=True))
    summary = LogSummary()
    recent: collections.deque[str] = collections.deque(maxlen=400)

    def on_line(line: str) -> None:
        recent.append(line)
        summary.feed(line)

    nproc = spec.rescore_nproc or spec.nproc
    try:
        ex = execute(_shim_cmd(spec, ["train_gpt.py"], nproc, prefix, opts), cwd=sd, env=env,
                      log_path=sd / "train.log", kill_after_s=spec.rescore_kill_after_s,
                      term_grace_s=spec.term_grace_s, max_log_bytes=spec.max_log_bytes, cancel=cancel,
                      on_line=on_line)
    finally:
        _rm(val_dir)
        _rm(sd / ARTIFACT_NAME)
        _rm(sd / "home")
        _rm(sd / "tmp")
    o.rescore_wall_s = round(ex.wall_s, 3)
    fail = None
    if ex.spawn_error:
        fail = f"could not start: {ex.spawn_error}"
    elif ex.killed == "cancel":
        o.status, o.error = RunStatus.CANCELLED, "cancelled by the harness during the re-score"
        return
    elif ex.killed == "timeout":
        fail = f"timed out after {ex.wall_s:.1f} s (cap {spec.rescore_kill_after_s:g} s incl. grace + startup)"
    elif ex.killed == "log_limit":
        fail = f"log exceeded {spec.max_log_bytes} bytes"
    elif ex.returncode == sandbox.SETUP_FAILED and not summary.lines:
        fail = "sandbox setup failed"
    elif ex.returncode != 0:
        fail = _crash_reason(recent, summary, ex.returncode).replace("see train.log", "see rescore/train.log")
    else:
        result, err = _read_result(result_path)
        if result is None:
            fail = err
        else:
            o.rescore_val_bpb = _finite(result.get("val_bpb"))
            o.rescore_val_loss = _finite(result.get("val_loss"))
            if o.rescore_val_bpb is None:
                fail = f"result.json has no finite val_bpb (got {result.get('val_bpb')!r})"
    if fail is not None:
        o.status = RunStatus.INVALID
        o.error = (f"re-score failed: {fail}; the artifact must load and score in a fresh EVAL_ONLY=1 process"
                   f" that sees only the val shards (see rescore/train.log)")
        return
    o.val_bpb, o.val_loss = o.rescore_val_bpb, o.rescore_val_loss
    if o.claimed_val_bpb is not None and abs(o.rescore_val_bpb - o.claimed_val_bpb) > RESCORE_TOLERANCE:
        o.flag("rescore_mismatch", f"claimed val_bpb {o.claimed_val_bpb:.8f}, re-score {o.rescore_val_bpb:.8f}")
    o.status = RunStatus.OK
