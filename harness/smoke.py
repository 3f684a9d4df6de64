"""The CPU smoke stage of the pre-flight: does a patched trainer train, keep a finite loss, export and
score at a tiny shape on CPU?

The pipeline is apply -> compile -> static legality audit -> size estimate (harness/preflight.py, all
static) -> CPU smoke (here). The smoke runs the candidate for real: a few steps of the cpu-smoke
track's tiny model on that track's local corpus, through the same sandboxed runner that trains it on
the ladder (`harness.runner.run_candidate`, re-score included), in a scratch folder removed afterwards,
under one hard wall-clock limit. A shape error in forward, a NaN, an export or reload crash then costs
seconds of CPU before the candidate exists instead of a GPU slot after it, and its one-line reason (the
exception, the trainer lines that raised it, what to fix) goes back to the agent as a repair turn.

The smoke is the first time an LLM's code runs, and it runs on the driver's machine, so it is confined
more than a training run: no network, and pgolf's checkout and the interpreter's site-packages mounted
read-only (`RunSpec.confine`; user, network and mount namespaces, where the OS gives them).

Only LLM proposals are smoked (agents/llm): catalog techniques are smoke-tested in CI
(tests/test_techniques*), and Optuna samples knobs whose shape constraints the search space enforces by
construction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from harness.config import Track, load_track
from harness.logparse import error_line
from harness.proposals import Validation
from harness.runner import RunOutcome, RunSpec, RunStatus, run_candidate

log = logging.getLogger(__name__)

SMOKE_TRACK = "cpu-smoke"
SMOKE_SEED = 1337
# The candidate keeps these even where the tiny configuration sets them: they change the shapes its code
# must handle, at no cost. Every other key the tiny configuration sets (size, steps, batch, device, data)
# stays tiny, and keys it does not set (the candidate's own knobs) pass through.
SHAPE_KEYS = ("NUM_HEADS", "NUM_KV_HEADS", "MLP_MULT")
_TINY_HEAD_DIM = 16  # the cpu-smoke track's MODEL_DIM 64 / NUM_HEADS 4
_MAX_REASON = 700
_FRAME_RE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<fn>\S+)')


def protected_folders() -> tuple[Path, ...]:
    """What a smoke's code must not change: pgolf's checkout (its code and, by default, its run store, records
    and configs) and the interpreter's site-packages (their start-up hooks run in every process of the search).
    The tripwire would notice a change, but could only blame the training runs in flight."""
    paths = sysconfig.get_paths()
    return tuple(dict.fromkeys(Path(p) for p in (Path(__file__).resolve().parents[1], paths["purelib"],
                                                 paths["platlib"])))


class CpuSmoke:
    """`smoke(source, patch, env) -> Validation` (stage "smoke" on failure). Thread-safe; at most
    `concurrency` smoke runs at once, the others wait their turn in the caller's thread."""

    def __init__(
        self,
        *,
        steps: int = 4,
        timeout_s: float = 120.0,
        concurrency: int = 1,
        track: Track | str = SMOKE_TRACK,
        data: tuple[Path, Path] | None = None,
        scratch: Path | None = None,
        python: str = sys.executable,
        protect: tuple[Path, ...] | None = None,
    ) -> None:
        """`data`: (dataset folder, tokenizer) of the track's vocabulary; None builds or finds the track's
        own corpus on first use. `scratch`: where run folders are made (the system's temp folder if None).
        `protect`: folders the smoke's code may read but not change (None: `protected_folders()`)."""
        if steps < 1 or timeout_s <= 0 or concurrency < 1:
            raise ValueError(f"CpuSmoke: steps {steps}, timeout_s {timeout_s} and concurrency {concurrency}"
                             " must be positive")
        self.track = load_track(track) if isinstance(track, str) else track
        self.steps = steps
        self.timeout_s = timeout_s
        self.python = python
        self.scratch = scratch
        self.protect = protected_folders() if protect is None else tuple(protect)
        self._data = data
        self._data_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stats_lock = threading.Lock()
        self.seconds: list[float] = []  # wall seconds of every smoke run so far, for benchmarks and the log

    def __repr__(self) -> str:
        return f"CpuSmoke(track={self.track.name!r}, steps={self.steps}, timeout_s={self.timeout_s:g})"

    def __call__(self, source: str, patch: str = "", env: Mapping[str, str] | None = None) -> Validation:
        with self._slots:
            start = time.monotonic()
            folder = Path(tempfile.mkdtemp(prefix="pgolf-smoke-", dir=self.scratch))
            try:
                run_env = self.env(env or {})
                outcome, log_path, losses = self._run(source, patch, run_env, folder)
                reason = self._verdict(outcome, log_path, losses, self.shape(run_env))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
                with self._stats_lock:
                    self.seconds.append(time.monotonic() - start)
        if reason:
            return Validation(False, "smoke", reason, source)
        return Validation(True, "ok", "", source)

    # The run ------------------------------------------------------------------------------------

    @staticmethod
    def shape(env: Mapping[str, str]) -> str:
        return f"{env.get('NUM_LAYERS', '?')}-layer, {env.get('MODEL_DIM', '?')}-wide model"

    def env(self, candidate_env: Mapping[str, str], run_id: str = "smoke") -> dict[str, str]:
        """The smoke run's trainer env: the track's smoke rung (built by `Track.run_env`, as the driver builds
        every run's) at `steps` steps, with the candidate's shape-relevant overrides and its own knobs."""
        rung = self.track.rungs[0]
        rung = dataclasses.replace(rung, env={**rung.env, "ITERATIONS": str(self.steps)})
        pinned = (set(self.track.env) | set(rung.env)) - set(SHAPE_KEYS)
        keep = {k: v for k, v in candidate_env.items() if k not in pinned}
        if "NUM_HEADS" in keep and keep["NUM_HEADS"].isdigit():
            keep["MODEL_DIM"] = str(int(keep["NUM_HEADS"]) * _TINY_HEAD_DIM)  # its heads, at the tiny head size
        dataset, tokenizer = self.data()
        env = self.track.run_env(rung, keep, dataset=dataset, tokenizer=tokenizer, seed=SMOKE_SEED, run_id=run_id)
        env["OMP_NUM_THREADS"] = "1"  # one core per smoke: the driver and Ray share the machine
        return env

    def data(self) -> tuple[Path, Path]:
        with self._data_lock:
            if self._data is None:
                from harness.track_data import ensure_data  # the driver's own data set-up

                self._data = ensure_data(self.track, announce=log.info)
            return self._data

    def _run(self, source: str, patch: str, env: dict[str, str], folder: Path) -> tuple[RunOutcome, Path, list[float]]:
        run_id = "smoke-" + hashlib.sha256((source + repr(sorted(env.items()))).encode()).hexdigest()[:12]
        env = {**env, "RUN_ID": run_id}
        spec = RunSpec(
            run_id=run_id, run_dir=folder / "run", source=source, patch=patch, env=env,
            time_cap_s=self.timeout_s, grace_s=0.0, startup_s=0.0, python=self.python,
            byte_cap=2**62,  # the size stage owns the cap: a tiny model proves nothing about the real one
            confine=self._confine(folder),  # untrusted code on the driver's machine: offline, our files read-only
        )  # fmt: skip
        losses: list[float] = []
        cancel = threading.Event()
        # One limit for training and re-score together: the runner caps each process, the timer the sum.
        timer = threading.Timer(self.timeout_s, cancel.set)
        timer.daemon = True
        timer.start()
        try:
            outcome = run_candidate(spec, on_progress=lambda p: losses.append(p.get("train_loss", 0.0)), cancel=cancel)
        finally:
            timer.cancel()
        if cancel.is_set() and outcome.status is RunStatus.CANCELLED:
            outcome.status = RunStatus.TIMEOUT
        rescored = outcome.rescore_wall_s is not None or (outcome.error or "").startswith("re-score")
        return outcome, spec.run_dir / ("rescore" if rescored else "") / "train.log", losses

    def _confine(self, folder: Path) -> tuple[str, ...]:
        """The protected folders that exist, less any that holds the smoke's own folder (it must write there)."""
        here = folder.resolve()
        return tuple(str(p) for p in (Path(p).resolve() for p in self.protect)
                     if p.is_dir() and not here.is_relative_to(p))

    # The verdict --------------------------------------------------------------------------------

    def _verdict(self, o: RunOutcome, log_path: Path, losses: list[float], shape: str) -> str:
        """"" when the smoke passed, else one line: what broke, where, and what to fix."""
        what = f"the CPU smoke run ({self.steps} steps of a {shape} on CPU)"
        bad = [x for x in losses if not math.isfinite(x)]
        if o.status in (RunStatus.OK, RunStatus.OVER_BUDGET) and not bad:
            return ""
        if o.status is RunStatus.TIMEOUT:
            reason = (f"{what} did not finish within {self.timeout_s:g} s: the trainer must stop after ITERATIONS"
                      " steps on CPU; look for a loop that never ends, a wait on a GPU or a huge allocation")
        elif bad:
            reason = (f"{what} trained with a non-finite loss: keep the loss finite (initialisation, learning"
                      " rates, divisions)")
        else:
            reason = f"{what} failed: {describe_failure(log_path, o.error or '', shape)}"
        reason = " ".join(reason.split())
        return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."


def describe_failure(log_path: Path, runner_error: str, shape: str = "tiny model") -> str:
    """The failure in the trainer's own terms: the exception and the train_gpt.py lines that raised it
    (the two innermost frames in the candidate's file), then what to fix. Falls back on the runner's
    one line, without its pointers to log files the agent cannot read."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call")), default=None)
    runner_error = re.sub(r"[;,]?\s*\(?see (rescore/)?train\.log\)?", "", runner_error)
    if start is None:
        fail = error_line(lines) if lines else None
        if fail and fail.startswith("FAIL:"):
            return f"{fail}; fix what the trainer reports so a tiny model trains, exports and re-scores"
        return runner_error or "no output; the trainer must train, export and print its final score"
    block = lines[start:]
    frames = []  # the candidate's own frames, outermost first: the last two say what called what
    for i, line in enumerate(block):
        m = _FRAME_RE.match(line)
        if m and Path(m["file"]).name == "train_gpt.py":
            code = block[i + 1].strip() if i + 1 < len(block) and not _FRAME_RE.match(block[i + 1]) else ""
            frames.append(f"line {m['line']} in {m['fn']}" + (f" `{code}`" if code else ""))
    frame = f" at train_gpt.py {' -> '.join(frames[-2:])}" if frames else ""
    exc = error_line(block) or runner_error
    stage = "re-scoring the exported artifact (EVAL_ONLY=1)" if "rescore" in log_path.parts else "training"
    return (f"{exc}{frame}, while {stage}; fix that code so the model trains, exports and re-scores at any"
            f" size (here a {shape} on CPU)")
