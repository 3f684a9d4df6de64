"""The disk under runs/ fills up mid-search, then space is freed and the same command is run again.

    python tests/faulty_trainers/diskfull.py REPORT_JSON WORKDIR -- SEARCH_ARGV...

Runs itself in a private mount namespace (`unshare -m` as root, `unshare -rm` otherwise: an
unprivileged user may mount a tmpfs inside its own user namespace), mounts a small tmpfs at
WORKDIR/store, and there:

1. starts SEARCH_ARGV (a `pgolf search` whose --store is under WORKDIR/store);
2. once a run has finished and another is in flight, fills the tmpfs with a ballast file;
3. waits for the driver to stop, and records its exit status, stdout and stderr;
4. deletes the ballast ("frees space") and runs SEARCH_ARGV again to the end.

REPORT_JSON (outside the tmpfs) gets both invocations' results and the finished runs before and
after, for the test to check. Exits 3 when no mount namespace can be had here (the test skips).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

INNER = "PGOLF_DISKFULL_INNER"


def _finished(db: Path) -> dict[str, list]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute("SELECT id, status, finished_at, attempt, error FROM runs"
                                " WHERE status NOT IN ('queued', 'running')").fetchall()
    except sqlite3.Error:
        return {}
    return {r[0]: list(r[1:]) for r in rows}


def _in_flight(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')").fetchone()[0]
    except sqlite3.Error:
        return 0


def _fill(path: Path) -> int:
    """Write zeros until the filesystem refuses; returns the bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        block = b"\0" * (1 << 20)
        while True:
            try:
                n += f.write(block)
            except OSError:
                break
        for size in (1 << 12, 1):  # the last pages too
            while True:
                try:
                    n += f.write(b"\0" * size)
                except OSError:
                    break
    return n


def inner(report: Path, work: Path, argv: list[str], db: Path) -> int:
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(store)], check=True)
    out: dict = {"argv": argv}
    env = dict(os.environ)
    env.pop(INNER, None)
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 400
    ballast = store / "ballast.bin"
    while time.time() < deadline and first.poll() is None:
        if _finished(db) and _in_flight(db):
            out["before_fill"] = _finished(db)
            out["ballast_bytes"] = _fill(ballast)
            out["filled_at"] = time.time()
            break
        time.sleep(0.3)
    try:
        stdout, stderr = first.communicate(timeout=max(10, deadline - time.time()))
    except subprocess.TimeoutExpired:
        first.kill()
        stdout, stderr = first.communicate()
    out["first"] = {"rc": first.returncode, "stdout": stdout, "stderr": stderr, "ended_at": time.time()}
    out["after_first"] = _finished(db)
    ballast.unlink(missing_ok=True)
    out["freed_at"] = time.time()
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=500)
    out["second"] = {"rc": second.returncode, "stdout": second.stdout, "stderr": second.stderr,
                     "ended_at": time.time()}
    out["after_second"] = _finished(db)
    out["in_flight_after"] = _in_flight(db)
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            out["triples"] = conn.execute("SELECT candidate_id, rung, seed, COUNT(*) FROM runs GROUP BY 1, 2, 3"
                                          ).fetchall()
            out["requeued"] = conn.execute("SELECT run_id, data FROM events WHERE kind='requeued'").fetchall()
    except sqlite3.Error as e:
        out["db_error"] = str(e)
    report.write_text(json.dumps(out))
    return 0


def main() -> int:
    report, work = Path(sys.argv[1]).absolute(), Path(sys.argv[2]).absolute()
    sep = sys.argv.index("--")
    argv = sys.argv[sep + 1:]
    db = Path(os.environ["PGOLF_DISKFULL_DB"])
    if os.environ.get(INNER):
        return inner(report, work, argv, db)
    unshare = shutil.which("unshare")
    if unshare is None:
        return 3
    flags = "-m" if os.geteuid() == 0 else "-rm"
    probe = subprocess.run([unshare, flags, "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {work}"],
                           capture_output=True)
    if probe.returncode != 0:
        return 3
    env = dict(os.environ, **{INNER: "1"})
    return subprocess.run([unshare, flags, "--propagation", "private", sys.executable, *sys.argv], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
