"""The live loop: redraw the screen about once a second on the terminal's alternate screen until q."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

from harness.dash._reader import load_view
from harness.dash._screen import render
from harness.store import Store


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
