"""`pgolf dash`: a live view of a search, read from its run store only.

`load_view(store)` runs a bounded set of queries inside one read snapshot and returns a frozen
`DashView`; `render(view, width, height)` is a pure function of that view. The live loop calls
both about once a second, so the dashboard works from another terminal (or over SSH) while a
search runs, and on a finished search. `--once` prints a single frame; `--demo` shows a fake store.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from harness import views
from harness.store import Store, find_store

SPARK = "▁▂▃▄▅▆▇█"
BOARD_LIMIT = 40  # leaderboard rows loaded per frame; no terminal shows more
FAILURE_LIMIT = 12
CURVE_BUCKETS = 120
WIDE = 130  # at this width and above the side panels move to a right-hand column


# --- formatting helpers -------------------------------------------------------------------------
def fmt_duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def fmt_si(n: float | None, digits: int = 3) -> str:
    """Bytes or tokens to `digits` significant figures: 15.9M, 312k, 980 (15.86M with digits=4)."""
    if n is None:
        return "-"
    a = abs(n)
    sign = "-" if n < 0 else ""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= div:
            v = a / div
            decimals = max(0, digits - len(str(int(v))))
            return f"{sign}{v:.{decimals}f}{unit}"
    return f"{sign}{a:.0f}"


def fmt_signed(v: float | None, digits: int = 4) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def one_line(text: str | None, limit: int = 200) -> str:
    """The informative line of an error: a traceback's last line, otherwise the first non-empty one."""
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line[:limit]


def spark(values: list[float | None] | tuple[float | None, ...], width: int) -> str:
    """A best-so-far curve squeezed into `width` cells (min over each cell); gaps before data are blank."""
    if not values or width <= 0:
        return ""
    n = len(values)
    cells: list[float | None] = []
    for i in range(min(width, n)):
        chunk = [v for v in values[i * n // min(width, n):(i + 1) * n // min(width, n)] if v is not None]
        cells.append(min(chunk) if chunk else None)
    vals = [v for v in cells if v is not None]
    if not vals:
        return " " * len(cells)
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(" " if v is None else SPARK[min(7, int((v - lo) / span * 7.999))] for v in cells)


# --- the view -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoardRow:
    """One leaderboard line: a candidate's evidence at the highest rung it finished."""

    rank: int
    candidate_id: str
    label: str
    proposer: str
    kind: str
    state: str
    rung: str
    seeds: int
    val_bpb: float
    val_bpb_std: float
    val_loss: float | None
    bytes_total: int | None
    byte_cap: int | None
    delta_bpb: float | None
    delta_nats: float | None
    p_value: float | None
    flags: tuple[str, ...]

    @property
    def headroom(self) -> int | None:
        if self.bytes_total is None or self.byte_cap is None:
            return None
        return self.byte_cap - self.bytes_total

    def bpb_str(self, compact: bool = False) -> str:
        if self.seeds < 2:
            return f"{self.val_bpb:.4f}"
        std = f"{self.val_bpb_std:.4f}"
        return f"{self.val_bpb:.4f} ±{std[1:] if compact and std.startswith('0.') else std}"

    @property
    def flags_str(self) -> str:
        return ",".join(self.flags)

    @property
    def bad(self) -> bool:
        return "over_cap" in self.flags or any(f in views.BLOCKING_FLAGS for f in self.flags)


@dataclass(frozen=True)
class Job:
    """A run in flight and its latest progress report."""

    run_id: str
    candidate_id: str
    proposer: str
    rung: str
    seed: int
    gpus: int
    node: str | None
    gpu_ids: tuple[int, ...]
    step: int | None
    total: int | None
    val_bpb: float | None
    elapsed_s: float
    cap_s: float | None
    attempt: int

    @property
    def fraction(self) -> float:
        parts = []
        if self.step is not None and self.total:
            parts.append(self.step / self.total)
        if self.cap_s:
            parts.append(self.elapsed_s / self.cap_s)
        return min(1.0, max(parts, default=0.0))

    @property
    def where(self) -> str:
        gpus = "cpu" if self.gpus == 0 else f"{self.gpus}gpu"
        if self.gpu_ids:
            gpus = "gpu" + ",".join(str(g) for g in self.gpu_ids)
        return f"{self.node}:{gpus}" if self.node else gpus

    @property
    def step_str(self) -> str:
        if self.step is None:
            return "starting"
        return f"{self.step}/{self.total}" if self.total else str(self.step)

    @property
    def time_str(self) -> str:
        return fmt_duration(self.elapsed_s) + (f"/{fmt_duration(self.cap_s)}" if self.cap_s else "")

    @property
    def over_cap(self) -> bool:
        return bool(self.cap_s) and self.elapsed_s > self.cap_s


@dataclass(frozen=True)
class Failure:
    ts: float | None
    what: str  # run | candidate (a pre-flight rejection)
    ident: str
    rung: str
    status: str
    reason: str
    proposer: str

    @property
    def candidate_short(self) -> str:
        return self.ident.split("-")[0] if self.what == "run" else self.ident


@dataclass(frozen=True)
class DashView:
    """Everything one frame shows; built by load_view(), rendered by render()."""

    store_path: str
    now: float
    version: int = 0  # the store's newest event id when the slow parts were read
    loaded_at: float = 0.0
    name: str = ""
    track: str = ""
    byte_cap: int | None = None
    rungs: tuple[str, ...] = ()
    started_at: float | None = None
    finished: dict | None = None  # meta "summary" once the search has ended
    promotion: dict | None = None
    counts: dict[str, int] = field(default_factory=dict)  # runs per status
    queue: tuple[tuple[str, int], ...] = ()  # queued runs per rung, ladder order
    candidates: dict[str, int] = field(default_factory=dict)  # candidates per state
    board: tuple[BoardRow, ...] = ()
    ranked: int = 0
    baseline: dict[str, dict] = field(default_factory=dict)  # rung -> reference mean val_bpb / val_loss
    jobs: tuple[Job, ...] = ()
    cluster: dict = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()
    proposers: dict[str, dict] = field(default_factory=dict)
    llm: dict = field(default_factory=dict)
    llm_budget_usd: float | None = None
    curve_rung: str = ""
    curve: tuple[float | None, ...] = ()
    curve_span_s: float = 0.0
    gpu_hours: float = 0.0
    load_ms: float = 0.0
    error: str = ""

    @property
    def n_runs(self) -> int:
        return sum(self.counts.values())

    @property
    def n_failed(self) -> int:
        return sum(self.counts.get(s, 0) for s in views.FAILED)


@functools.lru_cache(maxsize=16)
def _track(name: str):
    from harness.config import load_track
    from harness.errors import ConfigError

    try:
        return load_track(name)
    except (ConfigError, OSError):
        return None


@contextmanager
def snapshot(store: Store) -> Iterator[None]:
    """One read transaction: every query of a frame sees the same committed state of the store."""
    store.conn.execute("BEGIN")
    try:
        yield
    finally:
        store.conn.execute("ROLLBACK")


def load_view(store: Store, now: float | None = None, previous: DashView | None = None) -> DashView:
    """Read one frame's data: a fixed number of queries, each one pass over a table or an index lookup.

    Pass the previous frame's view: when no event was appended since (the store's version is the same),
    only the live parts (progress of runs in flight, cluster, LLM spend, meta) are read again, and the
    rest is reused for up to REUSE_S seconds, so an idle or finished search costs almost nothing per frame.
    """
    t = time.perf_counter()
    now = time.time() if now is None else now
    try:
        with snapshot(store):
            version = views.store_version(store)
            meta = views.meta_values(store, ("config", "started_at", "cluster", "summary", "promotion"))
            reuse = (previous is not None and not previous.error and previous.version == version
                     and previous.store_path == str(store.root) and now - previous.loaded_at < REUSE_S)
            view = previous if reuse else _load(store, now, meta, version)
            view = _replace(view, **_live(store, now, meta))
    except sqlite3.Error as e:
        return DashView(store_path=str(store.root), now=now, error=f"cannot read the store: {e}")
    return _replace(view, load_ms=(time.perf_counter() - t) * 1000)


REUSE_S = 30.0  # refresh the reused parts at least this often (the best-so-far curve's time axis moves)


def _replace(view: DashView, **kw) -> DashView:
    return dataclasses.replace(view, **kw)


def _track_of(meta: dict):
    cfg = meta.get("config") or {}
    return _track(cfg["track"]) if isinstance(cfg.get("track"), str) else None


def _live(store: Store, now: float, meta: dict) -> dict:
    """The parts of a frame that change without an event: progress, cluster, LLM ledger, meta."""
    track = _track_of(meta)
    caps = {r.name: r.time_cap_s for r in track.rungs} if track else {}
    return {"now": now, "jobs": tuple(_job(r, caps, now) for r in views.running_runs(store)),
            "cluster": meta.get("cluster") or {}, "llm": views.llm_spend(store), "finished": meta.get("summary"),
            "promotion": meta.get("promotion"), "started_at": meta.get("started_at")}


def _load(store: Store, now: float, meta: dict, version: int) -> DashView:
    cfg = meta.get("config") or {}
    track = _track_of(meta)
    byte_cap = track.byte_cap if track else None

    counts: dict[str, int] = {}
    queue: dict[str, int] = {}
    ladder: dict[str, int] = {r.name: i for i, r in enumerate(track.rungs)} if track else {}
    for r in views.run_counts(store):
        counts[r.status] = counts.get(r.status, 0) + r.n
        ladder.setdefault(r.rung, r.rung_index)
        if r.status == "queued":
            queue[r.rung] = queue.get(r.rung, 0) + r.n
    rungs = tuple(sorted(ladder, key=ladder.get))

    summary = views.candidate_summary(store)
    baseline = views.reference_scores(store, [r.any_id for r in summary if r.kind == "reference"])
    rows, ranked = views.leaderboard(store, BOARD_LIMIT)
    board = tuple(_board_row(i + 1, r, baseline, byte_cap) for i, r in enumerate(rows))
    fails = tuple(Failure(r["ts"], r["what"], r["id"], r["rung"], r["status"], one_line(r["reason"]),
                          r["proposer"]) for r in views.recent_failures(store, FAILURE_LIMIT))

    started = meta.get("started_at")
    first, last = views.time_span(store)
    t0 = started or first
    t1 = (last if meta.get("summary") else now) or now
    curves = views.best_over_time(store, t0, max(t1, (t0 or 0) + 1), CURVE_BUCKETS) if t0 else {}
    curve_rung = max(curves, key=lambda k: ladder.get(k, -1), default="")

    llm_cfg = cfg.get("llm") or {}
    llm_on = (cfg.get("proposers") or {}).get("llm", 0) > 0
    return DashView(
        store_path=str(store.root), now=now, version=version, loaded_at=now,
        name=cfg.get("name") or store.root.name, track=(track.name if track else cfg.get("track", "")) or "",
        byte_cap=byte_cap, rungs=rungs, counts=counts, queue=tuple((r, queue.get(r, 0)) for r in rungs),
        candidates=views.candidate_counts(store, summary), board=board, ranked=ranked, baseline=baseline,
        failures=fails, proposers=views.proposer_families(store, summary),
        llm_budget_usd=llm_cfg.get("max_cost_usd") if llm_on else None,
        curve_rung=curve_rung, curve=tuple(curves.get(curve_rung, ())),
        curve_span_s=max(0.0, (t1 or now) - (t0 or now)), gpu_hours=views.gpu_hours(store),
    )


def _label(r: dict) -> str:
    if r.get("kind") == "reference":
        return "baseline"
    if r.get("techniques"):
        return "+".join(r["techniques"])
    if r.get("env"):
        return " ".join(f"{k}={v}" for k, v in sorted(r["env"].items()))
    return "(no change)"


def _board_row(rank: int, r: dict, baseline: dict, byte_cap: int | None) -> BoardRow:
    ref = baseline.get(r["rung"])
    flags = set(r["flags"])
    if byte_cap is not None and r["bytes_total"] is not None and r["bytes_total"] > byte_cap:
        flags.add("over_cap")
    d_bpb = d_nats = None
    if ref and r.get("kind") != "reference":
        d_bpb = r["bpb"] - ref["val_bpb"]
        if r["loss"] is not None and ref["val_loss"] is not None:
            d_nats = r["loss"] - ref["val_loss"]
    return BoardRow(
        rank=rank, candidate_id=r["candidate_id"], label=_label(r), proposer=r.get("proposer", ""),
        kind=r.get("kind", ""), state=r.get("state", ""), rung=r["rung"], seeds=r["n"], val_bpb=r["bpb"],
        val_bpb_std=views.std_from_moments(r["n"], r["bpb"], r["bpb2"]), val_loss=r["loss"],
        bytes_total=r["bytes_total"], byte_cap=byte_cap, delta_bpb=d_bpb, delta_nats=d_nats,
        p_value=r.get("p_value"), flags=tuple(sorted(flags)),
    )


def _job(r, caps: dict, now: float) -> Job:
    elapsed = r.elapsed_s if r.elapsed_s is not None else (now - r.started_at if r.started_at else 0.0)
    return Job(run_id=r.id, candidate_id=r.candidate_id, proposer=r.proposer, rung=r.rung, seed=r.seed, gpus=r.gpus,
               node=r.node, gpu_ids=tuple(r.gpu_ids or ()), step=r.step, total=r.total, val_bpb=r.val_bpb,
               elapsed_s=float(elapsed), cap_s=caps.get(r.rung), attempt=r.attempt)


# --- rendering (pure) ---------------------------------------------------------------------------
def _header(v: DashView, width: int) -> Text:
    state = "finished" if v.finished else ("running" if v.counts.get("running") else "idle")
    if v.error:
        state = "error"
    style = {"finished": "bold blue", "running": "bold green", "idle": "bold yellow", "error": "bold red"}[state]
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" pgolf dash ", style="bold reverse")
    t.append(f" {v.name}", style="bold")
    if v.track:
        t.append(f"  track {v.track}")
    if v.byte_cap:
        t.append(f" (cap {v.byte_cap:,} B)", style="dim")
    t.append("  ")
    t.append(state, style=style)
    if v.started_at:
        end = v.now if not v.finished else v.started_at + v.curve_span_s
        t.append(f" {fmt_duration(end - v.started_at)}")
    if v.finished:
        t.append(f" · {v.finished.get('stop_reason') or 'ended'}", style="blue")
    t.append("\n")
    if v.error:
        t.append(" " + v.error, style="red")
        return t
    c = v.counts
    t.append(f" {v.n_runs} runs: ")
    t.append(f"{c.get('running', 0)} running", style="cyan")
    t.append(f", {c.get('queued', 0)} queued, ")
    t.append(f"{c.get('ok', 0)} ok", style="green")
    t.append(", ")
    t.append(f"{v.n_failed} failed", style="red" if v.n_failed else "")
    if c.get("cancelled"):
        t.append(f", {c['cancelled']} pruned")
    if v.gpu_hours:
        t.append(f" · {v.gpu_hours:.1f} GPU-h")
    t.append(f" · {sum(v.candidates.values())} candidates, {v.candidates.get('rejected', 0)} rejected")
    record = (v.finished or {}).get("record") or (v.promotion or {}).get("record")
    if record:
        t.append(f" · record {record}", style="bold green")
    elif v.promotion and v.promotion.get("phase") not in (None, "select", "done"):
        t.append(f" · promotion: {v.promotion['phase']}", style="magenta")
    return t


# Leaderboard columns. Full: every column, exact byte counts. Compact (narrow terminals): seeds and rung share
# one cell (4@full), sizes read 15.86M, and columns drop from the end of the priority list until the rest fit.
_BOARD_ORDER = ("#", "candidate", "rung", "val_bpb", "Δbpb", "Δnats", "bytes", "room", "seeds", "p", "flags")
_COMPACT_PRIORITY = ("#", "candidate", "val_bpb", "Δbpb", "seeds", "bytes", "Δnats", "flags", "p", "room")
_FULL_W = {"#": 3, "candidate": 14, "rung": 6, "val_bpb": 15, "Δbpb": 8, "Δnats": 8, "bytes": 10, "room": 10,
           "seeds": 2, "p": 6, "flags": 8}
_SMALL_W = {**_FULL_W, "#": 2, "candidate": 9, "val_bpb": 13, "Δbpb": 7, "Δnats": 7, "bytes": 6, "room": 6,
            "seeds": 8, "flags": 9}


def board_columns(width: int) -> tuple[list[str], bool]:
    """Leaderboard columns that fit `width` cells, and whether they are the compact ones."""
    need = lambda cols, w: sum(w[c] + 1 for c in cols)  # noqa: E731  (one cell of padding per column)
    if need(_BOARD_ORDER, _FULL_W) <= width:
        return list(_BOARD_ORDER), False
    cols = list(_COMPACT_PRIORITY)
    while need(cols, _SMALL_W) > width and len(cols) > 3:
        cols.pop()
    return [c for c in _BOARD_ORDER if c in cols], True


def _delta_text(d: float | None) -> Text:
    return Text(fmt_signed(d, 4), style="" if d is None else ("green" if d < 0 else "red"))


def _num(n: int | None, small: bool, digits: int = 4) -> str:
    return fmt_si(n, digits) if small else ("-" if n is None else f"{n:,}")


def board_table(v: DashView, width: int, rows: int) -> RenderableType:
    if not v.board:
        return Text("no finished runs yet", style="dim")
    cols, small = board_columns(width)
    t = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", expand=True, show_edge=False)
    heads = {"#": "#", "candidate": "candidate", "rung": "rung", "val_bpb": "val_bpb ±std", "Δbpb": "Δbpb",
             "Δnats": "Δnats", "bytes": "bytes", "room": "headroom", "seeds": "n@rung" if small else "n", "p": "p",
             "flags": "flags"}
    for c in cols:
        left = c in ("candidate", "rung", "flags", "seeds")
        t.add_column(heads[c], justify="left" if left else "right", no_wrap=True, overflow="ellipsis",
                     ratio={"candidate": 1 if small else 3, "flags": 1}.get(c),
                     min_width=_SMALL_W[c] if c in ("candidate", "flags") else None)
    for b in v.board[:max(0, rows)]:
        cells = {
            "#": Text(str(b.rank)),
            "candidate": _cand_text(b, small),
            "rung": Text(b.rung),
            "val_bpb": Text(b.bpb_str(small), style="bold" if b.rank == 1 else ""),
            "Δbpb": _delta_text(b.delta_bpb),
            "Δnats": _delta_text(b.delta_nats),
            "bytes": Text(_num(b.bytes_total, small), style="red" if "over_cap" in b.flags else ""),
            "room": Text(_num(b.headroom, small, 3), style="red" if (b.headroom or 0) < 0 else "dim"),
            "seeds": Text(f"{b.seeds}@{b.rung}" if small else str(b.seeds)),
            "p": Text(fmt_p(b.p_value), style="green" if b.p_value is not None and b.p_value < 0.01 else ""),
            "flags": Text(b.flags_str or ("promoted" if b.state == "promoted" else ""),
                          style="bold red" if b.bad else ("bold green" if b.state == "promoted" else "yellow")),
        }
        t.add_row(*(cells[c] for c in cols), style="dim" if b.kind == "reference" else None)
    return t


def _cand_text(b: BoardRow, small: bool) -> Text:
    if b.kind == "reference":
        return Text("baseline", style="italic")
    t = Text(b.candidate_id[:8] if small else b.candidate_id, style="bold green" if b.state == "promoted" else "")
    t.append(" " + b.label, style="dim")
    return t


def jobs_table(v: DashView, width: int, rows: int) -> RenderableType:
    if not v.jobs:
        return Text("no runs in flight" + (" (search finished)" if v.finished else ""), style="dim")
    narrow = width < 70
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(no_wrap=True, overflow="ellipsis", min_width=12, max_width=22)  # run: candidate + seed
    t.add_column(no_wrap=True)  # rung
    if not narrow:
        t.add_column(no_wrap=True, overflow="ellipsis", max_width=16, style="dim")  # node / GPUs
    t.add_column(ratio=1, min_width=6)  # progress bar
    t.add_column(no_wrap=True, justify="right")  # step
    t.add_column(no_wrap=True, justify="right")  # elapsed / cap
    t.add_column(no_wrap=True, justify="right")  # latest val_bpb
    shown = list(v.jobs[:rows])
    if len(v.jobs) > rows >= 2:
        shown = shown[: rows - 1]
    for j in shown:
        run = Text(f"{j.candidate_id} s{j.seed}")
        if j.attempt:
            run.append(f" #{j.attempt + 1}", style="yellow")
        bar = ProgressBar(total=1.0, completed=j.fraction, complete_style="red" if j.over_cap else "cyan",
                          finished_style="red" if j.over_cap else "green")
        t.add_row(run, Text(j.rung), *([Text(j.where)] if not narrow else []), bar, Text(j.step_str),
                  Text(j.time_str, style="red" if j.over_cap else ""),
                  Text("-" if j.val_bpb is None else f"{j.val_bpb:.4f}"))
    if len(v.jobs) > len(shown):
        t.add_row(Text(f"… {len(v.jobs) - len(shown)} more", style="dim"))
    return t


def _cluster_text(v: DashView, width: int) -> RenderableType:
    c = v.cluster
    if not c:
        return Text("no report yet", style="dim")
    frac = float(c.get("busy_fraction") or 0.0)
    bits = [f"{frac:.0%} busy"]
    if c.get("gpus"):
        bits.append(f"{c.get('gpus_busy', 0):g}/{c['gpus']:g} GPUs")
    elif c.get("cpus"):
        bits.append(f"{c['cpus']:g} CPUs")
    age = v.now - c["updated_at"] if c.get("updated_at") else None
    if age is not None and age > 30 and not v.finished:
        bits.append(f"stale {fmt_duration(age)}")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=max(5, min(20, width // 4)))
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(ProgressBar(total=1.0, completed=min(1.0, frac)), Text(" · ".join(bits)))
    return grid


def _queue_text(v: DashView) -> Text:
    if not any(n for _, n in v.queue):
        return Text("empty", style="dim")
    t = Text(no_wrap=True, overflow="ellipsis")
    for i, (rung, n) in enumerate(v.queue):
        t.append(" · " if i else "")
        t.append(f"{rung} ")
        t.append(str(n), style="bold" if n else "dim")
    return t


PROPOSER_LEGEND = "proposed→trainable→advanced→promoted"


def _proposers_text(v: DashView) -> Text:
    if not v.proposers:
        return Text("none yet", style="dim")
    t = Text(no_wrap=True, overflow="ellipsis")
    for i, (name, d) in enumerate(sorted(v.proposers.items())):
        t.append(" · " if i else "")
        t.append(name, style="bold")
        t.append(f" {d['proposed']}→{d['trainable']}→{d['advanced']}→")
        t.append(str(d["promoted"]), style="bold green" if d["promoted"] else "")
    return t


def proposers_table(v: DashView) -> RenderableType:
    if not v.proposers:
        return Text("none yet", style="dim")
    t = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", show_edge=False)
    for c in ("proposer", "proposed", "trainable", "advanced", "promoted"):
        t.add_column(c, justify="left" if c == "proposer" else "right", no_wrap=True)
    for name, d in sorted(v.proposers.items()):
        t.add_row(name, str(d["proposed"]), str(d["trainable"]), str(d["advanced"]),
                  Text(str(d["promoted"]), style="bold green" if d["promoted"] else ""))
    return t


def _llm_text(v: DashView) -> Text:
    d = v.llm or {}
    if not d.get("calls"):
        return Text("no calls" + (" (llm proposer off)" if v.llm_budget_usd is None else ""), style="dim")
    tokens = (d.get("prompt_tokens") or 0) + (d.get("completion_tokens") or 0)
    budget = f" of ${v.llm_budget_usd:.0f}" if v.llm_budget_usd else ""
    return Text(f"${d.get('cost_usd', 0):.2f}{budget} · {fmt_si(tokens)} tokens ({fmt_si(d.get('prompt_tokens'))} in,"
                f" {fmt_si(d.get('completion_tokens'))} out) · {d['calls']} calls", no_wrap=True, overflow="ellipsis")


def _best_text(v: DashView, width: int) -> Text:
    """Best val_bpb so far at the highest rung with results, from its first result to now."""
    vals = [x for x in v.curve if x is not None]
    if not vals:
        return Text("no finished runs yet", style="dim")
    ref = v.baseline.get(v.curve_rung)
    tail = f" {vals[-1]:.4f}" + (f" ({vals[-1] - ref['val_bpb']:+.4f})" if ref else "")
    since = f" over {fmt_duration(v.curve_span_s * len(vals) / max(1, len(v.curve)))}"
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{v.curve_rung} ")
    t.append(spark(vals, max(6, width - len(v.curve_rung) - len(tail) - len(since) - 2)), style="cyan")
    t.append(f" {vals[-1]:.4f}", style="bold")
    if ref:
        t.append(f" ({vals[-1] - ref['val_bpb']:+.4f})", style="green" if vals[-1] < ref["val_bpb"] else "red")
    t.append(since, style="dim")
    return t


def _pairs(rows: list[tuple[str, RenderableType]], label_w: int | None = None) -> Table:
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(style="bold", no_wrap=True, min_width=label_w)
    t.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    for label, val in rows:
        t.add_row(label, val)
    return t


def status_narrow(v: DashView, width: int) -> RenderableType:
    """Three lines: queue | cluster, proposers, LLM | best-so-far."""
    half = (width - 1) // 2
    top = Table.grid(padding=(0, 1), expand=True)
    top.add_column(ratio=1)
    top.add_column(ratio=1)
    top.add_row(_pairs([("queue", _queue_text(v))], 9), _pairs([("cluster", _cluster_text(v, half - 8))], 4))
    bottom = Table.grid(padding=(0, 1), expand=True)
    bottom.add_column(ratio=1)
    bottom.add_column(ratio=1)
    bottom.add_row(_pairs([("LLM", _llm_text(v))], 9), _pairs([("best", _best_text(v, half - 5))], 4))
    return Group(top, _pairs([("proposers", _proposers_text(v))], 9), bottom)


def status_wide(v: DashView, width: int) -> RenderableType:
    """Label/value lines, then a proposer table."""
    lines = _pairs([("queue", _queue_text(v)), ("cluster", _cluster_text(v, width - 10)), ("LLM", _llm_text(v)),
                    ("best run", _best_text(v, width - 10))])
    return Group(lines, proposers_table(v))


def failures_table(v: DashView, width: int, rows: int) -> RenderableType:
    if not v.failures:
        return Text("no failures", style="dim")
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(no_wrap=True, style="dim", justify="right")  # age
    t.add_column(no_wrap=True, overflow="ellipsis", max_width=12 if width < 100 else 24)  # what failed
    t.add_column(no_wrap=True, style="red")  # status
    t.add_column(ratio=1, no_wrap=True, overflow="ellipsis")  # one-line reason
    for f in v.failures[:max(0, rows)]:
        ident = f.ident if f.what == "candidate" or width >= 100 else f.candidate_short
        t.add_row(fmt_duration(v.now - f.ts) if f.ts else "-", ident, f.status, f.reason or "-")
    return t


def allocate(total: int, parts: list[tuple[int, int, int]]) -> list[int]:
    """Split `total` lines among parts given as (minimum, wanted, weight): minimums first, then one line at
    a time by weight to parts still below what they want; the first part takes anything left."""
    sizes = [m for m, _, _ in parts]
    spare = total - sum(sizes)
    turn = [i for i, (_, _, w) in enumerate(parts) for _ in range(w)]
    while spare > 0 and any(sizes[i] < parts[i][1] for i in turn):
        for i in turn:
            if spare > 0 and sizes[i] < parts[i][1]:
                sizes[i] += 1
                spare -= 1
    sizes[0] += max(0, spare)
    return sizes


def _panel(body: RenderableType, title: str, subtitle: str = "") -> Panel:
    return Panel(body, title=f"[bold]{title}[/bold]", title_align="left", subtitle=subtitle or None,
                 subtitle_align="right", box=box.ROUNDED, padding=(0, 1))


def render(v: DashView, width: int = 80, height: int = 24) -> Layout:
    """The whole screen for one view, sized to width x height: a pure function of `v`."""
    height = max(height, 6)
    n_board = len(v.board)

    def board_sub(rows: int) -> str:
        return f"{min(n_board, rows)} of {v.ranked} ranked · {v.load_ms:.0f} ms" if width >= 60 else ""

    board_title = "leaderboard" + (" · Δ vs the baseline at the same rung" if width >= 110 else "")
    jobs_title = f"running {len(v.jobs)}"
    fails_title = f"recent failures · {v.n_failed} runs, {v.candidates.get('rejected', 0)} rejected"
    body_h = height - 2
    main = Layout(name="main")
    if width >= WIDE:
        left_w = width * 3 // 5
        right_w = width - left_w
        b_h, j_h = allocate(body_h, [(5, 3 + n_board, 2), (3, 2 + len(v.jobs), 1)])
        status_h = min(body_h - 3, 2 + 4 + 1 + max(1, len(v.proposers)))
        left, right = Layout(name="left", size=left_w), Layout(name="right")
        left.split_column(
            Layout(_panel(board_table(v, left_w - 4, b_h - 3), board_title, board_sub(b_h - 3)), name="board",
                   size=b_h),
            Layout(_panel(jobs_table(v, left_w - 4, j_h - 2), jobs_title), name="jobs", size=j_h))
        right.split_column(
            Layout(_panel(status_wide(v, right_w - 4), "search"), name="status", size=status_h),
            Layout(_panel(failures_table(v, right_w - 4, body_h - status_h - 2), fails_title), name="failures"))
        main.split_row(left, right)
    else:
        # Short terminals keep the most important panels: the leaderboard, then runs, the summary, failures.
        status_h = 2 + 3 if body_h >= 17 else 0
        parts = [(4, 3 + n_board, 2), (3, 2 + len(v.jobs), 1)] if body_h >= 7 + status_h else [(4, body_h, 1)]
        if body_h >= 20:
            parts.append((3, 2 + len(v.failures), 1))
        sizes = allocate(body_h - status_h, parts) + [0, 0, 0]
        b_h, j_h, f_h = sizes[:3]
        regions = [Layout(_panel(board_table(v, width - 4, b_h - 3), board_title, board_sub(b_h - 3)), name="board",
                          size=b_h)]
        if j_h:
            regions.append(Layout(_panel(jobs_table(v, width - 4, j_h - 2), jobs_title), name="jobs", size=j_h))
        if status_h:
            regions.append(Layout(_panel(status_narrow(v, width - 4), "search",
                                         PROPOSER_LEGEND if width >= 60 else ""), name="status", size=status_h))
        if f_h:
            regions.append(Layout(_panel(failures_table(v, width - 4, f_h - 2), fails_title), name="failures",
                                  size=f_h))
        main.split_column(*regions)
    root = Layout(name="root")
    root.split_column(Layout(_header(v, width), name="header", size=2), main)
    return root


def frame_text(v: DashView, width: int = 80, height: int = 24) -> str:
    """One frame as plain text (no colour), exactly `height` lines of at most `width` cells."""
    import io

    console = Console(file=io.StringIO(), width=width, height=height, color_system=None, record=True,
                      legacy_windows=False, force_terminal=False)
    console.print(render(v, width, height))
    return console.export_text()


# --- the live loop ------------------------------------------------------------------------------
@contextmanager
def _keys() -> Iterator[Callable[[], str]]:
    """Non-blocking single-key reads from a terminal (q quits); a no-op reader when stdin is not a tty."""
    if not sys.stdin.isatty():
        yield lambda: ""
        return
    import os
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda: os.read(fd, 1).decode(errors="ignore") if select.select([fd], [], [], 0)[0] else ""
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def live(store: Store, console: Console, interval: float = 1.0, max_frames: int | None = None) -> None:
    """Redraw about once per `interval` seconds until q or Ctrl-C; the alternate screen means no flicker."""
    from rich.live import Live

    frames, view = 0, None
    with _keys() as key, Live(console=console, screen=True, auto_refresh=False, transient=True) as lv:
        while max_frames is None or frames < max_frames:
            start = time.monotonic()
            view = load_view(store, previous=view)
            lv.update(render(view, console.width, console.height), refresh=True)
            frames += 1
            while time.monotonic() - start < interval:
                if key() in ("q", "Q"):
                    return
                time.sleep(0.05)


# --- demo store -----------------------------------------------------------------------------------
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


# --- CLI ------------------------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> tuple[Store, object | None]:
    if args.demo:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="pgolf-demo-")
        writer = Store(tmp.name)
        fill_demo(writer)
        return writer, tmp
    return Store(find_store(args.store), readonly=True), None


def cmd_dash(args: argparse.Namespace) -> int:
    store, tmp = _open(args)
    try:
        console = Console(width=args.width, height=args.height) if (args.width or args.height) else Console()
        if args.once:
            console.print(render(load_view(store), console.width, args.height or console.height))
            return 0
        import threading

        stop = threading.Event()

        def tick() -> None:  # --demo: a writer that moves the fake runs along, as a search would
            writer = Store(store.root)
            while not stop.wait(1.0):
                demo_tick(writer)
            writer.close()

        ticker = threading.Thread(target=tick, daemon=True)
        if args.demo:
            ticker.start()
        try:
            live(Store(store.root, readonly=True) if args.demo else store, console, interval=args.interval)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join(timeout=5)
        return 0
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dash", help="live dashboard of a search (read-only; q or Ctrl-C quits)")
    p.add_argument("store", nargs="?", default="runs", help="search folder (default: the newest under runs/)")
    p.add_argument("--once", action="store_true", help="print one frame and exit (scripts, tests)")
    p.add_argument("--demo", action="store_true", help="show a fake search instead of a store")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--width", type=int, help="frame width for --once (default: the terminal's)")
    p.add_argument("--height", type=int, help="frame height for --once (default: the terminal's)")
    p.set_defaults(func=cmd_dash)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.dash`: the same command without the rest of the CLI."""
    from harness.errors import PgolfError

    parser = argparse.ArgumentParser(prog="pgolf")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dash", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except PgolfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
