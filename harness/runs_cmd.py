"""`pgolf runs list` and `pgolf runs show ID`: inspect a search's runs and candidates."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from harness import ledger, views
from harness.errors import StoreError
from harness.store import FINISHED, Store, find_store

SPARK = "▁▂▃▄▅▆▇█"
RUN_STATUSES = ("queued", "running", *FINISHED)
CANDIDATE_STATES = ("active", "rejected", "stopped", "promoted")
STATE_CHOICES = (*RUN_STATUSES, "failed", *CANDIDATE_STATES)


def sparkline(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(7, int((v - lo) / span * 7.999))] for v in vals)


def fmt_bpb(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def fmt_bytes(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _delta(v: float | None, ref: float | None) -> Text:
    if v is None or ref is None:
        return Text("-", style="dim")
    d = v - ref
    return Text(f"{d:+.4f}", style="green" if d < 0 else "red")


def _one_line(text: str | None, limit: int = 80) -> str:
    from harness.dash import one_line

    return one_line(text, limit)


class FitTable:
    """A table that keeps the columns that fit the width it is printed at, at their natural width, in
    priority order (0 first). The last column takes what is left and truncates with an ellipsis, so every
    row stays one line. `columns` are (name, priority, unused, right-justified); `rows` are dicts by name.
    """

    def __init__(self, title: str, columns: list[tuple[str, int, int, bool]], rows: list[dict]):
        self.title, self.columns, self.rows = title, columns, rows

    def _natural(self, name: str) -> int:
        from rich.cells import cell_len

        cells = [r.get(name, "") for r in self.rows]
        return max([cell_len(name)] + [cell_len(c.plain if isinstance(c, Text) else str(c)) for c in cells])

    def table(self, width: int) -> Table:
        natural = {c[0]: self._natural(c[0]) for c in self.columns}
        flex = self.columns[-1][0]  # the last column (notes) shrinks with an ellipsis
        kept, used = {flex}, min(natural[flex], 30)
        for name, *_ in sorted(self.columns[:-1], key=lambda c: c[1]):
            if used + natural[name] + 2 <= width or len(kept) == 1:
                kept.add(name)
                used += natural[name] + 2
        t = Table(title=self.title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False,
                  expand=True)
        for name, _, _, right in (c for c in self.columns if c[0] in kept):
            t.add_column(name, justify="right" if right else "left", no_wrap=True, overflow="ellipsis",
                         ratio=1 if name == flex else None, min_width=None if name == flex else natural[name])
        for row in self.rows:
            t.add_row(*(row.get(c[0], "") for c in self.columns if c[0] in kept))
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def _byte_cap(store: Store) -> int | None:
    from harness.dash import _track

    cfg = store.get_meta("config") or {}
    track = _track(cfg["track"]) if isinstance(cfg.get("track"), str) else None
    return track.byte_cap if track else None


def _reference_ids(store: Store) -> list[str]:
    return [r.any_id for r in views.candidate_summary(store) if r.kind == "reference"]


# --- runs list ----------------------------------------------------------------------------------
def runs_table(store: Store, status: str | None = None, rung: str | None = None, flagged: bool = False,
               top: int | None = None, byte_cap: int | None = None) -> FitTable:
    """Runs filtered by state (a run status, 'failed', or a candidate state), rung and flags; `top` keeps the
    N best finished runs, highest rung first (the leaderboard's order)."""
    sql = "SELECT r.*, c.proposer, c.state AS cstate, c.kind FROM runs r JOIN candidates c ON c.id=r.candidate_id" \
          " WHERE 1=1"
    args: list = []
    if status in RUN_STATUSES:
        sql += " AND r.status=?"
        args.append(status)
    elif status == "failed":
        sql += f" AND r.status IN ({','.join('?' * len(views.FAILED))})"
        args += views.FAILED
    elif status in CANDIDATE_STATES:
        sql += " AND c.state=?"
        args.append(status)
    if rung:
        sql += " AND r.rung=?"
        args.append(rung)
    if flagged:
        sql += " AND (r.flags != '[]'" + (" OR r.bytes_total > ?)" if byte_cap else ")")
        args += [byte_cap] if byte_cap else []
    if top:
        sql += " AND r.status='ok' AND r.val_bpb IS NOT NULL ORDER BY r.rung_index DESC, r.val_bpb LIMIT ?"
        args.append(int(top))
    else:
        sql += " ORDER BY r.queued_at"
    refs = views.reference_scores(store, _reference_ids(store))
    title = f"runs in {store.root}" + "".join(f" · {k} {v}" for k, v in
                                              (("state", status), ("rung", rung), ("top", top)) if v)
    rows = []
    costs, price = ledger.run_costs(store), ledger.price_per_gpu_hour(store)
    for r in store.query(sql, tuple(args)):
        flags = list(r.flags or [])
        if byte_cap and r.bytes_total and r.bytes_total > byte_cap:
            flags.append("over_cap")
        gh = costs.get(r.id, 0.0)
        style = {"ok": "green", "running": "cyan", "queued": "dim", "cancelled": "yellow"}.get(r.status, "red")
        ref = refs.get(r.rung, {}).get("val_bpb") if r.kind != "reference" else None
        rows.append({
            "run": r.id, "proposer": "baseline" if r.kind == "reference" else r.proposer,
            "status": Text(r.status, style=style), "val_bpb": fmt_bpb(r.val_bpb), "Δbpb": _delta(r.val_bpb, ref),
            "bytes": Text(fmt_bytes(r.bytes_total), style="red" if "over_cap" in flags else ""),
            "wall s": "-" if r.wall_s is None else f"{r.wall_s:.0f}",
            "GPU-h": f"{gh:.2f}" if r.gpus else "-", "$": f"{gh * price:,.2f}" if r.gpus else "-",
            "gpu": r.data.get("gpu_sku") or "-",
            "flags / error": Text(", ".join(flags), style="bold red") if flags else Text(_one_line(r.error), "red"),
        })
    columns = [("run", 0, 25, False), ("proposer", 4, 12, False), ("status", 1, 11, False),
               ("val_bpb", 0, 7, True), ("Δbpb", 2, 7, True), ("bytes", 3, 10, True), ("wall s", 5, 6, True),
               ("GPU-h", 5, 6, True), *([("$", 4, 7, True)] if price else []), ("gpu", 6, 10, False),
               ("flags / error", 1, 14, False)]
    return FitTable(title + (" · flagged" if flagged else ""), columns, rows)


def rejected_table(store: Store) -> Table:
    """Rejected candidates never run: their ids, proposers and the pre-flight reasons."""
    t = Table(title=f"rejected candidates in {store.root} (never run)", header_style="bold")
    for col in ("candidate", "proposer", "reason"):
        t.add_column(col, no_wrap=col == "candidate")
    for r in store.query("SELECT id, proposer, reason FROM candidates WHERE state='rejected' ORDER BY created_at"):
        t.add_row(r.id, r.proposer, Text(r.reason, style="red"))
    return t


# --- runs show ------------------------------------------------------------------------------------
def resolve(store: Store, ident: str) -> tuple[object | None, object]:
    """(run or None, candidate) for a run id, a candidate id, or a unique prefix of either."""
    run = store.run(ident)
    cand = store.candidate(run.candidate_id if run else ident)
    if cand is not None:
        return run, cand
    matches = store.query("SELECT id FROM runs WHERE id LIKE ? UNION SELECT id FROM candidates WHERE id LIKE ?"
                          " LIMIT 6", (f"{ident}%", f"{ident}%"))
    ids = [m.id for m in matches]
    cands = {i.split("-")[0] for i in ids}
    if len(ids) == 1 or (len(cands) == 1 and cands <= set(ids)):
        target = ids[0] if len(ids) == 1 else cands.pop()
        return resolve(store, target)
    if not ids:
        raise StoreError(f"no run or candidate '{ident}' in {store.root}; see pgolf runs list")
    raise StoreError(f"'{ident}' matches several: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''};"
                     " give more of the id")


def _label(c) -> str:
    if c.kind == "reference":
        return "baseline"
    return "+".join(c.techniques) or " ".join(f"{k}={v}" for k, v in sorted(c.env.items())) or "(no change)"


def _lineage(store: Store, cand) -> RenderableType:
    """The parents this candidate came from (and candidates derived from it), with their best results."""
    t = Table(box=None, header_style="bold", padding=(0, 2, 0, 0))
    for col in ("", "candidate", "proposer", "what", "best rung", "val_bpb", "state"):
        t.add_column(col)
    children = store.query("SELECT id FROM candidates WHERE parents LIKE ?", (f'%"{cand.id}"%',))
    rows = [("parent", p) for p in cand.parents] + [("derived", c.id) for c in children]
    if not rows:
        return Text("no parents: proposed from the baseline", style="dim")
    for rel, cid in rows:
        c = store.candidate(cid)
        if c is None:
            t.add_row(rel, cid, "-", Text("not in this store", style="dim"), "-", "-", "-")
            continue
        best = store.one("SELECT rung, AVG(val_bpb) AS v FROM runs WHERE candidate_id=? AND status='ok'"
                         " AND val_bpb IS NOT NULL GROUP BY rung_index ORDER BY rung_index DESC LIMIT 1", (cid,))
        t.add_row(rel, cid, c.proposer, _label(c), best.rung if best else "-", fmt_bpb(best.v if best else None),
                  c.state)
    return t


def _seed_table(store: Store, cand, refs: dict, byte_cap: int | None) -> FitTable:
    """Every run of the candidate (the run id names its rung and seed) with deltas vs the baseline there."""
    rows = []
    for r in store.runs(candidate_id=cand.id):
        curve = [m.val_bpb for m in store.query("SELECT val_bpb FROM metrics WHERE run_id=? ORDER BY step", (r.id,))]
        ref = refs.get(r.rung) if cand.kind != "reference" else None
        room = byte_cap - r.bytes_total if byte_cap and r.bytes_total is not None else None
        flags = ", ".join([*r.flags, *(["over_cap"] if room is not None and room < 0 else [])])
        style = {"ok": "green", "running": "cyan", "queued": "dim", "cancelled": "yellow"}.get(r.status, "red")
        rows.append({
            "run": r.id, "status": Text(r.status, style=style), "val_bpb": fmt_bpb(r.val_bpb),
            "Δbpb": _delta(r.val_bpb, ref and ref["val_bpb"]), "val_loss": fmt_bpb(r.val_loss),
            "Δnats": _delta(r.val_loss, ref and ref["val_loss"]), "bytes": fmt_bytes(r.bytes_total),
            "headroom": Text(fmt_bytes(room), style="red" if room is not None and room < 0 else ""),
            "steps": str(r.steps or "-"), "wall s": "-" if r.wall_s is None else f"{r.wall_s:.0f}",
            "gpu": f"{r.data.get('gpu_sku') or '-'}" + (f" ×{r.gpus}" if r.gpus else ""),
            "curve": Text(sparkline(curve), style="cyan"),
            "flags / error": Text(flags or _one_line(r.error), style="red"),
        })
    columns = [("run", 0, 25, False), ("status", 1, 8, False), ("val_bpb", 0, 7, True), ("Δbpb", 1, 7, True),
               ("val_loss", 5, 8, True), ("Δnats", 2, 7, True), ("bytes", 3, 10, True), ("headroom", 4, 9, True),
               ("steps", 6, 6, True), ("wall s", 6, 6, True), ("gpu", 6, 10, False), ("curve", 5, 8, False),
               ("flags / error", 2, 12, False)]
    return FitTable(f"runs of {cand.id}", columns, rows)


def _rung_summary(store: Store, cand, refs: dict) -> Text:
    t = Text()
    for r in store.query("SELECT rung, COUNT(*) AS n, AVG(val_bpb) AS m, AVG(val_bpb*val_bpb) AS m2,"
                         " AVG(val_loss) AS loss FROM runs WHERE candidate_id=? AND status='ok' AND val_bpb IS NOT NULL"
                         " GROUP BY rung_index ORDER BY rung_index", (cand.id,)):
        std = views.std_from_moments(r.n, r.m, r.m2)
        t.append(f"{r.rung}: {r.n} seed{'s' * (r.n != 1)}, val_bpb {r.m:.4f}" + (f" ± {std:.4f}" if r.n > 1 else ""))
        ref = refs.get(r.rung)
        if ref and cand.kind != "reference":
            t.append(f", Δ {r.m - ref['val_bpb']:+.4f} bpb", style="green" if r.m < ref["val_bpb"] else "red")
            if r.loss is not None and ref["val_loss"] is not None:
                t.append(f" / {r.loss - ref['val_loss']:+.4f} nats")
            t.append(f" vs the baseline ({ref['n']} seed{'s' * (ref['n'] != 1)})", style="dim")
        t.append("\n")
    return t if t.plain else Text("no finished run yet", style="dim")


def _curve(store: Store, run) -> RenderableType:
    rows = store.query("SELECT step, val_loss, val_bpb, train_time_ms FROM metrics WHERE run_id=? ORDER BY step",
                       (run.id,))
    live = store.one("SELECT step, total, val_bpb, elapsed_s FROM progress WHERE run_id=?", (run.id,))
    if not rows and live is None:
        return Text(f"no validation points recorded for {run.id}", style="dim")
    t = Table(box=None, header_style="bold", padding=(0, 2, 0, 0))
    for col in ("step", "val_loss", "val_bpb", "train_time"):
        t.add_column(col, justify="right")
    shown = rows if len(rows) <= 12 else rows[:6] + rows[-6:]
    for m in shown:
        t.add_row(str(m.step), fmt_bpb(m.val_loss), fmt_bpb(m.val_bpb),
                  "-" if m.train_time_ms is None else f"{m.train_time_ms / 1000:.1f}s")
    if live is not None:
        t.add_row(f"{live.step}/{live.total or '?'}", "-", fmt_bpb(live.val_bpb),
                  Text(f"live, {live.elapsed_s or 0:.0f}s", style="cyan"))
    line = sparkline([m.val_bpb for m in rows] + ([live.val_bpb] if live is not None else []))
    return Group(Text(line, style="cyan"), t)


def _flags(store: Store, cand, byte_cap: int | None) -> RenderableType:
    lines = Text()
    for r in store.query("SELECT id, status, flags, bytes_total, error FROM runs WHERE candidate_id=?"
                         " AND (flags != '[]' OR status NOT IN ('ok', 'queued', 'running')"
                         + (" OR bytes_total > ?)" if byte_cap else ")"), (cand.id, *([byte_cap] if byte_cap else []))):
        for f in r.flags:
            blocking = f in views.BLOCKING_FLAGS
            lines.append(f"{r.id}: {f}" + (" (blocks promotion)" if blocking else "") + "\n",
                         style="bold red" if blocking else "yellow")
        if byte_cap and r.bytes_total and r.bytes_total > byte_cap:
            lines.append(f"{r.id}: over_cap, {r.bytes_total:,} B > {byte_cap:,} B (blocks promotion)\n",
                         style="bold red")
        if r.status not in ("ok", "queued", "running"):
            lines.append(f"{r.id}: {r.status}: {_one_line(r.error, 200)}\n", style="red")
    j = store.one("SELECT * FROM judgements WHERE candidate_id=?", (cand.id,))
    if j:
        p = "-" if j.p_value is None else f"{j.p_value:.4g}"
        d = "-" if j.delta_nats is None else f"{j.delta_nats:+.4f}"
        lines.append(f"judgement: {j.verdict} (p {p}, Δ {d} nats, {j.n_candidate} vs {j.n_reference} seeds): "
                     f"{j.reason}\n", style="bold green" if j.verdict == "keep" else "")
        if j.record_path:
            lines.append(f"record: {j.record_path}\n", style="green")
    if cand.state == "rejected":
        lines.append(f"rejected before running: {cand.reason}\n", style="red")
    return lines if lines.plain else Text("no flags", style="dim")


def _log_tail(run, n: int = 15) -> RenderableType:
    rd = Path(run.run_dir)
    candidates = [rd / "train.log", *sorted(rd.glob("logs/*.txt")), *sorted(rd.glob("*.log"))]
    log = next((p for p in candidates if p.is_file()), None)
    if log is None:
        return Panel(Text(f"no log in {rd}", style="dim"), title=f"log tail · {run.id}")
    tail = log.read_text(errors="replace").splitlines()[-n:]
    return Panel(Text("\n".join(tail)), title=f"log tail · {log}")


def show(store: Store, ident: str) -> Group:
    """Everything about a run or a candidate: diff, env, per-seed results, curve, flags, log tail, lineage."""
    run, cand = resolve(store, ident)
    byte_cap = _byte_cap(store)
    refs = views.reference_scores(store, _reference_ids(store))
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("candidate", f"{cand.id} ({cand.kind})")
    head.add_row("proposer", cand.proposer)
    head.add_row("state", Text(f"{cand.state} {cand.reason}".strip(),
                               style={"promoted": "bold green", "rejected": "red"}.get(cand.state, "")))
    head.add_row("proposed", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cand.created_at)))
    head.add_row("techniques", ", ".join(cand.techniques) or "-")
    head.add_row("rationale", cand.rationale or "-")
    head.add_row("results", _rung_summary(store, cand, refs))
    price = ledger.price_per_gpu_hour(store)
    head.add_row("cost", ledger.fmt_cost(ledger.candidate_costs(store).get(cand.id, 0.0), price)
                 + ("" if price else " (no budget.price_per_gpu_hour in the config: no money)"))
    note = ledger.candidate_sku_note(store, cand.id, _reference_ids(store))
    if note:
        head.add_row("GPUs", Text(note, style="yellow"))
    parts: list[RenderableType] = [Panel(head, title=f"candidate {cand.id}" + (f" · run {run.id}" if run else ""))]
    env = Table(box=None, header_style="bold", padding=(0, 2, 0, 0))
    env.add_column("env override")
    env.add_column("value")
    for k, v in sorted(cand.env.items()):
        env.add_row(k, str(v))
    parts.append(Panel(env if cand.env else Text("none: the track's defaults", style="dim"), title="env overrides"))
    parts.append(Panel(Syntax(cand.patch, "diff", theme="ansi_dark", word_wrap=True) if cand.patch else
                       Text("no code change", style="dim"), title="diff vs the baseline"))
    parts.append(Panel(_lineage(store, cand), title="lineage"))
    parts.append(_seed_table(store, cand, refs, byte_cap))
    # Without a run id: the run in flight if any (its live curve), else the best-evidence finished one.
    target = run or store.one("SELECT * FROM runs WHERE candidate_id=? ORDER BY (status='running') DESC,"
                              " (status='ok') DESC, rung_index DESC, finished_at DESC LIMIT 1", (cand.id,))
    parts.append(Panel(_flags(store, cand, byte_cap), title="audit flags and judgement"))
    if target is not None:
        parts.append(Panel(_curve(store, target), title=f"val curve · {target.id}"))
        parts.append(_log_tail(target))
    return Group(*parts)


# --- CLI ----------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    state = args.state or args.status
    if state and state not in STATE_CHOICES:
        raise StoreError(f"unknown state '{state}'; allowed: {', '.join(STATE_CHOICES)}")
    store = Store(find_store(args.store), readonly=True)
    console = Console()
    if args.rung:
        rungs = [r.rung for r in store.query("SELECT DISTINCT rung FROM runs")]
        if args.rung not in rungs:
            raise StoreError(f"no runs at rung '{args.rung}' in {store.root}; rungs here: {', '.join(rungs) or 'none'}")
    if state == "rejected":
        console.print(rejected_table(store))
        return 0
    table = runs_table(store, state, args.rung, args.flagged, args.top, byte_cap=_byte_cap(store))
    console.print(table if table.rows else Text(f"no runs match ({table.title})", style="yellow"))
    price = ledger.price_per_gpu_hour(store)
    console.print(f"spent: {ledger.fmt_cost(ledger.gpu_hours(store), price)}"
                  + (f" at ${price:g}/GPU-h" if price else " (set budget.price_per_gpu_hour for money)"))
    note = ledger.sku_note(ledger.skus(store))
    if note:
        console.print(Text(note, style="yellow"))
    board = views.standings(store, _byte_cap(store))
    if board:
        best = board[0]
        console.print(f"best: {best.candidate_id} at {best.rung} val_bpb {best.val_bpb:.4f} over {best.seeds} "
                      f"seed{'s' * (best.seeds != 1)} ({best.proposer})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = Store(find_store(args.store), readonly=True)
    Console().print(show(store, args.id))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list and inspect runs")
    rs = p.add_subparsers(dest="runs_command", required=True)
    lp = rs.add_parser("list", help="a table of runs")
    lp.add_argument("store", nargs="?", default="runs", help="search folder (default: the newest under runs/)")
    lp.add_argument("--state", help=f"a run status, 'failed', or a candidate state: {', '.join(STATE_CHOICES)}")
    lp.add_argument("--status", help=argparse.SUPPRESS)  # the old name of --state
    lp.add_argument("--rung", help="only runs at this rung")
    lp.add_argument("--flagged", action="store_true", help="only runs with audit or measurement flags, or over the cap")
    lp.add_argument("--top", type=int, metavar="N", help="the N best finished runs, highest rung first")
    lp.set_defaults(func=cmd_list)
    sp = rs.add_parser("show", help="one run or candidate in full (an id or a unique prefix)")
    sp.add_argument("id")
    sp.add_argument("store", nargs="?", default="runs")
    sp.set_defaults(func=cmd_show)
