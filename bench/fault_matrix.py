"""The fault matrix: what a night can do to a search, done on purpose, and what the search did about it.

Runs the scenarios of tests/faulty_trainers/scenarios.py (real driver processes, real Ray, real
trainers on the local corpus, real SIGKILLs, a real full disk) and prints one row per fault:

    fault | outcome | runs lost | runs duplicated | time to recover

runs lost: finished runs whose record vanished or changed after the fault (and its restart);
runs duplicated: runs recorded more than once, or (candidate, rung, seed) trained twice;
time to recover: how long the fault held things up -- for a trainer fault, from its last log line
to the harness recording the run and freeing the slot (for a run past its cap: from the cap to the
kill); for a dead worker, from the kill to the
run starting again; for a driver kill, from the restart to the first run (or promotion step)
making progress; for the full disk, from the space being freed to the first run starting.
Then a second table: each hostile candidate, and whether its attack was prevented or detected.

    python bench/fault_matrix.py [--only faults,resume,disk,hostile] [--keep DIR]

About 6 minutes on the 2-core CI machine. Never part of CI's pass/fail (the tests are).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from faulty_trainers import plants, scenarios  # noqa: E402

from harness.sandbox import is_secret_name  # noqa: E402
from harness.store import Store  # noqa: E402

Row = tuple[str, str, str, str, str]


def _integrity(store: Store, before: dict[str, tuple] | None = None) -> tuple[int, int]:
    """(runs lost, runs duplicated) over a store, against finished runs seen before a fault."""
    after = {r.id: (r.status, r.finished_at, r.attempt) for r in store.runs()}
    lost = sum(1 for rid, row in (before or {}).items() if after.get(rid) != row)
    dup = store.scalar("SELECT COUNT(*) FROM (SELECT 1 FROM runs GROUP BY candidate_id, rung, seed"
                       " HAVING COUNT(*) > 1)")
    dup += store.scalar("SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE kind='finished' GROUP BY run_id"
                        " HAVING COUNT(*) > 1)")
    return lost, dup


def _short(text: str | None, n: int = 70) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 3] + "..."


def faults(tmp: Path) -> list[Row]:
    fs = scenarios.fault_search(tmp)
    store = Store(fs.db.parent, readonly=True)
    lost, dup = _integrity(store)
    rows = []
    for name in plants.FAULTS:
        cand = next(c for c in store.candidates() if c.proposer == f"planted:{name}")
        (run,) = store.runs(candidate_id=cand.id)
        log = Path(run.run_dir) / "train.log"
        if name == "worker_killed":
            recover = run.started_at - fs.worker_kill["at"] if fs.worker_kill and run.started_at else float("nan")
            outcome = f"worker SIGKILLed mid-run; requeued, attempt {run.attempt}: {run.status}"
        elif run.status == "timeout":  # it held its slot until the harness's own deadline
            recover = run.wall_s - scenarios.TIME_CAP
            outcome = f"{run.status}: {_short(run.error, 60)}"
        else:  # from its last log line to the run recorded and the slot free
            recover = run.finished_at - log.stat().st_mtime if log.exists() else float("nan")
        if run.status not in ("timeout",) and name != "worker_killed":
            flags = f" [{', '.join(run.flags)}]" if run.flags else ""
            outcome = f"{run.status}{flags}: {_short(run.error, 60)}" if run.error else f"{run.status}{flags}"
        rows.append((name, outcome, str(lost), str(dup), f"{recover:.1f} s"))
    summary = store.get_meta("summary") or {}
    rows.append(("(the search)", f"rc {fs.run.rc}, {summary.get('stop_reason')}", str(lost), str(dup),
                 f"{fs.run.seconds:.0f} s total"))
    return rows


def resume(tmp: Path) -> list[Row]:
    kr = scenarios.kill_resume(tmp)
    store = Store(kr.db.parent, readonly=True)
    events = store.events(limit=100_000)
    starts = [e for e in events if e.kind == "driver_started"]
    rows = []
    names = {"dispatch:3": "driver SIGKILL while scheduling", "store.finish_run:2": "driver SIGKILL inside a DB write",
             "promote.record": "driver SIGKILL during promotion"}
    for i, point in enumerate(scenarios.KILL_POINTS):
        restart = kr.invocations[i + 1]
        lost, dup = _integrity(store, kr.finished_before[i + 1])
        nxt = starts[i + 1].id if i + 1 < len(starts) else 0
        progress = next((e.ts for e in events if e.id > nxt and e.kind in
                         ("started", "finished", "adopted", "promotion_phase", "judged")), float("nan"))
        what = {0: "queued runs resubmitted, nothing reaped",
                1: f"{len(store.events(kind='adopted'))} finished run adopted from its folder, "
                   f"{len(store.events(kind='reaped'))} in-flight run(s) requeued",
                2: "record folder found and kept, judged once"}[i]
        rows.append((names[point], f"driver rc {kr.invocations[i].rc}; the same command resumed: {what}",
                     str(lost), str(dup), f"{progress - restart.started:.1f} s"))
    down = scenarios.llm_down(tmp / "llm_down")
    store = Store(down.db.parent, readonly=True)
    calls = store.query("SELECT outcome, latency_s FROM llm_calls")
    waited = sum(c.latency_s or 0 for c in calls)
    summary = store.get_meta("summary") or {}
    lost, dup = _integrity(store, {})
    rows.append(("LLM endpoint down all night",
                 f"rc {down.run.rc}; {len(calls)} calls, all {','.join(sorted({c.outcome for c in calls}))}; "
                 f"{summary.get('candidates')} optuna candidates trained",
                 str(lost), str(dup), f"{waited:.1f} s waited in total"))
    return rows


def disk(tmp: Path) -> list[Row]:
    r = scenarios.disk_full(tmp)
    if r is None:
        return [("disk full under runs/", "skipped: no private mount namespace here", "-", "-", "-")]
    err = next((ln for ln in r["first"]["stderr"].splitlines() if ln.startswith("error:")), "(no error line)")
    before, after = r["after_first"], r["after_second"]
    lost = sum(1 for k, v in before.items() if after.get(k) != v)
    dup = sum(1 for *_, n in r["triples"] if n > 1)
    stop = r["first"]["ended_at"] - r["filled_at"] if "filled_at" in r else float("nan")
    outcome = f"stopped in {stop:.1f} s: {_short(err, 75)}; after freeing space: rc {r['second']['rc']}"
    return [("disk full under runs/", outcome, str(lost), str(dup),
             f"{r['second']['ended_at'] - r['freed_at']:.0f} s to finish")]


def hostile(tmp: Path) -> list[tuple[str, str]]:
    h = scenarios.hostile(tmp)
    store = Store(h.db.parent, readonly=True)
    out = []
    for c in store.candidates(kind="search"):
        name = c.proposer.split(":", 1)[1]
        runs = store.runs(candidate_id=c.id)
        if c.state == "rejected":
            out.append((name, f"prevented before training: {_short(c.reason, 90)}"))
            continue
        r = runs[-1]
        rd = Path(r.run_dir)
        files = {p.name: json.loads(p.read_text()) for p in [*rd.glob("hostile_*.json"), *rd.glob("rescore/hostile_*")]}
        if name == "tamper":
            out.append((name, f"detected and undone: run {r.status} [{', '.join(r.flags)}], candidate "
                              f"{store.candidate(r.candidate_id).state}; files and store rows put back"))
        elif name == "time":
            asked = files.get("hostile_time.json", {}).get("MAX_WALLCLOCK_SECONDS")
            out.append((name, f"prevented: {r.status} after {r.wall_s:.0f} s (harness clock), asked for "
                              f"MAX_WALLCLOCK_SECONDS={asked}"))
        elif name == "net":
            ev = files.get("hostile_net_eval.json", {}).get("host_listener", "?")
            tr = files.get("hostile_net.json", {}).get("host_listener", "?")
            out.append((name, f"re-score: {_short(ev, 40)} (prevented); training: {tr} (allowed, said in audit)"))
        elif name == "proc":
            tr = files.get("hostile_proc.json", {})
            mem = tr.get("memory_readable", {}).get(str(tr.get("driver")))
            out.append((name, f"{len(tr.get('secrets', []))} secrets in {len(tr.get('tree', []))} processes' "
                              f"environ/cmdline; driver memory readable: {mem}"))
        elif name == "files":
            fr = files.get("hostile_files.json", {})
            leaked = [f for f in fr.get("secrets", []) if f[1] in (scenarios.SECRET, scenarios.OTHER_SECRET)]
            out.append((name, f"read {fr.get('files_read')} harness-owned files (allowed); secrets found: "
                              f"{len(leaked)}"))
        elif name.startswith("env"):
            env = files.get("hostile_env.json", json.loads((rd / "env.json").read_text()))
            secret = [k for k in env if is_secret_name(k)]
            out.append((name, f"prevented: {len(secret)} secret-named variables in its environment"
                              f"{' [' + ', '.join(r.flags) + ']' if r.flags else ''}"))
    return out


def table(rows: list[tuple], head: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="faults,resume,disk,hostile")
    ap.add_argument("--keep", help="keep the scenario folders here instead of a temporary folder")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pgolf-faults-"))
    parts = args.only.split(",")
    rows: list[Row] = []
    t0 = time.time()
    try:
        for part, fn in (("faults", faults), ("resume", resume), ("disk", disk)):
            if part in parts:
                (base / part).mkdir(parents=True, exist_ok=True)
                rows += fn(base / part)
        print(table(rows, ("fault", "outcome", "runs lost", "runs duplicated", "time to recover")))
        if "hostile" in parts:
            (base / "hostile").mkdir(parents=True, exist_ok=True)
            print()
            print(table(hostile(base / "hostile"), ("hostile candidate", "what happened")))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
