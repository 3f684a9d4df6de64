"""Parse trainer log lines (the official `train_gpt.py` shapes and later records' variants).

Pure functions, no I/O: `parse_line` classifies one line, `LogSummary.feed` accumulates
lines (so a tailing reader and a whole-file reader share the logic), `parse_log` reads a
whole text, and `error_line` picks the line that best explains a failure.

Everything here tolerates garbage: partial lines, CRLF, carriage-return progress bars,
torchrun's `[rank0]:` prefixes, non-UTF-8 bytes already replaced by the caller. A line
that matches nothing is simply ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# A number as Python / PyTorch print it, nan and inf included.
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|infinity)"

# `step:{n}/{total} val_loss:{x} val_bpb:{x} train_time:{ms}ms step_avg:{ms}ms` (official), and the
# later `{n}/{total} val_loss: {x} val_bpb: {x}` shape without the `step:` prefix.
_VAL_RE = re.compile(
    rf"(?:^|\s)(?:step:\s*)?(\d+)/(\d+)\s+val_loss:\s*({_NUM})\s+val_bpb:\s*({_NUM})"
    rf"(?:\s+train_time:\s*({_NUM})(ms|s|m)\b)?(?:\s+step_avg:\s*({_NUM})ms)?",
    re.IGNORECASE,
)
# `step:{n}/{total} train_loss:{x} train_time:{ms}ms step_avg:{ms}ms` (official), and the later
# `{n}/{total} train_loss: {x} train_time: 9.0m tok/s: {n}` shape.
_TRAIN_RE = re.compile(
    rf"(?:^|\s)(?:step:\s*)?(\d+)/(\d+)\s+train_loss:\s*({_NUM})"
    rf"(?:\s+train_time:\s*({_NUM})(ms|s|m)\b)?(?:\s+step_avg:\s*({_NUM})ms)?",
    re.IGNORECASE,
)
# `final_int8_zlib_roundtrip_exact val_loss:{x:.8f} val_bpb:{x:.8f}` and every other `*_exact` line.
_EXACT_RE = re.compile(rf"(?:^|\s)([A-Za-z][\w.+-]*_exact)\s+val_loss:\s*({_NUM})\s+val_bpb:\s*({_NUM})")
# `Total submission size int8+zlib: {n} bytes`, `Total submission size: {n} bytes` (raw fp model).
_SIZE_RE = re.compile(r"Total submission size(?:\s+([^:]*?))?\s*:\s*(\d+)\s*bytes")
_CODE_SIZE_RE = re.compile(r"(?:^|\s)Code size:\s*(\d+)\s*bytes")
_MODEL_SIZE_RE = re.compile(r"(?:^|\s)Serialized model(?:\s+([^:]*?))?\s*:\s*(\d+)\s*bytes")
_STOP_RE = re.compile(r"stopping_early\b:?\s*(.*)")
_FAIL_RE = re.compile(r"^FAIL:\s*(.*)")
_MEM_RE = re.compile(r"peak memory allocated:\s*(\d+)\s*MiB(?:\s+reserved:\s*(\d+)\s*MiB)?")
# `[rank0]: `, `[default0]:` and similar launcher prefixes, possibly repeated.
_PREFIX_RE = re.compile(r"^(?:\[[^\]\s]{1,40}\]:?\s*)+")
_EXC_RE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Fault)\b(?::.*)?$")
_GENERIC_EXC = ("ChildFailedError", "SignalException", "CalledProcessError")
_FATAL_WORDS = re.compile(r"\b(Killed|Segmentation fault|core dumped|Aborted|Bus error)\b")
_MAX_ERROR_CHARS = 240


def _num(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _ms(value: str | None, unit: str | None) -> float | None:
    v = _num(value)
    if v is None:
        return None
    return v * {"ms": 1.0, "s": 1000.0, "m": 60_000.0}.get((unit or "ms").lower(), 1.0)


def clean_line(line: str) -> str:
    """Strip CR/whitespace and launcher prefixes such as `[rank0]: `."""
    line = line.replace("\x00", "").strip()
    if "\r" in line:  # progress bars redraw with CR: the last segment is what was on screen
        segments = [s for s in line.split("\r") if s.strip()]
        line = segments[-1].strip() if segments else ""
    return _PREFIX_RE.sub("", line).strip()


def parse_line(line: str) -> dict[str, Any] | None:
    """Classify one log line. Returns a dict with a `kind` key, or None for lines of no interest.

    kinds: `val`, `train`, `final` (a `*_exact` score line), `size` (total submission size),
    `code_size`, `model_size`, `stop`, `fail`, `memory`.
    """
    line = clean_line(line)
    if not line:
        return None
    m = _FAIL_RE.match(line)
    if m:
        return {"kind": "fail", "reason": m.group(1).strip()}
    m = _EXACT_RE.search(line)
    if m:
        return {"kind": "final", "name": m.group(1), "val_loss": _num(m.group(2)), "val_bpb": _num(m.group(3))}
    m = _VAL_RE.search(line)
    if m:
        return {
            "kind": "val", "step": int(m.group(1)), "total": int(m.group(2)),
            "val_loss": _num(m.group(3)), "val_bpb": _num(m.group(4)),
            "train_time_ms": _ms(m.group(5), m.group(6)), "step_avg_ms": _num(m.group(7)),
        }
    m = _TRAIN_RE.search(line)
    if m:
        return {
            "kind": "train", "step": int(m.group(1)), "total": int(m.group(2)), "train_loss": _num(m.group(3)),
            "train_time_ms": _ms(m.group(4), m.group(5)), "step_avg_ms": _num(m.group(6)),
        }
    m = _SIZE_RE.search(line)
    if m:
        fmt = (m.group(1) or "").strip() or None
        return {"kind": "size", "format": fmt, "bytes": int(m.group(2))}
    m = _CODE_SIZE_RE.search(line)
    if m:
        return {"kind": "code_size", "bytes": int(m.group(1))}
    m = _MODEL_SIZE_RE.search(line)
    if m:
        return {"kind": "model_size", "format": (m.group(1) or "").strip() or None, "bytes": int(m.group(2))}
    m = _STOP_RE.search(line)
    if m:
        return {"kind": "stop", "text": m.group(1).strip()}
    m = _MEM_RE.search(line)
    if m:
        return {"kind": "memory", "allocated_mib": int(m.group(1)),
                "reserved_mib": int(m.group(2)) if m.group(2) else None}
    return None


@dataclass
class LogSummary:
    """What a trainer's log says about its run. Feed it lines in order."""

    val_history: list[dict[str, Any]] = field(default_factory=list)
    last_step: int | None = None
    total_steps: int | None = None
    train_time_ms: float | None = None  # from the latest step line of either kind
    step_avg_ms: float | None = None
    last_train_loss: float | None = None
    finals: dict[str, dict[str, float | None]] = field(default_factory=dict)  # every *_exact line, by name
    final_name: str | None = None  # the LAST *_exact line: the headline score
    final_val_loss: float | None = None
    final_val_bpb: float | None = None
    submission_bytes: int | None = None  # last `Total submission size <fmt>:` (a formatted one wins)
    submission_format: str | None = None
    raw_submission_bytes: int | None = None  # `Total submission size: N bytes` (unquantized)
    code_bytes: int | None = None
    model_bytes: int | None = None
    stopped_early: bool = False
    stop_text: str | None = None
    fail_reasons: list[str] = field(default_factory=list)
    peak_memory_mib: int | None = None
    lines: int = 0

    def feed(self, line: str) -> dict[str, Any] | None:
        """Account for one line; returns what `parse_line` made of it."""
        self.lines += 1
        p = parse_line(line)
        if p is None:
            return None
        kind = p["kind"]
        if kind in ("val", "train"):
            self.last_step, self.total_steps = p["step"], p["total"]
            if p["train_time_ms"] is not None:
                self.train_time_ms = p["train_time_ms"]
            if p["step_avg_ms"] is not None:
                self.step_avg_ms = p["step_avg_ms"]
            if kind == "val":
                self.val_history.append({k: p[k] for k in ("step", "val_loss", "val_bpb", "train_time_ms")})
            else:
                self.last_train_loss = p["train_loss"]
        elif kind == "final":
            self.finals[p["name"]] = {"val_loss": p["val_loss"], "val_bpb": p["val_bpb"]}
            self.final_name, self.final_val_loss, self.final_val_bpb = p["name"], p["val_loss"], p["val_bpb"]
        elif kind == "size":
            if p["format"] is None:
                self.raw_submission_bytes = p["bytes"]
                if self.submission_format is None:
                    self.submission_bytes = p["bytes"]
            else:
                self.submission_bytes, self.submission_format = p["bytes"], p["format"]
        elif kind == "code_size":
            self.code_bytes = p["bytes"]
        elif kind == "model_size":
            if p["format"] is not None or self.model_bytes is None:
                self.model_bytes = p["bytes"]
        elif kind == "stop":
            self.stopped_early, self.stop_text = True, p["text"]
        elif kind == "fail":
            self.fail_reasons.append(p["reason"])
        elif kind == "memory":
            self.peak_memory_mib = p["allocated_mib"]
        return p

    @property
    def final_is_finite(self) -> bool:
        return self.final_val_bpb is not None and math.isfinite(self.final_val_bpb)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def split_lines(text: str) -> list[str]:
    """Lines of a log, whatever its line endings (LF, CRLF, lone CR from progress bars)."""
    return text.replace("\r\n", "\n").split("\n")


def parse_log(text: str) -> LogSummary:
    """Summarize a whole log text (stdout of a trainer, or its logs/<RUN_ID>.txt)."""
    summary = LogSummary()
    for line in split_lines(text):
        summary.feed(line)
    return summary


def error_line(lines: Iterable[str]) -> str | None:
    """The line that best explains a failed run, cleaned and shortened; None for an empty log.

    Preference: the last `FAIL: <reason>` line; else the last exception line of a traceback
    (`ValueError: ...`, `torch.OutOfMemoryError: ...`), skipping launcher wrappers such as
    torchrun's ChildFailedError; else a fatal-signal line (`Killed`, `Segmentation fault`);
    else the last non-empty line.
    """
    fail = exc = fatal = last = None
    for raw in lines:
        line = clean_line(raw)
        if not line:
            continue
        last = line
        if _FAIL_RE.match(line):
            fail = line
        elif _EXC_RE.match(line) and not any(g in line for g in _GENERIC_EXC):
            exc = line
        elif _FATAL_WORDS.search(line):
            fatal = line
    best = fail or exc or fatal or last
    if best is None:
        return None
    return best if len(best) <= _MAX_ERROR_CHARS else best[: _MAX_ERROR_CHARS - 3] + "..."
