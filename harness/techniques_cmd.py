"""`pgolf techniques list` and `pgolf techniques show NAME`: the technique catalog (search_space/techniques/)."""

from __future__ import annotations

import argparse

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from harness.errors import PgolfError


def _catalog():
    from search_space.techniques import CatalogError, load_catalog

    try:
        return load_catalog()
    except CatalogError as e:
        raise PgolfError(str(e)) from None


def _knob_range(spec) -> str:
    if spec.get("choices"):
        return "{" + ", ".join(str(c) for c in spec["choices"]) + "}"
    if "low" in spec or "high" in spec:
        return f"[{spec.get('low')}, {spec.get('high')}]" + (" log" if spec.get("log") else "")
    return str(spec.get("value", ""))


def list_table(techniques) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_lines=False, pad_edge=False, expand=False)
    for name, kw in (("technique", dict(style="bold", no_wrap=True)), ("category", {}), ("introduced in", {}),
                     ("reported gain", dict(ratio=2)), ("knobs", {}), ("conflicts / requires", {})):
        table.add_column(name, overflow="fold", **kw)
    for t in techniques:
        knobs = ", ".join(f"{k}={v.get('default')}" for k, v in t.knobs.items()) or "-"
        links = [*(f"x {c}" for c in t.conflicts), *(f"+ {r}" for r in t.requires)]
        table.add_row(t.name, t.category, t.introduced_in, t.reported_gain, knobs, "\n".join(links) or "-")
    return table


def show_renderable(t):
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="bold")
    meta.add_column(overflow="fold")
    for key, value in (("category", t.category), ("scale", f"gain expected at {t.scale} scale"),
                       ("introduced in", t.introduced_in), ("reported gain", t.reported_gain),
                       ("conflicts", ", ".join(t.conflicts) or "-"), ("requires", ", ".join(t.requires) or "-"),
                       ("env", " ".join(f"{k}={v}" for k, v in t.env.items()) or "-"),
                       ("small-run env", " ".join(f"{k}={v}" for k, v in t.small_env.items()) or "-"),
                       ("cost", " ".join(f"{k}={v}" for k, v in t.cost.items()) or "-"),
                       ("folder", str(t.path) if t.path else "-")):
        meta.add_row(key, value)
    knobs = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("knob", "range", "default", "group", "note"):
        knobs.add_column(col, overflow="fold")
    for name, spec in t.knobs.items():
        knobs.add_row(name, _knob_range(spec), str(spec.get("default")), str(spec.get("group", "")),
                      str(spec.get("note", "")))
    parts = [Panel(Text(t.description), title=t.name, title_align="left"), meta]
    if t.knobs:
        parts.append(knobs)
    if t.patch.strip():
        parts.append(Syntax(t.patch, "diff", theme="ansi_dark", word_wrap=False))
    else:
        parts.append(Text("(no patch: env only)", style="dim"))
    return Group(*parts)


def cmd_list(args: argparse.Namespace) -> int:
    techniques = _catalog()
    if args.category:
        techniques = [t for t in techniques if t.category == args.category]
    Console().print(list_table(techniques))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from search_space.techniques import CatalogError, get

    try:
        t = get(args.name, _catalog())
    except CatalogError as e:
        raise PgolfError(str(e)) from None
    Console().print(show_renderable(t))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("techniques", help="the technique catalog: leaderboard techniques as patches")
    ts = p.add_subparsers(dest="techniques_command", required=True)
    lp = ts.add_parser("list", help="a table of the catalog's techniques")
    lp.add_argument("--category", help="only techniques of this category")
    lp.set_defaults(func=cmd_list)
    sp = ts.add_parser("show", help="one technique: description, metadata, knobs and its patch")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_show)
