"""Time per dashboard frame on a large run store (default 10,000 runs).

    python bench/dash.py [--runs 10000] [--frames 30] [--index]

Fills a store in a temp folder the way a long search would (a rung ladder, most runs at the
lowest rung, failures, runs in flight, an LLM ledger, metrics and events), then times
load_view() (the queries), render() to text at 80x24 and 200x50, and each view query alone.
--index also adds candidate indexes to the copy, to see whether they would pay for themselves.
Prints numbers only; never a pass/fail.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import dash, views  # noqa: E402
from harness.store import Store  # noqa: E402

RUNGS = (("smoke", 0, 0.0), ("screen", 1, 600.0), ("full", 8, 600.0))
INDEXES = (
    "CREATE INDEX IF NOT EXISTS candidates_summary ON candidates(kind, state, proposer, id)",
)


def fill(store: Store, n_runs: int, seed: int = 0) -> None:
    """Bulk-insert a search of about n_runs runs in one transaction (the public methods take minutes)."""
    rnd = random.Random(seed)
    t0 = time.time() - 12 * 3600
    store.set_meta("config", {"name": "bench", "track": "main-10min-16mb",
                              "proposers": {"optuna": 0.4, "catalog": 0.3, "llm": 0.3}, "llm": {"max_cost_usd": 50}})
    store.set_meta("started_at", t0)
    store.set_meta("cluster", {"gpus": 64, "gpus_busy": 60, "cpus": 256, "busy_fraction": 0.94,
                               "updated_at": time.time()})
    cands, runs, metrics, events, progress = [], [], [], [], []
    n_cand = int(n_runs / 1.2)
    for i in range(n_cand):
        cid = "c000baseline" if i == 0 else f"c{i:011x}"
        fam = rnd.choice(("optuna", "catalog", "llm:explorer", "llm:exploiter"))
        state = "rejected" if i and rnd.random() < 0.1 else rnd.choice(("active", "stopped", "stopped"))
        # Patch sizes as agents write them: none for knob tuning, ~2 kB for a catalog technique, 4-20 kB from an LLM.
        size = 0 if fam == "optuna" else 2_000 if fam == "catalog" else rnd.randint(4_000, 20_000)
        patch = ("--- a/train_gpt.py\n+++ b/train_gpt.py\n" + "@@ -1 +1 @@\n-x = 1\n+x = 2\n" * (size // 24))[:size]
        cands.append((cid, t0 + i * 4, "bh", "main-10min-16mb", patch, f"ph{i}", json.dumps({"MATRIX_LR": "0.04"}),
                      "baseline" if i == 0 else fam, "why " * 30, "[]", json.dumps(["int6_zstd"]), i,
                      "reference" if i == 0 else "search", state, "size: over the cap" if state == "rejected" else "",
                      15_900_000))
    k = 0
    for cid, created, *_rest in cands:
        if _rest[-3] == "rejected":
            continue
        gain = rnd.gauss(0, 0.02)
        for ri, (rung, gpus, _) in enumerate(RUNGS):
            if k >= n_runs or (ri and rnd.random() > 0.35 and cid != "c000baseline"):
                break
            rid = f"{cid}-{rung}-s1337"
            roll = rnd.random()
            status = ("queued" if roll < 0.01 else "running" if roll < 0.015 else "ok" if roll < 0.9 else
                      rnd.choice(("crash", "timeout", "over_budget", "invalid", "cancelled")))
            done = status not in ("queued", "running")
            bpb = 1.22 + gain + (2 - ri) * 0.9 + rnd.gauss(0, 0.005) if status == "ok" else None
            fin = created + 60 + ri * 600 if done else None
            runs.append((rid, cid, rung, ri, 1337, status, gpus, created, created + 5 if status != "queued" else None,
                         fin, bpb, None if bpb is None else bpb * 1.69, int(15_900_000 + rnd.gauss(0, 2e5)),
                         600.0 if done else None, json.dumps(["rescore_mismatch"] if roll > 0.899 and bpb else []),
                         None if status in ("ok", "queued", "running") else
                         "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory",
                         f"runs/{rid}"))
            if status == "ok":
                metrics += [(rid, s, bpb * 1.69 + 1 / (1 + s), bpb + 1 / (1 + s), s * 40.0)
                            for s in range(0, 1001, 200)]
            if status == "running":
                progress.append((rid, 300, 1000, 1.3, 2.2, 12000.0, 130.0, time.time()))
            events += [(created, "queued", cid, rid, "{}"), (created + 5, "started", None, rid, "{}")]
            if done:
                events.append((fin, "finished", None, rid, json.dumps({"status": status, "val_bpb": bpb})))
            k += 1
    calls = [(t0 + i, "llm:explorer", "propose", "gpt-4.1", 9000, 1500, 0.03, "ok") for i in range(n_runs // 5)]
    with store.transaction() as c:
        c.executemany("INSERT INTO candidates VALUES (" + ",".join("?" * 16) + ")", cands)
        c.executemany("INSERT INTO runs(id, candidate_id, rung, rung_index, seed, status, gpus, queued_at, started_at,"
                      " finished_at, val_bpb, val_loss, bytes_total, wall_s, flags, error, run_dir)"
                      " VALUES (" + ",".join("?" * 17) + ")", runs)
        c.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", metrics)
        c.executemany("INSERT INTO progress VALUES (?,?,?,?,?,?,?,?)", progress)
        c.executemany("INSERT INTO events(ts, kind, candidate_id, run_id, data) VALUES (?,?,?,?,?)", events)
        c.executemany("INSERT INTO llm_calls(ts, proposer, role, model, prompt_tokens, completion_tokens, cost_usd,"
                      " outcome) VALUES (?,?,?,?,?,?,?,?)",
                      calls)
    best = store.one("SELECT candidate_id FROM runs WHERE status='ok' AND rung='full' ORDER BY val_bpb LIMIT 1")
    if best:
        store.add_judgement(best.candidate_id, {"verdict": "keep", "reason": "bench", "p_value": 0.002,
                                                "delta_nats": -0.01, "n_candidate": 3, "n_reference": 3})


def timed(fn, n: int) -> tuple[float, float]:
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    return statistics.median(xs), xs[min(len(xs) - 1, int(0.95 * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--index", action="store_true", help="add the candidate indexes first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        writer = Store(tmp)
        t = time.perf_counter()
        fill(writer, args.runs)
        if args.index:
            for sql in INDEXES:
                writer.conn.execute(sql)
        fill_s = time.perf_counter() - t
        store = Store(tmp, readonly=True)
        n = store.scalar("SELECT COUNT(*) FROM runs")
        print(f"store: {n:,} runs, {store.scalar('SELECT COUNT(*) FROM candidates'):,} candidates, "
              f"{store.scalar('SELECT COUNT(*) FROM metrics'):,} metric rows, "
              f"{store.scalar('SELECT COUNT(*) FROM events'):,} events (filled in {fill_s:.1f} s)"
              + (" + candidate indexes" if args.index else ""))
        view = dash.load_view(store)
        load = timed(lambda: dash.load_view(store), args.frames)
        print(f"{'load_view, full read':<34} median {load[0]:7.2f} ms   p95 {load[1]:7.2f} ms")
        same = timed(lambda: dash.load_view(store, previous=view), args.frames)
        print(f"{'load_view, no new event':<34} median {same[0]:7.2f} ms   p95 {same[1]:7.2f} ms")
        for w, h in ((80, 24), (200, 50)):
            r = timed(lambda w=w, h=h: dash.frame_text(view, w, h), args.frames)
            print(f"{f'render {w}x{h} to text':<34} median {r[0]:7.2f} ms   p95 {r[1]:7.2f} ms"
                  f"   frame total ~{load[0] + r[0]:.1f} ms")
        print("per query:")
        now = time.time()
        summary = views.candidate_summary(store)
        queries = {
            "meta_values": lambda: views.meta_values(store, ("config", "started_at", "cluster", "summary")),
            "run_counts": lambda: views.run_counts(store),
            "candidate_summary": lambda: views.candidate_summary(store),
            "leaderboard": lambda: views.leaderboard(store, dash.BOARD_LIMIT),
            "reference_scores (ids known)": lambda: views.reference_scores(store, ["c000baseline"]),
            "running_runs": lambda: views.running_runs(store),
            "recent_failures": lambda: views.recent_failures(store, dash.FAILURE_LIMIT),
            "proposer_families (summary known)": lambda: views.proposer_families(store, summary),
            "llm_spend": lambda: views.llm_spend(store),
            "gpu_hours": lambda: views.gpu_hours(store),
            "time_span": lambda: views.time_span(store),
            "store_version": lambda: views.store_version(store),
            "best_over_time": lambda: views.best_over_time(store, now - 12 * 3600, now, dash.CURVE_BUCKETS),
        }
        for name, fn in queries.items():
            m, p = timed(fn, args.frames)
            print(f"  {name:<34} median {m:7.2f} ms   p95 {p:7.2f} ms")
        store.close()
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
