"""The demo store: a plausible search written through the store's public methods (--demo, bench, tests)."""

from __future__ import annotations

import math
import time

from harness import views
from harness.store import Store


def fill_demo(store: Store, n_candidates: int = 60, seed: int = 0, now: float | None = None) -> None:
    """A plausible search in `store` through its public methods: a ladder of rungs, the baseline, runs in
    flight, failures, an LLM ledger, a judgement. For --demo, the benchmark and tests."""
    import random

    from harness.candidate import run_id

    rnd = random.Random(seed)
    now = time.time() if now is None else now
    rungs = [("smoke", 0, 0.5), ("screen", 1, 0.34), ("full", 8, 1.0)]
    store.set_meta("config", {"name": "demo", "track": "main-10min-16mb",
                              "proposers": {"optuna": 0.4, "catalog": 0.3, "llm": 0.3},
                              "llm": {"max_cost_usd": 20.0}})
    store.set_meta("started_at", now - 3 * 3600)
    techniques = ["int6_zstd", "mlp3x", "smeargate", "bigram_hash", "muon_wd", "swa", "xsa", "partial_rope"]
    ref = "c000baseline"
    store.add_candidate({"id": ref, "baseline_hash": "demo", "track": "main-10min-16mb", "patch": "",
                         "patch_hash": "", "env": {}, "proposer": "baseline", "kind": "reference"})
    cands = [(ref, 0.0)]
    for i in range(n_candidates):
        fam = rnd.choice(["optuna", "catalog", "llm:explorer"])
        cid = f"c{i:03d}{rnd.getrandbits(32):08x}"
        rejected = rnd.random() < 0.12
        env = {"MATRIX_LR": f"{rnd.uniform(0.02, 0.08):.3f}"} if fam == "optuna" else {}
        tech = [rnd.choice(techniques)] if fam != "optuna" else []
        store.add_candidate({
            "id": cid, "baseline_hash": "demo", "track": "main-10min-16mb", "patch": "" if not tech else
            f"--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -1 +1 @@\n-x = 1\n+x = {i}\n", "patch_hash": cid,
            "env": env, "proposer": fam, "techniques": tech, "state": "rejected" if rejected else "active",
            "reason": "size: estimated 16,412,000 B over the cap" if rejected else "",
            "created_at": now - 3 * 3600 + 3 * 3600 * i / n_candidates,
        })
        if not rejected:
            cands.append((cid, rnd.gauss(-0.01, 0.02)))
    t = now - 3 * 3600
    step_s = 3 * 3600 / max(1, len(cands) * 2)
    alive = list(cands)
    for ri, (rung, gpus, keep) in enumerate(rungs):
        finished = []
        for cid, gain in alive:
            rid = run_id(cid, rung, 1337)
            store.enqueue_run(rid, cid, rung, ri, 1337, gpus)
            store.mark_running(rid)
            t += step_s
            r = rnd.random()
            status = "ok" if r > 0.12 or cid == ref else rnd.choice(["crash", "timeout", "over_budget"])
            bpb = 1.2244 + gain + (3 - ri) * 0.8 + rnd.gauss(0, 0.004)
            store.finish_run(rid, {
                "status": status, "val_bpb": bpb if status == "ok" else None,
                "val_loss": bpb * 1.6935 if status == "ok" else None,
                "bytes_total": int(15_800_000 + rnd.gauss(0, 250_000)) if status == "ok" else None,
                "steps": 1000, "wall_s": 600.0 if gpus else 30.0, "flags": [],
                "error": {"crash": "Traceback (most recent call last):\nRuntimeError: CUDA out of memory",
                          "timeout": "killed at cap + grace (630 s)",
                          "over_budget": "artifact 16,210,004 B over the 16,000,000 B cap"}.get(status),
                "val_history": [{"step": s, "val_bpb": bpb + 2.0 / (1 + s / 100)} for s in range(0, 1001, 250)],
            })
            store.conn.execute("UPDATE runs SET finished_at=? WHERE id=?", (t, rid))
            if status == "ok":
                finished.append((cid, gain, bpb))
        finished.sort(key=lambda x: x[2])
        keep_n = max(1, math.floor(len(finished) * keep))
        alive = [(c, g) for c, g, _ in finished[:keep_n]]
        if all(c != ref for c, _ in alive):
            alive.append((ref, 0.0))
    for i, (cid, _) in enumerate(cands[1:5]):
        rid = run_id(cid, "screen", 7)
        if store.enqueue_run(rid, cid, "screen", 1, 7, 1):
            store.mark_running(rid)
            store.update_progress(rid, {"step": 200 * (i + 1), "total": 1000, "val_bpb": 1.31 - 0.01 * i,
                                        "elapsed_s": 120.0 * (i + 1)})
    for cid, _ in cands[5:9]:
        store.enqueue_run(run_id(cid, "full", 7), cid, "full", 2, 7, 8)
    for i in range(25):
        store.add_llm_call({"proposer": "llm:explorer", "role": "propose", "model": "gpt-4.1",
                            "prompt_tokens": 9000 + 100 * i, "completion_tokens": 1500, "cost_usd": 0.03,
                            "outcome": "ok"})
    best = min((c for c in cands[1:]), key=lambda x: x[1])[0]
    store.add_judgement(best, {"verdict": "keep", "reason": "beats the baseline by 0.012 nats, p=0.0031",
                               "p_value": 0.0031, "delta_nats": -0.012, "n_candidate": 3, "n_reference": 3})
    store.set_meta("cluster", {"gpus": 16, "gpus_busy": 12, "cpus": 64, "busy_fraction": 0.75, "updated_at": now})


def demo_tick(store: Store, dt: float = 1.0) -> None:
    """Advance the demo's runs in flight by `dt` seconds, so --demo moves."""
    for r in views.running_runs(store):
        step = min((r.total or 1000), (r.step or 0) + int(10 * dt))
        store.update_progress(r.id, {"step": step, "total": r.total or 1000, "val_bpb": (r.val_bpb or 1.4) - 1e-4,
                                     "elapsed_s": (r.elapsed_s or 0) + dt})
    c = store.get_meta("cluster") or {}
    store.set_meta("cluster", {**c, "updated_at": time.time()})
