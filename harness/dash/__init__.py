"""`pgolf dash`: a live view of a search, read from its run store only.

`load_view(store)` runs a bounded set of queries inside one read snapshot and returns a frozen
`DashView`; `render(view, width, height)` is a pure function of that view. The live loop calls
both about once a second, so the dashboard works from another terminal (or over SSH) while a
search runs, and on a finished search. `--once` prints a single frame; `--demo` shows a fake store.

Modules:

_format    cell formatting: fmt_duration, fmt_si, fmt_signed, fmt_p, one_line, spark
_view      DashView and its rows: BoardRow, Job, Failure
_reader    load_view: one frame read from the store inside one snapshot
_panels    the panels (header, leaderboard, runs, search status, failures), pure functions of a view
_screen    render: the panels laid out for a terminal size; frame_text
_live      live: the redraw loop
_demo      fill_demo, demo_tick: a fake search for --demo, the benchmark and tests
_cli       cmd_dash, add_parser, main (`pgolf dash`, `python -m harness.dash`)
"""

from harness.dash._cli import add_parser, cmd_dash, main
from harness.dash._demo import demo_tick, fill_demo
from harness.dash._format import SPARK, fmt_duration, fmt_p, fmt_si, fmt_signed, one_line, spark
from harness.dash._live import live
from harness.dash._panels import (
    PROPOSER_LEGEND,
    board_columns,
    board_table,
    failures_table,
    jobs_table,
    proposers_table,
    status_narrow,
    status_wide,
)
from harness.dash._reader import BOARD_LIMIT, CURVE_BUCKETS, FAILURE_LIMIT, REUSE_S, load_view, snapshot
from harness.dash._reader import _track as _track  # the track of a store's config, cached (runs_cmd, plot)
from harness.dash._screen import WIDE, allocate, frame_text, render
from harness.dash._view import BoardRow, DashView, Failure, Job

__all__ = [
    "BOARD_LIMIT",
    "CURVE_BUCKETS",
    "FAILURE_LIMIT",
    "PROPOSER_LEGEND",
    "REUSE_S",
    "SPARK",
    "WIDE",
    "BoardRow",
    "DashView",
    "Failure",
    "Job",
    "add_parser",
    "allocate",
    "board_columns",
    "board_table",
    "cmd_dash",
    "demo_tick",
    "failures_table",
    "fill_demo",
    "fmt_duration",
    "fmt_p",
    "fmt_si",
    "fmt_signed",
    "frame_text",
    "jobs_table",
    "live",
    "load_view",
    "main",
    "one_line",
    "proposers_table",
    "render",
    "snapshot",
    "spark",
    "status_narrow",
    "status_wide",
]
