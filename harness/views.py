"""Read-only views over the run store: leaderboard, rung agreement, failures, spend.

Everything here is a function of a `Store` (read-only is enough), so the driver, the dashboard
and `pgolf runs` all see the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.store import Store

BLOCKING_FLAGS = ("bytes_mismatch", "rescore_mismatch", "over_time", "secret_in_env", "audit_error")


@dataclass(frozen=True)
class Standing:
    """A candidate's best evidence: the highest rung it finished, its score there, its seeds."""

    candidate_id: str
    proposer: str
    kind: str
    state: str
    rung: str
    rung_index: int
    val_bpb: float
    val_bpb_std: float
    val_loss: float
    bytes_total: int | None
    seeds: int
    flags: tuple[str, ...]
    patch: str
    env: dict
    techniques: tuple[str, ...]
    rationale: str

    @property
    def blocked(self) -> bool:
        return any(f in BLOCKING_FLAGS for f in self.flags)


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def standings(store: Store, byte_cap: int | None = None) -> list[Standing]:
    """One row per candidate that has an ok run, best first: higher rung beats lower, then lower bpb."""
    rows = store.query(
        "SELECT r.candidate_id, r.rung, r.rung_index, r.val_bpb, r.val_loss, r.bytes_total, r.flags,"
        " c.proposer, c.kind, c.state, c.patch, c.env, c.techniques, c.rationale"
        " FROM runs r JOIN candidates c ON c.id = r.candidate_id"
        " WHERE r.status='ok' AND r.val_bpb IS NOT NULL"
    )
    best: dict[str, dict] = {}
    for r in rows:
        cur = best.get(r.candidate_id)
        if cur is None or r.rung_index > cur["rung_index"]:
            best[r.candidate_id] = {"row": r, "rung_index": r.rung_index, "bpb": [], "loss": [], "bytes": [],
                                    "flags": set()}
            cur = best[r.candidate_id]
        if r.rung_index == cur["rung_index"]:
            cur["bpb"].append(r.val_bpb)
            cur["loss"].append(r.val_loss if r.val_loss is not None else math.nan)
            cur["bytes"].append(r.bytes_total)
            cur["flags"].update(r.flags or [])
    out = []
    for cid, b in best.items():
        r = b["row"]
        m, s = _mean_std(b["bpb"])
        sizes = [x for x in b["bytes"] if x is not None]
        flags = set(b["flags"])
        if byte_cap is not None and sizes and max(sizes) > byte_cap:
            flags.add("over_cap")
        out.append(Standing(
            candidate_id=cid, proposer=r.proposer, kind=r.kind, state=r.state, rung=r.rung,
            rung_index=b["rung_index"], val_bpb=m, val_bpb_std=s, val_loss=_mean_std(b["loss"])[0],
            bytes_total=max(sizes) if sizes else None, seeds=len(b["bpb"]), flags=tuple(sorted(flags)),
            patch=r.patch, env=r.env, techniques=tuple(r.techniques), rationale=r.rationale,
        ))
    out.sort(key=lambda s: (-s.rung_index, s.val_bpb))
    return out


def rung_scores(store: Store, rung: str, seed: int | None = None) -> dict[str, float]:
    sql = "SELECT candidate_id, AVG(val_bpb) AS v FROM runs WHERE status='ok' AND rung=? AND val_bpb IS NOT NULL"
    args: tuple = (rung,)
    if seed is not None:
        sql += " AND seed=?"
        args = (rung, seed)
    return {r.candidate_id: r.v for r in store.query(sql + " GROUP BY candidate_id", args)}


def rung_agreement(store: Store, rung_names: list[str]) -> list[dict]:
    """Spearman rank correlation of val_bpb between consecutive rungs over candidates that ran both."""
    from scipy import stats

    out = []
    for lo, hi in zip(rung_names, rung_names[1:], strict=False):
        a, b = rung_scores(store, lo), rung_scores(store, hi)
        common = sorted(set(a) & set(b))
        rho = float("nan")
        if len(common) >= 3:
            rho = float(stats.spearmanr([a[c] for c in common], [b[c] for c in common]).statistic)
        out.append({"from": lo, "to": hi, "n": len(common), "spearman": rho})
    return out


def failures(store: Store, limit: int = 20) -> list:
    return store.query(
        "SELECT r.id, r.candidate_id, r.rung, r.status, r.error, r.finished_at, c.proposer FROM runs r"
        " JOIN candidates c ON c.id=r.candidate_id WHERE r.status NOT IN ('ok','queued','running')"
        " ORDER BY r.finished_at DESC LIMIT ?", (limit,))


def rejections(store: Store, limit: int = 20) -> list:
    return store.query("SELECT id, proposer, reason, created_at FROM candidates WHERE state='rejected'"
                       " ORDER BY created_at DESC LIMIT ?", (limit,))


def llm_spend(store: Store) -> dict:
    r = store.one("SELECT COUNT(*) AS calls, COALESCE(SUM(prompt_tokens),0) AS prompt_tokens,"
                  " COALESCE(SUM(completion_tokens),0) AS completion_tokens, COALESCE(SUM(cost_usd),0) AS cost_usd"
                  " FROM llm_calls")
    return r.data if r else {}


def gpu_hours(store: Store) -> float:
    """GPU-hours spent by finished and running runs (a CPU run counts as zero GPUs)."""
    v = store.scalar("SELECT COALESCE(SUM(gpus * COALESCE(wall_s, 0)), 0) FROM runs")
    return float(v) / 3600.0


def proposer_stats(store: Store) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in store.query("SELECT proposer, state, COUNT(*) AS n FROM candidates WHERE kind='search'"
                         " GROUP BY proposer, state"):
        d = out.setdefault(r.proposer, {"proposed": 0, "trainable": 0, "promoted": 0})
        d["proposed"] += r.n
        if r.state != "rejected":
            d["trainable"] += r.n
        if r.state == "promoted":
            d["promoted"] += r.n
    return out
