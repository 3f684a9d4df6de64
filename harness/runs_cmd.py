"""`pgolf runs list` and `pgolf runs show ID`: inspect a search's runs and candidates."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from harness import views
from harness.errors import StoreError
from harness.store import Store, find_store

SPARK = "▁▂▃▄▅▆▇█"


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


def runs_table(store: Store, status: str | None = None, rung: str | None = None, flagged: bool = False,
               top: int | None = None) -> Table:
    sql = ("SELECT r.*, c.proposer FROM runs r JOIN candidates c ON c.id=r.candidate_id WHERE 1=1")
    args: list = []
    if status:
        sql += " AND r.status=?"
        args.append(status)
    if rung:
        sql += " AND r.rung=?"
        args.append(rung)
    if flagged:
        sql += " AND r.flags != '[]'"
    sql += " ORDER BY (r.val_bpb IS NULL), r.val_bpb" if top else " ORDER BY r.queued_at"
    if top:
        sql += f" LIMIT {int(top)}"
    t = Table(title=f"runs in {store.root}", header_style="bold")
    for col in ("run", "proposer", "rung", "seed", "status", "val_bpb", "bytes", "wall s", "flags / error"):
        t.add_column(col, no_wrap=col in ("run", "val_bpb"))
    for r in store.query(sql, tuple(args)):
        note = ", ".join(r.flags) or (r.error or "")
        style = {"ok": "green", "running": "cyan", "queued": "dim"}.get(r.status, "red")
        t.add_row(r.id, r.proposer, r.rung, str(r.seed), Text(r.status, style=style), fmt_bpb(r.val_bpb),
                  fmt_bytes(r.bytes_total), "-" if r.wall_s is None else f"{r.wall_s:.0f}", note[:80])
    return t


def show(store: Store, ident: str) -> Group:
    """Everything about a run or a candidate: diff, env, per-seed results, curve, flags, log tail, lineage."""
    run = store.run(ident)
    cid = run.candidate_id if run else ident
    cand = store.candidate(cid)
    if cand is None:
        matches = store.query("SELECT id FROM runs WHERE id LIKE ? UNION SELECT id FROM candidates WHERE id LIKE ?",
                              (f"{ident}%", f"{ident}%"))
        if len(matches) == 1:
            return show(store, matches[0].id)
        raise StoreError(f"no run or candidate '{ident}' in {store.root}; see pgolf runs list")
    parts: list = []
    head = Table.grid(padding=(0, 2))
    head.add_row("candidate", cand.id)
    head.add_row("proposer", cand.proposer)
    head.add_row("state", f"{cand.state} {cand.reason}".strip())
    head.add_row("parents", ", ".join(cand.parents) or "-")
    head.add_row("techniques", ", ".join(cand.techniques) or "-")
    head.add_row("env", " ".join(f"{k}={v}" for k, v in sorted(cand.env.items())) or "-")
    head.add_row("rationale", cand.rationale or "-")
    parts.append(Panel(head, title="candidate"))
    if cand.patch:
        parts.append(Panel(Syntax(cand.patch, "diff", theme="ansi_dark", word_wrap=True), title="diff vs baseline"))
    seeds = Table(title="runs", header_style="bold")
    for col in ("run", "rung", "seed", "status", "val_bpb", "val_loss", "bytes", "steps", "curve", "flags"):
        seeds.add_column(col)
    for r in store.runs(candidate_id=cid):
        curve = [m.val_bpb for m in store.query("SELECT val_bpb FROM metrics WHERE run_id=? ORDER BY step", (r.id,))]
        seeds.add_row(r.id, r.rung, str(r.seed), r.status, fmt_bpb(r.val_bpb),
                      "-" if r.val_loss is None else f"{r.val_loss:.4f}", fmt_bytes(r.bytes_total),
                      str(r.steps or "-"), sparkline(curve), ", ".join(r.flags) or (r.error or "")[:60])
    parts.append(seeds)
    j = store.one("SELECT * FROM judgements WHERE candidate_id=?", (cid,))
    if j:
        parts.append(Panel(f"{j.verdict}: {j.reason}", title="judgement"))
    target = run or next(iter(store.runs(candidate_id=cid)), None)
    if target is not None:
        log = Path(target.run_dir) / "train.log"
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            parts.append(Panel(tail, title=f"log tail {log}"))
    return Group(*parts)


def cmd_list(args: argparse.Namespace) -> int:
    store = Store(find_store(args.store), readonly=True)
    console = Console()
    console.print(runs_table(store, args.status, args.rung, args.flagged, args.top))
    board = views.standings(store)
    if board:
        best = board[0]
        console.print(f"best: {best.candidate_id} at {best.rung} val_bpb {best.val_bpb:.4f} ({best.proposer})")
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
    lp.add_argument("--status", help="queued, running, ok, crash, timeout, over_budget, invalid, cancelled")
    lp.add_argument("--rung")
    lp.add_argument("--flagged", action="store_true", help="only runs with audit or measurement flags")
    lp.add_argument("--top", type=int, help="the N best by val_bpb")
    lp.set_defaults(func=cmd_list)
    sp = rs.add_parser("show", help="one run or candidate in full")
    sp.add_argument("id")
    sp.add_argument("store", nargs="?", default="runs")
    sp.set_defaults(func=cmd_show)
