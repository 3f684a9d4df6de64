"""A simulated trainer for scheduler benchmarks: a `run_candidate` stand-in that only sleeps.

`sim_runner(spec, on_progress, cancel)` sleeps SIM_DURATION seconds (sampled by the caller),
reports progress every PROGRESS_S (a real trainer logs a train line every few seconds), honours
cancel, and returns a
`RunOutcome` whose val_bpb comes from a smooth surface over a few knobs plus seed noise.
"""

from __future__ import annotations

import math
import random
import threading
import time

from harness.runner import RunOutcome, RunSpec, RunStatus

BASELINE_BPB = 1.2244  # the naive baseline on 8xH100
KNOBS = {  # name: (optimum, scale of the bowl, (low, high) sampling range)
    "MATRIX_LR": (0.04, 0.02, (0.01, 0.12)),
    "MODEL_DIM": (576.0, 0.015, (384.0, 768.0)),
    "NUM_LAYERS": (10.0, 0.01, (6.0, 14.0)),
    "WARMDOWN_ITERS": (1800.0, 0.006, (400.0, 3000.0)),
}
SEED_NOISE = 0.0015  # bpb standard deviation between seeds
PROGRESS_S = 0.5  # seconds between progress reports


def sample_knobs(rng: random.Random) -> dict[str, str]:
    env = {}
    for name, (_, _, (lo, hi)) in KNOBS.items():
        v = math.exp(rng.uniform(math.log(lo), math.log(hi))) if name == "MATRIX_LR" else rng.uniform(lo, hi)
        env[name] = f"{v:.4g}" if name == "MATRIX_LR" else str(int(round(v)))
    return env


def surface(env: dict[str, str]) -> float:
    """Noise-free val_bpb: a sum of bowls (log-scale for the learning rate) around the optimum."""
    bpb = BASELINE_BPB - 0.03
    for name, (opt, scale, (lo, hi)) in KNOBS.items():
        if name not in env:
            continue
        v = float(env[name])
        x = math.log(v / opt) / math.log(hi / lo) if name == "MATRIX_LR" else (v - opt) / (hi - lo)
        bpb += scale * 16 * x * x
    return bpb


def sim_runner(spec: RunSpec, on_progress=None, cancel=None) -> RunOutcome:
    duration = float(spec.env.get("SIM_DURATION", "1.0"))
    seed = int(spec.env.get("SEED", "1337"))
    final = surface(spec.env) + random.Random(f"{spec.run_id}:{seed}").gauss(0.0, SEED_NOISE)
    t0 = time.monotonic()
    step = 0
    cancel = cancel if cancel is not None else threading.Event()
    while (elapsed := time.monotonic() - t0) < duration:
        if cancel.wait(min(PROGRESS_S, max(0.0, duration - elapsed))):
            return RunOutcome(run_id=spec.run_id, status=RunStatus.CANCELLED, error="cancelled", steps=step)
        step += 1
        if on_progress is not None:
            frac = min(1.0, (time.monotonic() - t0) / duration)
            on_progress({"step": step, "total": None, "elapsed_s": round(time.monotonic() - t0, 3),
                         "val_bpb": round(final + 2.5 * (1.0 - frac) ** 2, 4)})
    return RunOutcome(run_id=spec.run_id, status=RunStatus.OK, val_bpb=final, val_loss=final * 0.72, steps=step,
                      bytes_total=15_000_000 + int(float(spec.env.get("MODEL_DIM", "512")) * 1000),
                      wall_s=round(time.monotonic() - t0, 3))
