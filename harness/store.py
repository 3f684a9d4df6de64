"""The run store: one SQLite database (WAL) per search plus one folder per run.

One writer (the search driver); any number of readers (`pgolf dash`, `pgolf runs`) open it
read-only and never block the writer. Every state change is also appended to `events`, so the
history of a search can be replayed, and the tables are what the views query.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import StoreError
from harness.faults import kill_point

DB_NAME = "pgolf.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    baseline_hash TEXT NOT NULL,
    track TEXT NOT NULL,
    patch TEXT NOT NULL,
    patch_hash TEXT NOT NULL,
    env TEXT NOT NULL,                 -- JSON object of knob overrides
    proposer TEXT NOT NULL,
    rationale TEXT NOT NULL DEFAULT '',
    parents TEXT NOT NULL DEFAULT '[]',
    techniques TEXT NOT NULL DEFAULT '[]',
    trial_number INTEGER,
    kind TEXT NOT NULL DEFAULT 'search',  -- search | reference | ablation
    state TEXT NOT NULL,               -- active | rejected | stopped | promoted
    reason TEXT NOT NULL DEFAULT '',
    estimated_bytes INTEGER
);
-- the dashboard's one grouped pass over candidates; without it a scan wades through multi-kB patches
CREATE INDEX IF NOT EXISTS candidates_summary ON candidates(kind, state, proposer, id);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    candidate_id TEXT NOT NULL REFERENCES candidates(id),
    rung TEXT NOT NULL,
    rung_index INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,              -- queued | running | ok | crash | timeout | over_budget | invalid | cancelled
    attempt INTEGER NOT NULL DEFAULT 0,
    gpus INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    queue_wait_s REAL,
    node TEXT,
    gpu_ids TEXT,
    gpu_sku TEXT,                      -- the GPUs' name ("cpu" for a CPU run): timings compare within one SKU
    gpu_driver TEXT,
    lost_s REAL NOT NULL DEFAULT 0,    -- seconds its GPUs were held by earlier attempts that were requeued
    val_bpb REAL,
    val_loss REAL,
    pre_quant_val_bpb REAL,
    rescore_val_bpb REAL,
    bytes_total INTEGER,
    bytes_code INTEGER,
    bytes_model INTEGER,
    steps INTEGER,
    train_time_ms REAL,
    wall_s REAL,
    flags TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    run_dir TEXT NOT NULL,
    UNIQUE (candidate_id, rung, seed)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_candidate ON runs(candidate_id);
CREATE TABLE IF NOT EXISTS progress (
    run_id TEXT PRIMARY KEY, step INTEGER, total INTEGER, val_bpb REAL, train_loss REAL,
    train_time_ms REAL, elapsed_s REAL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, val_loss REAL, val_bpb REAL, train_time_ms REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,                -- proposed | rejected | queued | started | finished | judged | promoted | ...
    candidate_id TEXT,
    run_id TEXT,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    proposer TEXT, role TEXT, model TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    patch_hash TEXT,
    prompt_hash TEXT,
    extra TEXT NOT NULL DEFAULT '{}'    -- the rest of the attempt: redacted answer, patch, turn, retry, ...
);
CREATE TABLE IF NOT EXISTS judgements (
    candidate_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    p_value REAL, t_stat REAL, df REAL, delta_nats REAL, delta_bpb REAL,
    n_candidate INTEGER, n_reference INTEGER,
    record_path TEXT
);
"""

FINISHED = ("ok", "crash", "timeout", "over_budget", "invalid", "cancelled")

# What the driver wrote and later decides on; `Store.verify_own_writes` checks that nobody else changed it.
# table -> (key column, tracked columns, which rows)
TRACKED = {
    "runs": ("id", ("status", "val_bpb", "val_loss", "rescore_val_bpb", "bytes_total", "bytes_code", "bytes_model",
                    "flags", "error"), "status NOT IN ('queued', 'running')"),
    "candidates": ("id", ("patch_hash", "env", "kind", "state"), "1=1"),
    "judgements": ("candidate_id", ("verdict", "record_path"), "1=1"),
    "meta": ("key", ("value",), "1=1"),
}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Row:
    """A read-only row: attribute access over sqlite3.Row, JSON columns decoded."""

    data: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None


_JSON_COLUMNS = {"env", "parents", "techniques", "flags", "data", "gpu_ids", "extra"}


def _row(r: sqlite3.Row) -> Row:
    d = dict(r)
    for k in _JSON_COLUMNS & d.keys():
        if isinstance(d[k], str):
            d[k] = json.loads(d[k])
    return Row(d)


class Store:
    """A search's database and run folders under `root`."""

    def __init__(self, root: str | Path, readonly: bool = False):
        self.root = Path(root)
        self.readonly = readonly
        self.db_path = self.root / DB_NAME
        try:
            if readonly:
                if not self.db_path.exists():
                    raise StoreError(f"no run store at {self.db_path}; start a search first or pass the search folder")
                uri = f"file:{self.db_path.resolve()}?mode=ro"
                self.conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            else:
                self.root.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
                self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open run store {self.db_path}: {e}; check the path and free disk space") from None
        except OSError as e:
            raise StoreError(f"cannot create run store {self.root}: {e.strerror}; pass --store a folder you can write"
                             ) from None
        self.conn.row_factory = sqlite3.Row
        self.expected: dict[str, dict[str, tuple]] | None = None  # see track_own_writes

    def _migrate(self) -> None:
        """Columns added after a store was created (a search started by an older pgolf resumes)."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(runs)")}
        for col, decl in (("gpu_sku", "TEXT"), ("gpu_driver", "TEXT"), ("lost_s", "REAL NOT NULL DEFAULT 0")):
            if col not in have:
                self.conn.execute(f"ALTER TABLE runs ADD COLUMN {col} {decl}")

    # --- integrity ------------------------------------------------------------------------
    def _rows(self, table: str) -> dict[str, tuple]:
        key, cols, where = TRACKED[table]
        cur = self.conn.execute(f"SELECT {key}, {', '.join(cols)} FROM {table} WHERE {where}")
        return {r[0]: tuple(r[1:]) for r in cur.fetchall()}

    def _expect(self, table: str, key: str, values: tuple | None) -> None:
        if self.expected is not None:
            if values is None:
                self.expected[table].pop(key, None)
            else:
                self.expected[table][key] = values

    def track_own_writes(self) -> None:
        """From now on remember what this connection writes to the decision-making rows (TRACKED), starting
        from what the database holds now (trusted: nothing else runs yet)."""
        self.expected = {t: self._rows(t) for t in TRACKED}

    def verify_own_writes(self) -> list[str]:
        """Rows of TRACKED changed by another writer since this one wrote them (a candidate with the same
        file permissions as the driver can open the database): put back what this driver wrote, requeue
        finished runs it never recorded, drop triggers and views (pgolf has none). One line per finding."""
        if self.expected is None:
            return []
        found = []
        with self.transaction() as conn:
            for kind, name in conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view')"
                                           " AND name NOT LIKE 'sqlite_%'").fetchall():
                conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
                found.append(f"store: {kind} {name!r} added (dropped)")
            for table, (key, cols, _) in TRACKED.items():
                now, want = self._rows(table), self.expected[table]
                changed = [k for k in now if k in want and now[k] != want[k]]
                for k in changed:
                    sets = ", ".join(f"{c}=?" for c in cols)
                    conn.execute(f"UPDATE {table} SET {sets} WHERE {key}=?", (*want[k], k))
                if changed:
                    found.append(f"store: {len(changed)} {table} row(s) rewritten ({', '.join(sorted(changed)[:3])}"
                                 f"{', ...' if len(changed) > 3 else ''}; restored)")
                added = [k for k in now if k not in want]
                if added and table == "runs":  # a result the driver never recorded: train it for real
                    conn.executemany("UPDATE runs SET status='queued', val_bpb=NULL, val_loss=NULL, rescore_val_bpb="
                                     "NULL, bytes_total=NULL, flags='[]', error=NULL, finished_at=NULL WHERE id=?",
                                     [(k,) for k in added])
                elif added:
                    conn.executemany(f"DELETE FROM {table} WHERE {key}=?", [(k,) for k in added])
                if added:
                    found.append(f"store: {len(added)} {table} row(s) added by another writer (undone)")
                missing = [k for k in want if k not in now]
                if missing:
                    found.append(f"store: {len(missing)} {table} row(s) deleted ({', '.join(sorted(missing)[:3])})")
            if found:
                self.event("store_tampering", findings=found)
        return found

    # --- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: a driver killed mid-write leaves the previous consistent state."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def query(self, sql: str, params: tuple | dict = ()) -> list[Row]:
        return [_row(r) for r in self.conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: tuple | dict = ()) -> Row | None:
        r = self.conn.execute(sql, params).fetchone()
        return _row(r) if r is not None else None

    def scalar(self, sql: str, params: tuple | dict = ()) -> Any:
        r = self.conn.execute(sql, params).fetchone()
        return None if r is None else r[0]

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    # --- meta -----------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        v = self.scalar("SELECT value FROM meta WHERE key=?", (key,))
        return default if v is None else json.loads(v)

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _json(value)))
        self._expect("meta", key, (_json(value),))

    # --- events ---------------------------------------------------------------------------
    def event(self, kind: str, candidate_id: str | None = None, run_id: str | None = None, **data: Any) -> None:
        self.conn.execute(
            "INSERT INTO events(ts, kind, candidate_id, run_id, data) VALUES (?, ?, ?, ?, ?)",
            (time.time(), kind, candidate_id, run_id, _json(data)),
        )

    def events(self, since_id: int = 0, kind: str | None = None, limit: int = 1000) -> list[Row]:
        if kind:
            return self.query("SELECT * FROM events WHERE id>? AND kind=? ORDER BY id LIMIT ?", (since_id, kind, limit))
        return self.query("SELECT * FROM events WHERE id>? ORDER BY id LIMIT ?", (since_id, limit))

    # --- candidates -----------------------------------------------------------------------
    def add_candidate(self, c: dict[str, Any]) -> bool:
        """Insert a candidate; False when the same id exists (the same idea is never trained twice)."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM candidates WHERE id=?", (c["id"],)).fetchone():
                return False
            conn.execute(
                "INSERT INTO candidates(id, created_at, baseline_hash, track, patch, patch_hash, env, proposer,"
                " rationale, parents, techniques, trial_number, kind, state, reason, estimated_bytes)"
                " VALUES (:id, :created_at, :baseline_hash, :track, :patch, :patch_hash, :env, :proposer,"
                " :rationale, :parents, :techniques, :trial_number, :kind, :state, :reason, :estimated_bytes)",
                {
                    "created_at": time.time(), "rationale": "", "trial_number": None, "kind": "search",
                    "state": "active", "reason": "", "estimated_bytes": None, **c,
                    "env": _json(c.get("env", {})), "parents": _json(list(c.get("parents", ()))),
                    "techniques": _json(list(c.get("techniques", ()))),
                },
            )
            self.event("proposed" if c.get("state", "active") == "active" else "rejected", c["id"],
                       proposer=c["proposer"], reason=c.get("reason", ""))
        self._expect("candidates", c["id"], (c["patch_hash"], _json(c.get("env", {})), c.get("kind", "search"),
                                             c.get("state", "active")))
        return True

    def candidate(self, candidate_id: str) -> Row | None:
        return self.one("SELECT * FROM candidates WHERE id=?", (candidate_id,))

    def candidates(self, state: str | None = None, kind: str | None = None) -> list[Row]:
        sql, args = "SELECT * FROM candidates WHERE 1=1", []
        if state:
            sql += " AND state=?"
            args.append(state)
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        return self.query(sql + " ORDER BY created_at", tuple(args))

    def set_candidate_state(self, candidate_id: str, state: str, reason: str = "") -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE candidates SET state=?, reason=? WHERE id=?", (state, reason, candidate_id))
            self.event(f"candidate_{state}", candidate_id, reason=reason)
        if self.expected is not None and candidate_id in self.expected["candidates"]:
            self._expect("candidates", candidate_id, (*self.expected["candidates"][candidate_id][:3], state))

    # --- runs -----------------------------------------------------------------------------
    def enqueue_run(self, run_id: str, candidate_id: str, rung: str, rung_index: int, seed: int,
                    gpus: int, priority: int = 0) -> bool:
        """Queue a run; False if this candidate already has this rung and seed (never run twice)."""
        with self.transaction() as conn:
            exists = conn.execute("SELECT 1 FROM runs WHERE candidate_id=? AND rung=? AND seed=?",
                                  (candidate_id, rung, seed)).fetchone()
            if exists:
                return False
            conn.execute(
                "INSERT INTO runs(id, candidate_id, rung, rung_index, seed, status, gpus, priority, queued_at, run_dir)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                (run_id, candidate_id, rung, rung_index, seed, gpus, priority, time.time(),
                 str(self.run_dir(run_id))),
            )
            self.event("queued", candidate_id, run_id, rung=rung, seed=seed)
        return True

    def mark_running(self, run_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET status='running', started_at=? WHERE id=?", (time.time(), run_id))
            self.event("started", run_id=run_id)

    def finish_run(self, run_id: str, outcome: dict[str, Any]) -> None:
        """Record a finished run's outcome (a RunOutcome.to_dict()) atomically with its metrics."""
        placement = (outcome.get("result") or {}).get("placement") or {}
        gpu = placement.get("gpu") or {}
        cols = {
            "status": str(outcome["status"]), "val_bpb": outcome.get("val_bpb"), "val_loss": outcome.get("val_loss"),
            "pre_quant_val_bpb": outcome.get("pre_quant_val_bpb"), "rescore_val_bpb": outcome.get("rescore_val_bpb"),
            "bytes_total": outcome.get("bytes_total"), "bytes_code": outcome.get("bytes_code"),
            "bytes_model": outcome.get("bytes_model"), "steps": outcome.get("steps"),
            "train_time_ms": outcome.get("train_time_ms"), "wall_s": outcome.get("wall_s"),
            "flags": _json(list(outcome.get("flags") or [])), "error": outcome.get("error"),
            "finished_at": time.time(), "node": placement.get("node"),
            "gpu_ids": _json(placement.get("gpu_ids") or []), "queue_wait_s": placement.get("queue_wait_s"),
            "gpu_sku": gpu.get("sku"), "gpu_driver": gpu.get("driver"),
        }
        if placement.get("started_at"):
            cols["started_at"] = placement["started_at"]
        with self.transaction() as conn:
            sets = ", ".join(f"{k}=:{k}" for k in cols)
            conn.execute(f"UPDATE runs SET {sets} WHERE id=:id", {**cols, "id": run_id})
            for h in outcome.get("val_history") or []:
                conn.execute(
                    "INSERT OR REPLACE INTO metrics(run_id, step, val_loss, val_bpb, train_time_ms) VALUES (?,?,?,?,?)",
                    (run_id, h.get("step"), h.get("val_loss"), h.get("val_bpb"), h.get("train_time_ms")),
                )
            conn.execute("DELETE FROM progress WHERE run_id=?", (run_id,))
            self.event("finished", run_id=run_id, status=cols["status"], val_bpb=cols["val_bpb"],
                       error=cols["error"])
            kill_point("store.finish_run")
        self._expect("runs", run_id, tuple(cols[c] for c in TRACKED["runs"][1]))

    def update_progress(self, run_id: str, p: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO progress(run_id, step, total, val_bpb, train_loss, train_time_ms, elapsed_s,"
            " updated_at) VALUES (?,?,?,?,?,?,?,?)",
            (run_id, p.get("step"), p.get("total"), p.get("val_bpb"), p.get("train_loss"), p.get("train_time_ms"),
             p.get("elapsed_s"), time.time()),
        )

    def run(self, run_id: str) -> Row | None:
        return self.one("SELECT * FROM runs WHERE id=?", (run_id,))

    def runs(self, status: str | tuple[str, ...] | None = None, candidate_id: str | None = None,
             rung: str | None = None) -> list[Row]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if status:
            statuses = (status,) if isinstance(status, str) else status
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        if candidate_id:
            sql += " AND candidate_id=?"
            args.append(candidate_id)
        if rung:
            sql += " AND rung=?"
            args.append(rung)
        return self.query(sql + " ORDER BY queued_at", tuple(args))

    def reap_orphans(self) -> list[str]:
        """Requeue runs a dead driver left as running: their processes died with it, their folders are wiped."""
        orphans = [r.id for r in self.runs(status="running")]
        with self.transaction() as conn:
            for run_id in orphans:
                conn.execute("UPDATE runs SET status='queued', attempt=attempt+1, started_at=NULL WHERE id=?",
                             (run_id,))
                conn.execute("DELETE FROM progress WHERE run_id=?", (run_id,))
                self.event("reaped", run_id=run_id)
        for run_id in orphans:
            self._expect("runs", run_id, None)
        return orphans

    def requeue(self, run_id: str, reason: str) -> None:
        """Queue a run that came back without a result of its own (its node died, the disk filled, a rerun
        alone). The GPUs it held meanwhile were spent all the same: they go to lost_s, which the ledger counts."""
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET status='queued', attempt=attempt+1, error=?,"
                         " lost_s=lost_s + COALESCE(MAX(0, ? - started_at), 0), started_at=NULL WHERE id=?",
                         (reason, time.time(), run_id))
            self.event("requeued", run_id=run_id, reason=reason)
        self._expect("runs", run_id, None)

    # --- llm ------------------------------------------------------------------------------
    def add_llm_call(self, e: dict[str, Any]) -> None:
        """One agent attempt (an LLM call or a catalog proposal), with its tokens, cost and outcome."""
        keys = ("proposer", "role", "model", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s",
                "outcome", "reason", "patch_hash", "prompt_hash")
        row = {k: e.get(k) for k in keys}
        row.update(prompt_tokens=row["prompt_tokens"] or 0, completion_tokens=row["completion_tokens"] or 0,
                   cost_usd=row["cost_usd"] or 0.0, reason=row["reason"] or "", outcome=row["outcome"] or "unknown")
        extra = {k: v for k, v in e.items() if k not in keys}
        self.conn.execute(
            f"INSERT INTO llm_calls(ts, {', '.join(keys)}, extra) VALUES (?, {', '.join('?' * len(keys))}, ?)",
            (time.time(), *row.values(), _json(extra)),
        )

    # --- judgements -----------------------------------------------------------------------
    def add_judgement(self, candidate_id: str, j: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO judgements(candidate_id, ts, verdict, reason, p_value, t_stat, df, delta_nats,"
                " delta_bpb, n_candidate, n_reference, record_path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (candidate_id, time.time(), j["verdict"], j["reason"], j.get("p_value"), j.get("t_stat"), j.get("df"),
                 j.get("delta_nats"), j.get("delta_bpb"), j.get("n_candidate"), j.get("n_reference"),
                 j.get("record_path")),
            )
            self.event("judged", candidate_id, **{k: v for k, v in j.items() if k != "record_path"})
        self._expect("judgements", candidate_id, (j["verdict"], j.get("record_path")))


def find_store(path: str | Path) -> Path:
    """Accept a search folder, its database, or a store folder holding exactly one search."""
    p = Path(path)
    if p.is_file() and p.name == DB_NAME:
        return p.parent
    if (p / DB_NAME).exists():
        return p
    found = sorted(p.glob(f"*/{DB_NAME}"), key=lambda q: q.stat().st_mtime) if p.is_dir() else []
    if found:
        return found[-1].parent
    raise StoreError(f"no run store under {p}; pass the search folder (e.g. runs/smoke)")
