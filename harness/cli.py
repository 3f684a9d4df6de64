"""`pgolf`: the command line. Each feature module registers its own subcommand."""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console

from harness.errors import PgolfError

console = Console(stderr=False, highlight=False)


def _announce(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


def cmd_search(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.loop import Search

    overrides = {
        "name": args.name, "track": args.track, "baseline": args.baseline, "store": args.store,
        "ray_address": args.ray_address, "logical_gpus": args.logical_gpus, "records": args.records,
        "seed": args.seed,
    }
    cfg = load_config(args.config, preset=args.preset if args.config is None else None, **overrides)
    if args.max_candidates is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, max_candidates=args.max_candidates))
    _announce(f"search '{cfg.name}' on track {cfg.track}: store {cfg.search_dir()} "
              f"(watch it with: pgolf dash {cfg.search_dir()})")
    summary = Search(cfg, announce=_announce, config_path=args.config).run()
    for row in summary["rung_agreement"]:
        rho = "n/a" if row["spearman"] != row["spearman"] else f"{row['spearman']:+.2f}"
        _announce(f"rung agreement {row['from']} -> {row['to']}: spearman {rho} over {row['n']} candidates")
    size = summary.get("size_estimate_error") or {}
    if size.get("n"):
        _announce(f"size estimator vs real exports at the top rung: mean |error| {size['mean_abs']:.1%}, max "
                  f"{size['max_abs']:.1%}, bias {size['mean']:+.1%} over {size['n']} candidates")
    if summary.get("record"):
        _announce(f"[bold green]record written:[/bold green] {summary['record']}")
    else:
        _announce(f"no record promoted ({summary.get('verdict') or 'search ended'}); see pgolf runs list "
                  f"{cfg.search_dir()}")
    return 0


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run or resume a search (kill it any time; the same command resumes)")
    p.add_argument("config", nargs="?", help="search config TOML (default: --preset smoke)")
    p.add_argument("--preset", default="smoke", help="a shipped config: smoke (CPU, local corpus, minutes)")
    p.add_argument("--name", help="search name; its store is <store>/<name>")
    p.add_argument("--track", help="main-10min-16mb, local-30min-2mb, cpu-smoke, or a track TOML")
    p.add_argument("--baseline", help="a contract-following train_gpt.py (default: pgolf's own baseline)")
    p.add_argument("--store", help="parent folder of run stores (default runs)")
    p.add_argument("--records", help="records folder (default records)")
    p.add_argument("--ray-address", help="'auto' to join a Ray cluster, or host:port")
    p.add_argument("--logical-gpus", type=int, help="logical GPUs for a local Ray without real ones")
    p.add_argument("--max-candidates", type=int, help="stop proposing after this many candidates")
    p.add_argument("--seed", type=int, help="sampler seed")
    p.set_defaults(func=cmd_search)


def build_parser() -> argparse.ArgumentParser:
    from data import cli as data_cli
    from harness import audit, dash, export, plot, runs_cmd, techniques_cmd

    parser = argparse.ArgumentParser(prog="pgolf", description="Agent-driven search for Parameter Golf submissions")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_search(sub)
    runs_cmd.add_parser(sub)
    techniques_cmd.add_parser(sub)
    dash.add_parser(sub)
    plot.add_parser(sub)
    export.add_parser(sub)
    audit.add_parser(sub)
    data_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PgolfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the search is saved; run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
