"""Formatting helpers for the dashboard's cells: durations, sizes, deltas, p-values, errors, sparklines."""

from __future__ import annotations

import math

SPARK = "▁▂▃▄▅▆▇█"


def fmt_duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def fmt_si(n: float | None, digits: int = 3) -> str:
    """Bytes or tokens to `digits` significant figures: 15.9M, 312k, 980 (15.86M with digits=4)."""
    if n is None:
        return "-"
    a = abs(n)
    sign = "-" if n < 0 else ""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= div:
            v = a / div
            decimals = max(0, digits - len(str(int(v))))
            return f"{sign}{v:.{decimals}f}{unit}"
    return f"{sign}{a:.0f}"


def fmt_signed(v: float | None, digits: int = 4) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def one_line(text: str | None, limit: int = 200) -> str:
    """The informative line of an error: a traceback's last line, otherwise the first non-empty one."""
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line[:limit]


def spark(values: list[float | None] | tuple[float | None, ...], width: int) -> str:
    """A best-so-far curve squeezed into `width` cells (min over each cell); gaps before data are blank."""
    if not values or width <= 0:
        return ""
    n = len(values)
    cells: list[float | None] = []
    for i in range(min(width, n)):
        chunk = [v for v in values[i * n // min(width, n):(i + 1) * n // min(width, n)] if v is not None]
        cells.append(min(chunk) if chunk else None)
    vals = [v for v in cells if v is not None]
    if not vals:
        return " " * len(cells)
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(" " if v is None else SPARK[min(7, int((v - lo) / span * 7.999))] for v in cells)
