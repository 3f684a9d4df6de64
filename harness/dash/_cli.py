"""`pgolf dash` and `python -m harness.dash`: arguments, opening the store (or a demo), --once or live."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from harness.dash._demo import demo_tick, fill_demo
from harness.dash._live import live
from harness.dash._reader import load_view
from harness.dash._screen import render
from harness.store import Store, find_store


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
