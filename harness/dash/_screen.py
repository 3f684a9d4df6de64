"""The whole screen: panels laid out for the terminal's width and height (`render`), or as plain text."""

from __future__ import annotations

from rich import box
from rich.console import Console, RenderableType
from rich.layout import Layout
from rich.panel import Panel

from harness.dash._panels import (
    PROPOSER_LEGEND,
    _header,
    board_table,
    failures_table,
    jobs_table,
    status_narrow,
    status_wide,
)
from harness.dash._view import DashView

WIDE = 130  # at this width and above the side panels move to a right-hand column


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
