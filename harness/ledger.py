"""What a search spent (GPU-hours and money, per run, per candidate, in total) and on which GPUs.

GPU-hours here are what a cloud bills: a run's GPUs times the time its slot held them, from the
run's start on its node to its outcome at the driver (training, the trainer's own eval and the
harness's re-score). A run that never started (cancelled while queued) costs nothing; a run lost
with its node is requeued, and the time its earlier attempts held their GPUs (from the driver's
start mark to the loss) is counted too (`lost_s`): the cloud bills it all the same.
Money is GPU-hours times the config's `budget.price_per_gpu_hour` (0: no price, no money shown).

SKUs: under a wall-clock cap a faster GPU trains more steps, so val_bpb, steps and step times of
runs on different GPU models are not comparable. `sku_note` says so wherever runs that mix SKUs
are compared (a candidate against the baseline, a search's leaderboard).
"""

from __future__ import annotations

import time
from collections import Counter

from harness.store import Store

UNNAMED_GPUS = ("cpu", "unknown")  # what staging.gpu_facts says of a run or node when it cannot name a GPU model

# Seconds a run's GPUs were held: finished -> start to outcome (at least the training wall time);
# running -> start to now; never started -> its training wall time, if any (0 otherwise); plus what
# its requeued attempts held.
_HELD_S = ("CASE WHEN r.status='running' AND r.started_at IS NOT NULL THEN MAX(0, :now - r.started_at)"
           " WHEN r.started_at IS NOT NULL AND r.finished_at IS NOT NULL"
           " THEN MAX(r.finished_at - r.started_at, COALESCE(r.wall_s, 0))"
           " ELSE COALESCE(r.wall_s, 0) END")


def _held_s(store: Store) -> str:
    """_HELD_S plus what requeued attempts held, on stores that keep it (an older pgolf's store, opened
    read-only by the dashboard, does not)."""
    return f"{_HELD_S} + r.lost_s" if "lost_s" in _run_columns(store) else _HELD_S


def _run_columns(store: Store) -> set[str]:
    return {r.name for r in store.query("PRAGMA table_info(runs)")}


def price_per_gpu_hour(store: Store) -> float:
    cfg = store.get_meta("config") or {}
    try:
        return float((cfg.get("budget") or {}).get("price_per_gpu_hour") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def run_costs(store: Store) -> dict[str, float]:
    """GPU-hours per run id."""
    rows = store.query(f"SELECT r.id, r.gpus * ({_held_s(store)}) / 3600.0 AS gh FROM runs r", {"now": time.time()})
    return {r.id: float(r.gh or 0.0) for r in rows}


def candidate_costs(store: Store) -> dict[str, float]:
    """GPU-hours per candidate id (all its runs: every rung, every seed)."""
    rows = store.query(f"SELECT r.candidate_id AS cid, SUM(r.gpus * ({_held_s(store)})) / 3600.0 AS gh FROM runs r"
                       " GROUP BY r.candidate_id", {"now": time.time()})
    return {r.cid: float(r.gh or 0.0) for r in rows}


def gpu_hours(store: Store) -> float:
    """GPU-hours held by every run of the search so far."""
    v = store.scalar(f"SELECT COALESCE(SUM(r.gpus * ({_held_s(store)})), 0) FROM runs r", {"now": time.time()})
    return float(v) / 3600.0


def fmt_cost(gpu_h: float, price: float) -> str:
    """"1.25 GPU-h · $3.10" (money only when there is a price)."""
    return f"{gpu_h:.2f} GPU-h" + (f" · ${gpu_h * price:,.2f}" if price else "")


def skus(store: Store, where: str = "1=1", args: tuple = ()) -> dict[str, Counter]:
    """Finished runs per rung per GPU SKU (runs recorded before SKUs were kept count as "unrecorded")."""
    if "gpu_sku" not in _run_columns(store):  # a store written by an older pgolf, opened read-only
        return {}
    out: dict[str, Counter] = {}
    for r in store.query(f"SELECT rung, COALESCE(gpu_sku, 'unrecorded') AS sku, COUNT(*) AS n FROM runs"
                         f" WHERE status='ok' AND {where} GROUP BY rung, sku", args):
        out.setdefault(r.rung, Counter())[r.sku] = r.n
    return out


def sku_note(by_rung: dict[str, Counter]) -> str | None:
    """One line when runs compared with each other (same rung) ran on more than one GPU model, else None."""
    mixed = []
    for rung, counts in by_rung.items():
        known = {k: v for k, v in counts.items() if k != "unrecorded"}
        if len(known) > 1:
            mixed.append(f"{rung}: " + ", ".join(f"{k} ({v} run{'s' * (v != 1)})" for k, v in sorted(known.items())))
    if not mixed:
        return None
    return (f"runs of one rung on more than one GPU model ({'; '.join(mixed)}): under a wall-clock cap a faster "
            "GPU trains more steps, so val_bpb and timings across models carry that bias; confirm on one model "
            "(a pool of identical nodes) before trusting a small difference")


def measured_hardware(runs: list, declared: str) -> str:
    """What runs ran on, from their own placement records ("8xNVIDIA H100 80GB HBM3"); `declared` (the track's
    hardware) where they recorded no GPU model: CPU runs, or a store written by an older pgolf."""
    seen = sorted({f"{r.gpus}x{r.data.get('gpu_sku')}" for r in runs
                   if r.gpus and r.data.get("gpu_sku") not in (None, *UNNAMED_GPUS)})
    return " + ".join(seen) if seen else declared


def candidate_sku_note(store: Store, candidate_id: str, reference_ids: list[str]) -> str | None:
    """The SKU caveat for a candidate compared with the baseline: its runs and the baseline's."""
    ids = [candidate_id, *reference_ids]
    return sku_note(skus(store, f"candidate_id IN ({','.join('?' * len(ids))})", tuple(ids)))
