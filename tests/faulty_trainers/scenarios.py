"""The fault-matrix and hostile scenarios: real searches (real Ray, real trainers, real kills) that
the tests check and bench/fault_matrix.py tabulates.

Every scenario runs the driver as a separate process, on a private copy of the harness (so a
candidate that attacks the harness attacks the copy, and edits to the working tree during a test
do not reach the search), against the locally built corpus in <repo>/data.

  fault_search   one search whose planted candidates misbehave in every way a trainer can, while
                 the test kills the Ray worker of one of them mid-run
  kill_resume    the driver SIGKILLed while scheduling, inside a database write and after writing
                 the record folder, each time restarted with the same command; the LLM endpoint is
                 down the whole time
  disk_full      the disk under the store fills up mid-search; space is freed; the same command
  hostile        a search whose planted candidates attack the harness (see plants.py)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from faulty_trainers import plants

ROOT = plants.ROOT
HERE = Path(__file__).resolve().parent
DATA_ROOT = ROOT / "data"
PACKAGES = ("harness", "agents", "search_space", "trainer")
SECRET = "sk-pgolf-hostile-0123456789abcdef"  # the LLM key the driver holds; it must reach no candidate
OTHER_SECRET = "hf_pgolfhostile0123456789abcdef"  # any other secret in the driver's environment


# --------------------------------------------------------------------------------------------
# set-up helpers
# --------------------------------------------------------------------------------------------

def harness_copy(dest: Path) -> Path:
    """A runnable copy of the harness (code only; the data stays where it is)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "datasets", "tokenizers", "cache")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    (dest / "data").mkdir()
    for f in (ROOT / "data").glob("*.py"):
        shutil.copy2(f, dest / "data" / f.name)
    return dest


TIME_CAP = 8  # the fault tracks' training cap, s


def track_toml(name: str, *, iterations: int = 3, batch_tokens: int = 1024, time_cap: float = TIME_CAP,
               eval_cap: float = 15, startup: float = 20, root: Path = DATA_ROOT,
               rungs: tuple[tuple[str, int], ...] = (("smoke", 0),)) -> str:
    """A tiny model trained on the CPU, short caps (the harness kills a run after time_cap + eval_cap + grace +
    startup), the local corpus under `root`; `rungs`: (name, GPUs it holds), one CPU rung by default."""
    ladder = "".join(f"""
[[rungs]]
name = "{rung}"
gpus = {gpus}
time_cap_s = {time_cap}
env = {{ ITERATIONS = "{iterations}" }}
""" for rung, gpus in rungs)
    return f"""
name = "{name}"
description = "tiny test track: {len(rungs)} rung(s), short caps"
byte_cap = 400_000
time_cap_s = {time_cap}
eval_cap_s = {eval_cap}
startup_s = {startup}
records_folder = "track_cpu_smoke"
hardware = "CPU"

[data]
dataset = "local_sp1024"
tokenizer = "local_1024_bpe.model"
source = "build"
root = "{root}"

[env]
VOCAB_SIZE = "1024"
NUM_LAYERS = "2"
MODEL_DIM = "64"
NUM_HEADS = "4"
NUM_KV_HEADS = "2"
TRAIN_SEQ_LEN = "128"
TRAIN_BATCH_TOKENS = "{batch_tokens}"
VAL_BATCH_SIZE = "8192"
VAL_TOKENS = "8192"
WARMUP_STEPS = "0"
WARMDOWN_ITERS = "2"
VAL_LOSS_EVERY = "0"
TRAIN_LOG_EVERY = "1"
MAX_WALLCLOCK_SECONDS = "0"
DEVICE = "cpu"
COMPILE = "0"
OMP_NUM_THREADS = "1"
{ladder}"""


def search_toml(tmp: Path, name: str, body: str, *, store: Path | None = None, baseline: Path | None = None) -> str:
    """A search on tmp/track.toml with its store and records under tmp and a 2 s kill grace; `body`: the TOML
    that makes the scenario (budget, proposers, promotion, knobs)."""
    head = [f'name = "{name}"', f'track = "{tmp / "track.toml"}"']
    if baseline is not None:
        head.append(f'baseline = "{baseline}"')
    head += [f'store = "{store or tmp / "runs"}"', f'records = "{tmp / "records"}"', "grace_s = 2.0"]
    return "\n".join(head) + "\n" + body.lstrip("\n")


def unreachable_llm(port: int) -> str:
    """Half the proposals to an LLM whose endpoint is a closed 127.0.0.1 port, given up on after one retry."""
    return f"""[proposers]
optuna = 0.5
catalog = 0.0
llm = 0.5
[llm]
base_url = "http://127.0.0.1:{port}/v1"
max_retries = 1
timeout_s = 5
"""


def kill_after(time_cap: float = TIME_CAP, eval_cap: float = 15, startup: float = 20, grace: float = 2) -> float:
    return time_cap + eval_cap + startup + grace


def driver_env(harness: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGOLF_FAULT_KILL_AT", "PYTHONPATH")}
    env.update(PYTHONPATH=str(harness), PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0", COLUMNS="200")
    env.update(extra)
    return env


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def db_rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def finished(db: Path) -> dict[str, tuple]:
    rows = db_rows(db, "SELECT id, status, finished_at, attempt FROM runs WHERE status NOT IN ('queued','running')")
    return {r[0]: tuple(r[1:]) for r in rows}


@dataclass
class Invocation:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    started: float
    ended: float
    killed_at: str = ""  # the PGOLF_FAULT_KILL_AT point it died at

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def invoke(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> Invocation:
    t0 = time.time()
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Invocation(argv, p.returncode, p.stdout, p.stderr, t0, time.time(), env.get("PGOLF_FAULT_KILL_AT", ""))


# --------------------------------------------------------------------------------------------
# fault_search
# --------------------------------------------------------------------------------------------

@dataclass
class FaultSearch:
    root: Path
    db: Path
    run: Invocation
    worker_kill: dict = field(default_factory=dict)  # pid, time, run dir of the Ray worker the test killed


def _shims() -> list[tuple[int, int, Path]]:
    """(shim pid, its --parent-pid, cwd) of every run supervisor on this machine."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            if not any(a.endswith("harness/sandbox.py") for a in argv) or "--parent-pid" not in argv:
                continue
            cwd = Path(os.readlink(f"/proc/{name}/cwd"))
            out.append((int(name), int(argv[argv.index("--parent-pid") + 1]), cwd))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _kill_worker_of_victim(store: Path, done: threading.Event, record: dict) -> None:
    """Wait for the planted victim to reach step 2, then SIGKILL the Ray worker process running it."""
    while not done.is_set():
        for shim, worker, cwd in _shims():
            if str(cwd).startswith(str(store)) and (cwd / "victim_at_step2").exists():
                try:
                    os.kill(worker, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                record.update(worker_pid=worker, shim_pid=shim, run_dir=str(cwd), at=time.time())
                return
        time.sleep(0.2)


def fault_search(tmp: Path, cpus: int = 3) -> FaultSearch:
    harness = harness_copy(tmp / "h")
    (tmp / "track.toml").write_text(track_toml("fault-smoke"))
    (tmp / "search.toml").write_text(search_toml(tmp, "faults", f"""
[budget]
max_candidates = {len(plants.FAULTS)}
[proposers]
optuna = 1.0
catalog = 0.0
[promotion]
enabled = false
"""))
    (tmp / "plants.json").write_text(json.dumps([{"name": n, "patch": plants.fault_patch(n)} for n in plants.FAULTS]))
    store = tmp / "runs" / "faults"
    done, kill = threading.Event(), {}
    killer = threading.Thread(target=_kill_worker_of_victim, args=(store, done, kill), daemon=True)
    killer.start()
    try:
        run = invoke([sys.executable, str(HERE / "planted_search.py"), str(tmp / "search.toml"),
                      str(tmp / "plants.json"), "--cpus", str(cpus)], cwd=harness, env=driver_env(harness))
    finally:
        done.set()
    return FaultSearch(tmp, store / "pgolf.db", run, kill)


# --------------------------------------------------------------------------------------------
# kill_resume
# --------------------------------------------------------------------------------------------

BAD_DEFAULTS = {'E("TIED_EMBED_LR", 0.05)': 'E("TIED_EMBED_LR", 0.0)', 'E("MATRIX_LR", 0.04)': 'E("MATRIX_LR", 0.0)'}
KILL_POINTS = ("dispatch:3", "store.finish_run:2", "promote.record")


@dataclass
class KillResume:
    root: Path
    db: Path
    records: Path
    invocations: list[Invocation]
    finished_before: list[dict]  # finished runs (id -> status, finished_at, attempt) before each restart
    leftovers: list[int] = field(default_factory=list)  # run processes still alive 20 s after each kill


def kill_resume(tmp: Path) -> KillResume:
    """A baseline whose learning rates are zero, so any tuned candidate beats it and is promoted; the
    driver dies at each KILL_POINTS in turn and the same command is run again; the LLM is unreachable."""
    harness = harness_copy(tmp / "h")
    baseline = plants.BASELINE
    for a, b in BAD_DEFAULTS.items():
        assert a in baseline, f"trainer default {a} moved; update scenarios.BAD_DEFAULTS"
        baseline = baseline.replace(a, b)
    (tmp / "baseline.py").write_text(baseline)
    (tmp / "track.toml").write_text(track_toml("fault-promote", iterations=8, batch_tokens=2048))
    port = closed_port()
    (tmp / "search.toml").write_text(search_toml(tmp, "resume", """
[budget]
max_candidates = 2
""" + unreachable_llm(port) + """[promotion]
seeds = 2
ablate = false
[knobs]
include = ["TIED_EMBED_LR", "MATRIX_LR"]
[knobs.ranges]
TIED_EMBED_LR = { low = 0.04, high = 0.06 }
MATRIX_LR = { low = 0.03, high = 0.05 }
""", baseline=tmp / "baseline.py"))
    db = tmp / "runs" / "resume" / "pgolf.db"
    argv = [sys.executable, "-m", "harness.cli", "search", str(tmp / "search.toml")]
    invocations, before, leftovers = [], [], []
    store = db.parent
    for point in (*KILL_POINTS, ""):
        before.append(finished(db))
        extra = {"OPENAI_API_KEY": SECRET}
        if point:
            extra["PGOLF_FAULT_KILL_AT"] = point
        invocations.append(invoke(argv, cwd=harness, env=driver_env(harness, **extra)))
        if point:  # the driver is gone: its runs must not outlive it
            end = time.time() + 20
            while time.time() < end and any(str(cwd).startswith(str(store)) for _, _, cwd in _shims()):
                time.sleep(0.5)
            leftovers.append(sum(str(cwd).startswith(str(store)) for _, _, cwd in _shims()))
    return KillResume(tmp, db, tmp / "records", invocations, before, leftovers)


# --------------------------------------------------------------------------------------------
# llm_down
# --------------------------------------------------------------------------------------------

@dataclass
class LLMDown:
    db: Path
    run: Invocation
    llm_port: int


def llm_down(tmp: Path) -> LLMDown:
    """`pgolf search` with half the proposals given to an LLM whose endpoint is a closed port, the whole time.

    Its own scenario: kill_resume's driver dies at its first dispatch, before a background conversation
    answers, and its restarts have no candidate left to ask for, so it shows nothing of the LLM."""
    harness = harness_copy(tmp / "h")
    (tmp / "track.toml").write_text(track_toml("fault-llm", iterations=4))
    port = closed_port()
    (tmp / "search.toml").write_text(search_toml(tmp, "llm-down", """
[budget]
max_candidates = 3
""" + unreachable_llm(port) + """[promotion]
enabled = false
[knobs]
include = ["MATRIX_LR"]
"""))
    run = invoke([sys.executable, "-m", "harness.cli", "search", str(tmp / "search.toml")], cwd=harness,
                 env=driver_env(harness, OPENAI_API_KEY=SECRET))
    return LLMDown(tmp / "runs" / "llm-down" / "pgolf.db", run, port)


# --------------------------------------------------------------------------------------------
# disk_full
# --------------------------------------------------------------------------------------------

def disk_full(tmp: Path) -> dict | None:
    """None when this machine gives no private mount namespace (the caller skips)."""
    harness = harness_copy(tmp / "h")
    (tmp / "track.toml").write_text(track_toml("fault-disk"))
    (tmp / "search.toml").write_text(search_toml(tmp, "disk", """
[budget]
max_candidates = 2
[proposers]
optuna = 1.0
catalog = 0.0
[promotion]
enabled = false
[knobs]
include = ["MATRIX_LR"]
""", store=tmp / "store" / "runs"))
    db = tmp / "store" / "runs" / "disk" / "pgolf.db"
    env = driver_env(harness, PGOLF_DISKFULL_DB=str(db))
    argv = [sys.executable, str(HERE / "diskfull.py"), str(tmp / "report.json"), str(tmp), "--",
            sys.executable, "-m", "harness.cli", "search", str(tmp / "search.toml")]
    p = subprocess.run(argv, cwd=harness, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode == 3:
        return None
    if p.returncode != 0 or not (tmp / "report.json").exists():
        raise AssertionError(f"disk-full helper failed ({p.returncode}): {p.stdout[-2000:]} {p.stderr[-3000:]}")
    return json.loads((tmp / "report.json").read_text())


# --------------------------------------------------------------------------------------------
# hostile
# --------------------------------------------------------------------------------------------

@dataclass
class Hostile:
    root: Path
    harness: Path
    db: Path
    config: Path
    run: Invocation
    net_hits: list = field(default_factory=list)  # what reached the test's listener on 127.0.0.1
    harness_before: dict = field(default_factory=dict)  # path -> bytes of the copy before the search
    config_before: bytes = b""


class Listener:
    """A TCP listener on the host's 127.0.0.1: what a candidate could reach if it had the network."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.hits.append(conn.recv(64))
                except OSError:
                    self.hits.append(b"")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def hostile(tmp: Path) -> Hostile:
    harness = harness_copy(tmp / "h")
    before = {p: p.read_bytes() for p in (harness / "harness").glob("*.py")}
    (tmp / "track.toml").write_text(track_toml("fault-hostile"))
    config = tmp / "search.toml"
    config.write_text(search_toml(tmp, "hostile", f"""
[budget]
max_candidates = 7
[proposers]
optuna = 0.5
catalog = 0.0
llm = 0.5
[llm]
base_url = "http://127.0.0.1:{closed_port()}/v1"
api_key_env = "OPENAI_API_KEY"
[promotion]
enabled = false
"""))
    listener = Listener()
    try:
        attacks = plants.attacks(listener.port)
        planted = [{"name": n, "patch": make_patch(src)} for n, src in attacks.items()]
        planted += [{"name": n, "patch": make_patch(src)} for n, src in plants.PLAIN_ATTACKS.items()]
        planted += [{"name": n, "patch": d} for n, d in plants.ESCAPING_DIFFS.items()]
        # a proposal whose env names secrets (an LLM can write anything there): stripped before the run
        env = {"OPENAI_API_KEY": "sk-from-a-proposal-000000", "AWS_SECRET_ACCESS_KEY": "from-a-proposal-000000"}
        planted += [{"name": "env_secret", "env": env}]
        (tmp / "plants.json").write_text(json.dumps(planted))
        env = driver_env(harness, OPENAI_API_KEY=SECRET, HF_TOKEN=OTHER_SECRET)
        run = invoke([sys.executable, str(HERE / "planted_search.py"), str(config), str(tmp / "plants.json"),
                      "--cpus", "3"], cwd=harness, env=env)
    finally:
        listener.close()
    return Hostile(tmp, harness, tmp / "runs" / "hostile" / "pgolf.db", config, run, listener.hits, before)


def make_patch(source: str) -> str:
    from agents.patches import make_diff

    return make_diff(plants.BASELINE, source)
