"""The dashboard's panels, each a pure function of a `DashView`: header, leaderboard, runs in flight,
search status (queue, cluster, proposers, LLM spend, best so far), recent failures."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from harness.dash._format import fmt_duration, fmt_p, fmt_si, fmt_signed, spark
from harness.dash._view import BoardRow, DashView


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
        if v.gpu_price:
            t.append(f" · ${v.gpu_hours * v.gpu_price:,.2f}")
    t.append(f" · {sum(v.candidates.values())} candidates, {v.candidates.get('rejected', 0)} rejected")
    record = (v.finished or {}).get("record") or (v.promotion or {}).get("record")
    if record:
        t.append(f" · record {record}", style="bold green")
    elif v.promotion and v.promotion.get("phase") not in (None, "select", "done"):
        t.append(f" · promotion: {v.promotion['phase']}", style="magenta")
    return t


# Leaderboard columns. Full: every column, exact byte counts. Compact (narrow terminals): seeds and rung share
# one cell (4@full), sizes read 15.86M, and columns drop from the end of the priority list until the rest fit.
_BOARD_ORDER = ("#", "candidate", "rung", "val_bpb", "Δbpb", "Δnats", "bytes", "room", "seeds", "p", "cost", "flags")
_COMPACT_PRIORITY = ("#", "candidate", "val_bpb", "Δbpb", "seeds", "bytes", "Δnats", "flags", "p", "room", "cost")
_FULL_W = {"#": 3, "candidate": 14, "rung": 6, "val_bpb": 15, "Δbpb": 8, "Δnats": 8, "bytes": 10, "room": 10,
           "seeds": 2, "p": 6, "cost": 7, "flags": 8}
_SMALL_W = {**_FULL_W, "#": 2, "candidate": 9, "val_bpb": 13, "Δbpb": 7, "Δnats": 7, "bytes": 6, "room": 6,
            "seeds": 8, "flags": 9}


def board_columns(width: int, cost: bool = False) -> tuple[list[str], bool]:
    """Leaderboard columns that fit `width` cells, and whether they are the compact ones. `cost`: a column of
    what each candidate spent (GPU searches only: on a CPU track it would be zeros)."""
    need = lambda cols, w: sum(w[c] + 1 for c in cols)  # noqa: E731  (one cell of padding per column)
    order = [c for c in _BOARD_ORDER if cost or c != "cost"]
    if need(order, _FULL_W) <= width:
        return order, False
    cols = [c for c in _COMPACT_PRIORITY if c in order]
    while need(cols, _SMALL_W) > width and len(cols) > 3:
        cols.pop()
    return [c for c in order if c in cols], True


def _delta_text(d: float | None) -> Text:
    return Text(fmt_signed(d, 4), style="" if d is None else ("green" if d < 0 else "red"))


def _money(x: float) -> str:
    return f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def _num(n: int | None, small: bool, digits: int = 4) -> str:
    return fmt_si(n, digits) if small else ("-" if n is None else f"{n:,}")


def board_table(v: DashView, width: int, rows: int) -> RenderableType:
    if not v.board:
        return Text("no finished runs yet", style="dim")
    cols, small = board_columns(width, cost=v.gpu_hours > 0)
    t = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", expand=True, show_edge=False)
    heads = {"#": "#", "candidate": "candidate", "rung": "rung", "val_bpb": "val_bpb ±std", "Δbpb": "Δbpb",
             "Δnats": "Δnats", "bytes": "bytes", "room": "headroom", "seeds": "n@rung" if small else "n", "p": "p",
             "flags": "flags", "cost": "$" if v.gpu_price else "GPU-h"}
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
            "cost": Text(_money(b.gpu_hours * v.gpu_price) if v.gpu_price else f"{b.gpu_hours:.1f}", style="dim"),
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
    nodes = c.get("node_status") or []
    if len(nodes) > 1:
        bits.append(f"{len(nodes)} nodes")
    grid.add_row(ProgressBar(total=1.0, completed=min(1.0, frac)), Text(" · ".join(bits)))
    # A node without the data gets no work: say which and why, so an idle GPU is never a mystery.
    for n in nodes:
        if n.get("data") in ("failed", "staging"):
            style = "red" if n["data"] == "failed" else "yellow"
            what = "gets no work" if n["data"] == "failed" else "is staging its data"
            grid.add_row(Text("!", style=style), Text(f"{n['node']} {what}: {n.get('reason') or ''}".rstrip(": "),
                                                      style=style))
    # Confirm seeds wait for nodes of one GPU model (harness/node_rules.py): say which, or that it was lost.
    for group, model in sorted((c.get("gpu_models") or {}).items()):
        grid.add_row(Text("held", style="dim"), Text(f"{group} runs on {model} only", style="dim"))
    for group, model in sorted((c.get("gpu_models_released") or {}).items()):
        grid.add_row(Text("!", style="yellow"), Text(f"{model} gone: {group} runs moved", style="yellow"))
    if v.sku_note:
        grid.add_row(Text("GPUs", style="yellow"), Text(v.sku_note, style="yellow"))
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
