"""Read-only views over the run store: leaderboard, rung agreement, failures, spend.

Everything here is a function of a `Store` (read-only is enough), so the driver, the dashboard
and `pgolf runs` all see the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.store import Store

BLOCKING_FLAGS = ("bytes_mismatch", "rescore_mismatch", "over_time", "secret_in_env", "audit_error", "tampering")


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
        xs, ys = [a[c] for c in common], [b[c] for c in common]
        if len(common) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:  # all tied: no ranking to agree on
            rho = float(stats.spearmanr(xs, ys).statistic)
        out.append({"from": lo, "to": hi, "n": len(common), "spearman": rho})
    return out


def size_estimate_error(store: Store, rung: str) -> dict:
    """How far the pre-flight size estimate of each candidate was from its real export at `rung`: relative
    error (estimate - bytes) / bytes over the candidates that ran there, as the search used the estimator."""
    rows = store.query("SELECT c.estimated_bytes AS est, MIN(r.bytes_total) AS real FROM runs r"
                       " JOIN candidates c ON c.id = r.candidate_id WHERE r.status='ok' AND r.rung=?"
                       " AND r.bytes_total > 0 AND c.estimated_bytes IS NOT NULL GROUP BY c.id", (rung,))
    errors = [(r.est - r.real) / r.real for r in rows]
    if not errors:
        return {"n": 0, "mean_abs": None, "max_abs": None, "mean": None}
    return {"n": len(errors), "mean_abs": sum(map(abs, errors)) / len(errors), "max_abs": max(map(abs, errors)),
            "mean": sum(errors) / len(errors)}


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
    """GPU-hours held by finished and running runs, as billed (a CPU run counts as zero GPUs).

    The budget stop and the ledger use this one measure (harness/ledger.py says what it counts)."""
    from harness import ledger

    return ledger.gpu_hours(store)


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


# --- dashboard and plot queries ------------------------------------------------------------
# Each is one indexed or single-scan query, so a dashboard frame stays fast at 10,000 runs.

FAILED = ("crash", "timeout", "over_budget", "invalid")


def meta_values(store: Store, keys: tuple[str, ...]) -> dict:
    """Several meta keys in one query (missing keys are absent); values JSON-decoded."""
    import json

    rows = store.conn.execute(f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(keys))})", keys)
    return {k: json.loads(v) for k, v in rows}


def run_counts(store: Store) -> list:
    """Runs per (status, rung), for the header counts and the queue-by-rung panel."""
    return store.query("SELECT status, rung, rung_index, COUNT(*) AS n FROM runs GROUP BY status, rung_index, rung"
                       " ORDER BY rung_index")


def candidate_summary(store: Store) -> list:
    """Candidates per (kind, state, proposer), with one id of each group (the reference's id, for one).

    A single grouped pass that candidate_counts(), proposer_families() and the reference lookup share.
    An index on candidates(kind, state, proposer, id) answers it without reading the rows, whose patch
    text makes a plain scan slow in a store with thousands of LLM patches.
    """
    return store.query("SELECT kind, state, proposer, COUNT(*) AS n, MIN(id) AS any_id FROM candidates"
                       " GROUP BY kind, state, proposer")


def candidate_counts(store: Store, summary: list | None = None) -> dict[str, int]:
    """Candidates per state (search and ablation candidates; the baseline reference is not counted)."""
    out: dict[str, int] = {}
    for r in summary if summary is not None else candidate_summary(store):
        if r.kind != "reference":
            out[r.state] = out.get(r.state, 0) + r.n
    return out


def leaderboard(store: Store, limit: int = 20) -> tuple[list[dict], int]:
    """The best `limit` candidates (higher rung first, then lower mean val_bpb) and how many are ranked.

    Each row aggregates the candidate's ok runs at the highest rung it finished: n (seeds), mean and
    mean square of val_bpb, mean val_loss, max bytes, the union of run flags, its candidate fields and
    its judgement's p-value, if any. Same order as standings(). One aggregate over the ok runs, then
    lookups for the shown rows only, so a store of 10,000 runs costs one pass.
    """
    # SQLite's documented bare-column rule: with MAX(rung_index), the other columns of `t` come from the
    # row holding that maximum, i.e. the candidate's highest finished rung.
    top = store.conn.execute(
        "WITH g AS (SELECT candidate_id, rung_index, COUNT(*) AS n, AVG(val_bpb) AS bpb,"
        "  AVG(val_bpb * val_bpb) AS bpb2, AVG(val_loss) AS loss, MAX(bytes_total) AS bytes_total"
        "  FROM runs WHERE status='ok' AND val_bpb IS NOT NULL GROUP BY candidate_id, rung_index),"
        " t AS (SELECT candidate_id, MAX(rung_index) AS rung_index, n, bpb, bpb2, loss, bytes_total"
        "  FROM g GROUP BY candidate_id)"
        " SELECT *, COUNT(*) OVER () AS ranked FROM t ORDER BY rung_index DESC, bpb ASC LIMIT ?", (limit,)).fetchall()
    if not top:
        return [], 0
    rows = [dict(r) for r in top]
    ids = [r["candidate_id"] for r in rows]
    marks = ",".join("?" * len(ids))
    flags: dict[tuple, set] = {}
    rung_names: dict[tuple, str] = {}
    for r in store.query(f"SELECT candidate_id, rung, rung_index, flags FROM runs WHERE candidate_id IN ({marks})"
                         " AND status='ok' AND val_bpb IS NOT NULL", tuple(ids)):
        key = (r.candidate_id, r.rung_index)
        rung_names[key] = r.rung
        flags.setdefault(key, set()).update(r.flags or [])
    info = {r.id: r.data for r in store.query(
        "SELECT c.id, c.proposer, c.kind, c.state, c.techniques, c.env, c.parents, j.p_value, j.verdict,"
        f" j.record_path FROM candidates c LEFT JOIN judgements j ON j.candidate_id = c.id WHERE c.id IN ({marks})",
        tuple(ids))}
    for r in rows:
        key = (r["candidate_id"], r["rung_index"])
        r.update(info.get(r["candidate_id"], {}), rung=rung_names.get(key, ""),
                 flags=tuple(sorted(flags.get(key, ()))))
    return rows, int(rows[0]["ranked"])


def std_from_moments(n: int, mean: float, mean_sq: float) -> float:
    """Sample standard deviation from the mean and the mean of squares (0 for one seed)."""
    if n < 2:
        return 0.0
    return math.sqrt(max(0.0, (mean_sq - mean * mean) * n / (n - 1)))


def reference_scores(store: Store, reference_ids: list[str] | None = None) -> dict[str, dict]:
    """The baseline reference's mean val_bpb and val_loss per rung: what deltas are measured against."""
    if reference_ids is None:
        reference_ids = [r.id for r in store.query("SELECT id FROM candidates WHERE kind='reference'")]
    if not reference_ids:
        return {}
    rows = store.query(
        "SELECT r.rung, COUNT(*) AS n, AVG(r.val_bpb) AS bpb, AVG(r.val_loss) AS loss, MAX(r.bytes_total) AS bytes"
        f" FROM runs r WHERE r.candidate_id IN ({','.join('?' * len(reference_ids))})"
        " AND r.status='ok' AND r.val_bpb IS NOT NULL GROUP BY r.rung", tuple(reference_ids))
    return {r.rung: {"n": r.n, "val_bpb": r.bpb, "val_loss": r.loss, "bytes_total": r.bytes} for r in rows}


def running_runs(store: Store) -> list:
    """Runs in flight with their latest progress report (if any), oldest first."""
    return store.query(
        "SELECT r.id, r.candidate_id, r.rung, r.rung_index, r.seed, r.gpus, r.node, r.gpu_ids, r.started_at,"
        " r.attempt, c.proposer, p.step, p.total, p.val_bpb, p.train_loss, p.train_time_ms, p.elapsed_s,"
        " p.updated_at FROM runs r JOIN candidates c ON c.id = r.candidate_id"
        " LEFT JOIN progress p ON p.run_id = r.id WHERE r.status='running' ORDER BY r.started_at")


def recent_failures(store: Store, limit: int = 10) -> list[dict]:
    """Failed runs and pre-flight rejections, newest first: ts, what (run|candidate), id, candidate_id, rung,
    status, reason, proposer. Rejections come from the indexed events journal, not a scan of candidates."""
    import json

    marks = ",".join("?" * len(FAILED))
    runs = store.query(
        "SELECT r.finished_at AS ts, 'run' AS what, r.id AS id, r.candidate_id, r.rung, r.status,"
        " COALESCE(r.error, '') AS reason, c.proposer FROM runs r JOIN candidates c ON c.id = r.candidate_id"
        f" WHERE r.status IN ({marks}) ORDER BY r.finished_at DESC LIMIT ?", (*FAILED, limit))
    out = [r.data for r in runs]
    for e in store.conn.execute("SELECT ts, candidate_id, data FROM events WHERE kind IN ('rejected',"
                                " 'candidate_rejected') ORDER BY id DESC LIMIT ?", (limit,)):
        d = json.loads(e["data"] or "{}")
        out.append({"ts": e["ts"], "what": "candidate", "id": e["candidate_id"], "candidate_id": e["candidate_id"],
                    "rung": "", "status": "rejected", "reason": d.get("reason") or "", "proposer": d.get("proposer")
                    or ""})
    out.sort(key=lambda r: r["ts"] or 0, reverse=True)
    return out[:limit]


def proposer_families(store: Store, summary: list | None = None) -> dict[str, dict]:
    """Search candidates per proposer family ("llm:explorer" counts as "llm"): proposed, trainable (passed
    pre-flight), advanced (finished a run past the first rung), promoted (a record)."""
    out: dict[str, dict] = {}

    def fam(name: str) -> dict:
        return out.setdefault(name.split(":")[0], {"proposed": 0, "trainable": 0, "advanced": 0, "promoted": 0})

    for r in summary if summary is not None else candidate_summary(store):
        if r.kind != "search":
            continue
        d = fam(r.proposer)
        d["proposed"] += r.n
        d["trainable"] += r.n if r.state != "rejected" else 0
        d["promoted"] += r.n if r.state == "promoted" else 0
    for r in store.query("SELECT proposer, COUNT(*) AS n FROM candidates WHERE kind='search' AND id IN"
                         " (SELECT candidate_id FROM runs WHERE rung_index > 0 AND status='ok') GROUP BY proposer"):
        fam(r.proposer)["advanced"] += r.n
    return out


def best_over_time(store: Store, t0: float, t1: float, buckets: int = 120) -> dict[str, list[float | None]]:
    """Best val_bpb so far per rung, sampled at the end of `buckets` equal slices of [t0, t1].

    Grouped in SQL, so the result has at most rungs x buckets rows however many runs finished.
    A slice before the rung's first result is None.
    """
    width = max((t1 - t0) / buckets, 1e-9)
    rows = store.query(
        "SELECT rung, rung_index, MIN(MAX(CAST((finished_at - ?) / ? AS INTEGER), 0), ?) AS b, MIN(val_bpb) AS v"
        " FROM runs WHERE status='ok' AND val_bpb IS NOT NULL AND finished_at IS NOT NULL"
        " GROUP BY rung_index, rung, b ORDER BY rung_index, b", (t0, width, buckets - 1))
    out: dict[str, list[float | None]] = {}
    for r in rows:
        out.setdefault(r.rung, [None] * buckets)[r.b] = r.v
    for curve in out.values():
        best = None
        for i, v in enumerate(curve):
            if v is not None and (best is None or v < best):
                best = v
            curve[i] = best
    return out


def time_span(store: Store) -> tuple[float | None, float | None]:
    """First queue time and last finish time over all runs."""
    r = store.one("SELECT MIN(queued_at) AS a, MAX(finished_at) AS b FROM runs")
    return (r.a, r.b) if r else (None, None)


def finished_runs(store: Store) -> list:
    """Every finished run in finish order with what plots need (score, bytes, GPU-seconds)."""
    marks = ",".join("?" * len(FINISHED_ALL))
    return store.query(
        "SELECT r.id, r.candidate_id, r.rung, r.rung_index, r.seed, r.status, r.val_bpb, r.val_loss, r.bytes_total,"
        " r.finished_at, r.started_at, r.gpus, r.wall_s, c.kind, c.proposer FROM runs r"
        f" JOIN candidates c ON c.id = r.candidate_id WHERE r.status IN ({marks}) AND r.finished_at IS NOT NULL"
        " ORDER BY r.finished_at", FINISHED_ALL)


FINISHED_ALL = ("ok", *FAILED, "cancelled")


def store_version(store: Store) -> int:
    """The id of the newest event: every state change appends one, so an unchanged id means unchanged
    candidates, runs (except live progress), judgements. O(1) on the primary key."""
    return int(store.scalar("SELECT COALESCE(MAX(id), 0) FROM events") or 0)


def candidate_rung_scores(store: Store) -> list:
    """Every candidate's mean val_bpb, max bytes and seed count at each rung it finished (ok runs only)."""
    return store.query(
        "SELECT candidate_id, rung, rung_index, AVG(val_bpb) AS val_bpb, MAX(bytes_total) AS bytes_total,"
        " COUNT(*) AS n FROM runs WHERE status='ok' AND val_bpb IS NOT NULL"
        " GROUP BY candidate_id, rung_index, rung ORDER BY rung_index")
