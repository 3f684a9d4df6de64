"""Train logs: finding them in a folder, parsing the lines reviewers check, and the checks on them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.audit._findings import ERROR, WARNING, Finding

_SIZE_RE = re.compile(r"^Total submission size(?: ([^:\n]+?))?: (\d+) bytes", re.M)
_NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
_EXACT_RE = re.compile(rf"^(\S+?)_exact val_loss:{_NUM} val_bpb:{_NUM}", re.M)
_SEED_RE = re.compile(r"^seed:\s*(\d+)\s*$", re.M)
_STOP_RE = re.compile(r"^stopping_early: .*?step:(\d+)/(\d+)", re.M)
_VALSTEP_RE = re.compile(r"^step:(\d+)/(\d+) val_loss:", re.M)
_SEPARATOR = "=" * 100


@dataclass
class LogSummary:
    path: str
    size_bytes: int | None = None  # last qualified "Total submission size <fmt>: N bytes" (else unqualified)
    size_label: str | None = None
    exact_label: str | None = None  # e.g. "final_int8_zlib_roundtrip"
    val_loss: float | None = None
    val_bpb: float | None = None
    seed: int | None = None
    steps: int | None = None
    source_preamble: str | None = None  # the script source the trainer logged at the top, if any


def parse_train_log(text: str, path: str = "") -> LogSummary:
    """Pull the numbers reviewers check out of a train log (official line shapes)."""
    out = LogSummary(path)
    sizes = [(m.group(1), int(m.group(2))) for m in _SIZE_RE.finditer(text)]
    qualified = [s for s in sizes if s[0]]
    pick = qualified[-1] if qualified else sizes[-1] if sizes else None
    if pick:
        out.size_label, out.size_bytes = pick
    exacts = list(_EXACT_RE.finditer(text))
    if exacts:
        m = exacts[-1]
        out.exact_label, out.val_loss, out.val_bpb = m.group(1), float(m.group(2)), float(m.group(3))
    if m := _SEED_RE.search(text):
        out.seed = int(m.group(1))
    elif m := re.search(r"seed[_-]?(\d+)", Path(path).name, re.I):
        out.seed = int(m.group(1))
    if stops := list(_STOP_RE.finditer(text)):
        out.steps = int(stops[-1].group(1))
    elif vals := list(_VALSTEP_RE.finditer(text)):
        out.steps = int(vals[-1].group(1))
    sep = text.find("\n" + _SEPARATOR + "\n")
    if sep > 0:
        out.source_preamble = text[:sep]
    return out


def find_logs(folder: Path) -> list[Path]:
    def logs_in(d: Path) -> list[Path]:
        return sorted(
            p for p in d.iterdir()
            if p.is_file() and (p.suffix == ".log" or (p.name.startswith("train") and p.suffix == ".txt"))
        )  # fmt: skip

    found = logs_in(folder)
    if not found and (folder / "logs").is_dir():
        found = logs_in(folder / "logs")
    return found


def log_checks(logs: list[LogSummary], cap: int, rel: Callable[[str], str], source: str | None) -> Iterator[Finding]:
    for log in logs:
        if log.size_bytes is None:
            yield Finding(
                "log_missing_size", WARNING,
                "no `Total submission size ...: N bytes` line; the log must show the artifact size "
                "(rerun with the official logging)",
                file=rel(log.path),
            )  # fmt: skip
        elif log.size_bytes > cap:
            yield Finding(
                "log_over_byte_cap", ERROR,
                f"logged total {log.size_bytes:,} bytes ({log.size_label or 'unlabelled'}) exceeds the cap "
                f"{cap:,}; every seed must fit (PR #1835), shrink the model or code and rerun",
                file=rel(log.path),
            )  # fmt: skip
        if log.val_bpb is None:
            yield Finding(
                "log_missing_score", WARNING,
                "no `*_exact val_loss:... val_bpb:...` line; the run did not finish or the log is not the "
                "trainer's own",
                file=rel(log.path),
            )  # fmt: skip
        elif not math.isfinite(log.val_bpb):
            yield Finding("log_nonfinite_score", ERROR, f"final val_bpb is {log.val_bpb}", file=rel(log.path))
        if source is not None and log.source_preamble is not None:
            pre = log.source_preamble.strip()
            looks_like_code = pre.startswith(('"""', "'''", "#", "import", "from", "def", "class"))
            if looks_like_code and pre != source.strip():
                yield Finding(
                    "log_source_mismatch", WARNING,
                    "the source logged at the top of this log differs from train_gpt.py; logs must come "
                    "from running exactly this file (rerun and replace the log)",
                    file=rel(log.path),
                )  # fmt: skip


def is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
