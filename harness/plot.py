"""`pgolf plot [SEARCH_DIR]`: PNG charts of a search, from its run store (read-only).

- best_over_time.png: best val_bpb so far per rung against wall-clock hours and against GPU-hours.
- bpb_vs_bytes.png: every candidate's val_bpb against its artifact bytes per rung, the Pareto front
  (lowest val_bpb at each size) and the track's byte cap.
- rung_agreement.png: each rung's score against the next rung's for candidates that ran both, with the
  Spearman rank correlation, so you can see whether a cheap rung predicts the expensive one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import views
from harness.store import Store, find_store

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (bytes, val_bpb) points no other point beats on both (fewer bytes and lower val_bpb), by bytes."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _context(store: Store) -> dict:
    from harness.dash import _track

    meta = views.meta_values(store, ("config", "started_at"))
    cfg = meta.get("config") or {}
    track = _track(cfg["track"]) if isinstance(cfg.get("track"), str) else None
    summary = views.candidate_summary(store)
    return {"name": cfg.get("name") or store.root.name, "track": track, "started_at": meta.get("started_at"),
            "byte_cap": track.byte_cap if track else None,
            "rungs": [r.name for r in track.rungs] if track else [],
            "reference": {r.any_id for r in summary if r.kind == "reference"}}


def _empty(ax, msg: str) -> None:
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _rung_order(store: Store, ctx: dict) -> list[str]:
    """The track's ladder, then any other rung the store holds (a track edited mid-search), lowest first."""
    seen = {r.rung: r.rung_index for r in views.run_counts(store)}
    return ctx["rungs"] + sorted((r for r in seen if r not in ctx["rungs"]), key=seen.get)


def best_over_time(store: Store, ctx: dict, out: Path) -> Path:
    """One row per rung (each on its own val_bpb scale): best so far vs hours, and vs GPU-hours spent."""
    from matplotlib.figure import Figure

    runs = views.finished_runs(store)
    ok = [r for r in runs if r.status == "ok" and r.val_bpb is not None]
    rungs = [r for r in _rung_order(store, ctx) if any(x.rung == r for x in ok)]
    fig = Figure(figsize=(11, 1.2 + 2.6 * max(1, len(rungs))), layout="constrained")
    axes = fig.subplots(max(1, len(rungs)), 2, squeeze=False, sharex="col")
    if not ok:
        for ax in axes[0]:
            _empty(ax, "no finished runs yet")
    else:
        t0 = ctx["started_at"] or min(r.started_at or r.finished_at for r in runs)
        gpu_track = any(r.gpus for r in runs)
        spent, cum = 0.0, {}
        for r in runs:  # resources spent by every finished run (failures too), in finish order
            spent += (r.gpus if gpu_track else 1) * (r.wall_s or 0.0) / 3600
            cum[r.id] = spent
        refs = views.reference_scores(store, sorted(ctx["reference"])) if ctx["reference"] else {}
        for row, rung in zip(axes, rungs, strict=False):
            color = COLORS[_rung_order(store, ctx).index(rung) % len(COLORS)]
            pts = [r for r in ok if r.rung == rung]
            best, ys = None, []
            for r in pts:
                best = r.val_bpb if best is None else min(best, r.val_bpb)
                ys.append(best)
            for ax, xs in ((row[0], [(r.finished_at - t0) / 3600 for r in pts]), (row[1], [cum[r.id] for r in pts])):
                ax.scatter(xs, [r.val_bpb for r in pts], s=8, alpha=0.3, color=color)
                ax.step(xs, ys, where="post", color=color, lw=1.8, label=f"best {ys[-1]:.4f}")
                if rung in refs:
                    ax.axhline(refs[rung]["val_bpb"], color="black", ls=":", lw=1,
                               label=f"baseline {refs[rung]['val_bpb']:.4f}")
                ax.grid(alpha=0.3)
            row[0].set_ylabel(f"{rung}\nval_bpb")
            row[0].legend(fontsize=8, loc="upper right")
        axes[-1][0].set_xlabel("hours since the search started")
        axes[-1][1].set_xlabel("GPU-hours spent" if gpu_track else "run-hours spent (CPU track: one slot per run)")
    fig.suptitle(f"{ctx['name']}: best val_bpb so far per rung (dots: every finished run)")
    path = out / "best_over_time.png"
    fig.savefig(path, dpi=110)
    return path


def _bytes_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"))


def bpb_vs_bytes(store: Store, ctx: dict, out: Path) -> Path:
    from matplotlib.figure import Figure

    rows = [r for r in views.candidate_rung_scores(store) if r.bytes_total is not None]
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    cap = ctx["byte_cap"]
    if not rows:
        _empty(ax, "no finished runs with a measured size yet")
    for i, rung in enumerate(_rung_order(store, ctx)):
        pts = [r for r in rows if r.rung == rung]
        if not pts:
            continue
        color = COLORS[i % len(COLORS)]
        fits = [r for r in pts if cap is None or r.bytes_total <= cap]
        over = [r for r in pts if cap is not None and r.bytes_total > cap]
        ax.scatter([r.bytes_total for r in fits], [r.val_bpb for r in fits], s=14, color=color, alpha=0.6,
                   label=f"{rung} ({len(pts)})")
        if over:
            ax.scatter([r.bytes_total for r in over], [r.val_bpb for r in over], s=22, marker="x", color=color)
        front = pareto_front([(r.bytes_total, r.val_bpb) for r in fits])
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color=color, lw=1.5)
        for r in pts:
            if r.candidate_id in ctx["reference"]:
                ax.scatter([r.bytes_total], [r.val_bpb], s=90, facecolors="none", edgecolors="black")
    if cap is not None:
        ax.axvline(cap, color="red", ls="--", lw=1, label=f"cap {cap:,} B")
    _bytes_axis(ax)
    ax.set_xlabel("artifact bytes (code + compressed model)")
    ax.set_ylabel("val_bpb (mean over seeds at that rung)")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8, title="rung (candidates); line: Pareto front; x: over the cap; circle: baseline",
                  title_fontsize=7)
    ax.set_title(f"{ctx['name']}: val_bpb vs artifact size")
    path = out / "bpb_vs_bytes.png"
    fig.savefig(path, dpi=110)
    return path


def rung_agreement(store: Store, ctx: dict, out: Path) -> Path:
    from matplotlib.figure import Figure

    rungs = _rung_order(store, ctx)
    pairs = list(zip(rungs, rungs[1:], strict=False)) or [(rungs[0] if rungs else "-", "-")]
    stats = {(a["from"], a["to"]): a for a in views.rung_agreement(store, rungs)} if len(rungs) > 1 else {}
    fig = Figure(figsize=(4.5 * len(pairs), 4.5), layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (lo, hi) in zip(axes, pairs, strict=True):
        a, b = views.rung_scores(store, lo), views.rung_scores(store, hi) if hi != "-" else {}
        common = sorted(set(a) & set(b))
        if not common:
            _empty(ax, f"no candidate finished both {lo} and {hi}")
            continue
        ax.scatter([a[c] for c in common], [b[c] for c in common], s=16)
        for c in common:
            if c in ctx["reference"]:
                ax.scatter([a[c]], [b[c]], s=90, facecolors="none", edgecolors="black")
        rho = stats.get((lo, hi), {}).get("spearman", float("nan"))
        rho_s = "n/a (need 3)" if rho != rho else f"{rho:+.2f}"
        ax.set_title(f"{lo} → {hi}: Spearman {rho_s}, n={len(common)}", fontsize=10)
        ax.set_xlabel(f"val_bpb at {lo}")
        ax.set_ylabel(f"val_bpb at {hi}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{ctx['name']}: does each rung predict the next? (circle: baseline)")
    path = out / "rung_agreement.png"
    fig.savefig(path, dpi=110)
    return path


def write_plots(store: Store, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = _context(store)
    return [best_over_time(store, ctx, out), bpb_vs_bytes(store, ctx, out), rung_agreement(store, ctx, out)]


def cmd_plot(args: argparse.Namespace) -> int:
    root = find_store(args.store)
    store = Store(root, readonly=True)
    try:
        paths = write_plots(store, Path(args.out) if args.out else root / "plots")
    finally:
        store.close()
    for p in paths:
        print(p)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG charts of a search: best over time, val_bpb vs bytes, rung agreement")
    p.add_argument("store", nargs="?", default="runs", help="search folder (default: the newest under runs/)")
    p.add_argument("--out", help="folder for the PNGs (default: <search>/plots)")
    p.set_defaults(func=cmd_plot)
