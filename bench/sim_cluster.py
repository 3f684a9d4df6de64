"""How busy does RayExecutor keep a large (logical) GPU cluster, and what does the driver pay?

Thousands of simulated runs (bench/_sim_trainer.py: sleep for a sampled duration, report
progress, return a val_bpb from a smooth surface + seed noise) go through the real executor on
logical GPUs: one local Ray node with --gpus GPUs, or --nodes Ray nodes of --gpus/--nodes GPUs
each (ray.cluster_utils.Cluster, several raylets on this machine). All runs are submitted up
front (full-size runs at the loop's higher priority); the driver polls like the loop does and
fetches progress once a second. Printed:

  busy (executor)   busy_fraction(): GPU-seconds busy / available while work was queued or running,
                    including the time the pool spends starting actors
  busy (steady)     the same from the moment all GPUs were first in use to the last start (the
                    queue is never empty in that window): the per-run scheduling overhead alone
  dispatch gap      submit -> start for runs that found their slot already warm: start minus
                    max(submit, the previous run's end on that slot)
  cold start        submit -> start of a slot's first run (actor creation included)
  driver CPU / run  time.process_time() of the driver process (all its threads) / runs
  db bytes / run    a throwaway SQLite table of the outcomes (the run store's real size is
                    measured by the loop integration)

    python bench/sim_cluster.py                                          # 64 x 1-GPU slots (~1 min)
    python bench/sim_cluster.py --gpus 256 --mix 8:1 --runs 1500          # 256 GPUs as 32 x 8-GPU slots (~2 min)
    python bench/sim_cluster.py --gpus 128 --runs 2000 --duration 4:10    # 128 x 1-GPU slots (~3 min)
    python bench/sim_cluster.py --gpus 32 --nodes 4 --mix 1:3,8:1 --runs 300   # 4 raylets, mixed sizes

Measured on the 2-core CI machine (Ray 2.60, shared with other jobs): steady busy 99.6-99.7% for
64 and 128 1-GPU slots and for 256 GPUs as 32 8-GPU slots, median dispatch gap 5-13 ms, driver
CPU 2.6-3.8 ms per run. The limit is the host, not the driver: each Ray worker costs ~0.5-1
CPU-second to start and ~1% of a core idle, so 256 1-GPU slots (256 worker processes on 2
cores) never all start and the host saturates (load ~140, ~50% busy). A real node starts its 8
actors on its own cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import ray  # noqa: E402
from _sim_trainer import sample_knobs, sim_runner  # noqa: E402

from harness.executor import RayExecutor  # noqa: E402
from harness.runner import RunSpec, RunStatus  # noqa: E402


def parse_mix(text: str) -> list[tuple[int, float]]:
    out = []
    for part in text.split(","):
        g, _, w = part.partition(":")
        out.append((int(g), float(w or 1)))
    return out


def start_ray(args) -> tuple[RayExecutor, object | None]:
    if args.nodes <= 1:
        return RayExecutor(num_cpus=args.cpus, num_gpus=args.gpus, runner=sim_runner), None
    from ray.cluster_utils import Cluster

    per = args.gpus // args.nodes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus, "num_gpus": 0})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=0, num_gpus=per)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    return RayExecutor(runner=sim_runner), cluster


def make_runs(args, tmp: Path) -> list[tuple[RunSpec, int, int]]:
    rng = random.Random(args.seed)
    lo, _, hi = args.duration.partition(":")
    lo, hi = float(lo), float(hi or lo)
    sizes, weights = zip(*parse_mix(args.mix), strict=True)
    runs = []
    for i in range(args.runs):
        gpus = rng.choices(sizes, weights)[0]
        env = sample_knobs(rng) | {"SIM_DURATION": f"{rng.uniform(lo, hi):.3f}", "SEED": str(1337 + i % 3)}
        spec = RunSpec(run_id=f"sim{i:05d}", run_dir=tmp / f"sim{i:05d}", source="# simulated\n", env=env,
                       time_cap_s=600.0)
        runs.append((spec, gpus, 10 if gpus >= 8 else 0))
    return runs


def drive(ex: RayExecutor, runs, db: sqlite3.Connection) -> dict:
    submitted_at: dict[str, float] = {}
    outcomes = {}
    cpu0, t0 = time.process_time(), time.time()
    for spec, gpus, prio in runs:
        submitted_at[spec.run_id] = time.time()
        ex.submit(spec, gpus, priority=prio)
    next_progress, progress_calls = time.monotonic() + 1.0, 0
    while len(outcomes) < len(runs):
        for o in ex.poll(timeout=0.5):
            outcomes[o.run_id] = o
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?)",
                       (o.run_id, o.status.value, o.val_bpb, json.dumps(o.to_dict(), default=str)))
        if time.monotonic() >= next_progress:
            ex.progress()
            progress_calls += 1
            next_progress = time.monotonic() + 1.0
    db.commit()
    return {"outcomes": outcomes, "submitted_at": submitted_at, "cpu_s": time.process_time() - cpu0,
            "wall_s": time.time() - t0, "t0": t0, "busy": ex.busy_fraction(), "progress_calls": progress_calls}


def steady_busy(spans: list[tuple[float, float, int]], gpus: int) -> tuple[float | None, float | None, float]:
    """Busy fraction from the first moment all GPUs were in use to the last run start.

    None when the pool never had every GPU in use at once (the host could not start enough actors)."""
    events = sorted([(s, g) for s, _, g in spans] + [(f, -g) for _, f, g in spans])
    in_use, t_full = 0, None
    for t, d in events:
        in_use += d
        if in_use >= gpus:
            t_full = t
            break
    t_last = max(s for s, _, _ in spans)
    if t_full is None or t_last <= t_full:
        return None, t_full, t_last
    busy = sum(g * max(0.0, min(f, t_last) - max(s, t_full)) for s, f, g in spans)
    return busy / (gpus * (t_last - t_full)), t_full, t_last


def max_in_use(spans: list[tuple[float, float, int]]) -> int:
    in_use = peak = 0
    for _, d in sorted([(s, g) for s, _, g in spans] + [(f, -g) for _, f, g in spans]):
        in_use += d
        peak = max(peak, in_use)
    return peak


def report(args, res: dict, db_path: Path) -> dict:
    outs, sub = res["outcomes"], res["submitted_at"]
    spans, by_slot = [], {}
    for o in outs.values():
        pl = o.result["placement"]
        spans.append((pl["started_at"], pl["finished_at"], len(pl["gpu_ids"])))
        by_slot.setdefault(pl["slot"], []).append((pl["started_at"], pl["finished_at"], o.run_id))
    steady, t_full, t_last = steady_busy(spans, args.gpus)
    warm, warm_steady, cold = [], [], []
    for runs in by_slot.values():
        runs.sort()
        cold.append(runs[0][0] - sub[runs[0][2]])
        for (_, prev_end, _), (start, _, rid) in zip(runs, runs[1:], strict=False):
            warm.append(start - max(prev_end, sub[rid]))
            if t_full is not None and t_full <= start <= t_last:
                warm_steady.append(warm[-1])
    not_ok = sum(o.status != RunStatus.OK for o in outs.values())

    def ms(xs: list[float], p: int) -> float | None:  # p-th percentile in ms
        return round(1000 * statistics.quantiles(xs, n=100)[p - 1], 1) if len(xs) >= 2 else None

    summary = {
        "gpus": args.gpus, "nodes": max(1, args.nodes), "runs": len(outs), "not_ok": not_ok, "mix": args.mix,
        "duration_s": args.duration, "wall_s": round(res["wall_s"], 1),
        "runs_per_s": round(len(outs) / res["wall_s"], 2),
        "busy_executor": round(res["busy"], 4), "busy_steady": None if steady is None else round(steady, 4),
        "pool_fill_s": None if t_full is None else round(t_full - res["t0"], 1),
        "steady_window_s": None if t_full is None else round(t_last - t_full, 1),
        "max_gpus_in_use": max_in_use(spans),
        "slots_created": len(by_slot),
        "dispatch_gap_median_ms": ms(warm, 50), "dispatch_gap_p95_ms": ms(warm, 95),
        "dispatch_gap_steady_median_ms": ms(warm_steady, 50), "dispatch_gap_steady_p95_ms": ms(warm_steady, 95),
        "cold_start_median_s": round(statistics.median(cold), 2),
        "driver_cpu_ms_per_run": round(1000 * res["cpu_s"] / len(outs), 2),
        "db_bytes_per_run": round(db_path.stat().st_size / len(outs)),
    }
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=64, help="logical GPUs in the cluster")
    ap.add_argument("--nodes", type=int, default=1, help="Ray nodes sharing the GPUs (1 = one local node)")
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs of the (head) node")
    ap.add_argument("--runs", type=int, default=1500)
    ap.add_argument("--duration", default="1:3", help="run length in seconds, uniform LO:HI")
    ap.add_argument("--mix", default="1:1", help="GPUs per run and weight, e.g. 1:3,8:1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON only")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every slot the executor starts and stops")
    args = ap.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(relativeCreated)8.0f ms  %(message)s")
        logging.getLogger("harness.executor").setLevel(logging.DEBUG)
    if args.nodes > 1 and args.gpus % args.nodes:
        ap.error("--gpus must be a multiple of --nodes")
    with tempfile.TemporaryDirectory(prefix="pgolf-sim-") as tmp:
        tmp = Path(tmp)
        db_path = tmp / "throwaway.db"
        db = sqlite3.connect(db_path)
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT, val_bpb REAL, outcome TEXT)")
        t = time.time()
        ex, cluster = start_ray(args)
        init_s = time.time() - t
        try:
            res = drive(ex, make_runs(args, tmp), db)
        finally:
            ex.shutdown()
            if ray.is_initialized():
                ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
        db.close()
        summary = {"ray_init_s": round(init_s, 1), **report(args, res, db_path),
                   "load_avg_1m_end": round(os.getloadavg()[0], 1), "machine_cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(summary))
    else:
        width = max(map(len, summary))
        for k, v in summary.items():
            print(f"{k:<{width}}  {v}")
    return summary


if __name__ == "__main__":
    main()
