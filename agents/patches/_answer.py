"""Parsing an agent's answer: SEARCH/REPLACE blocks or a unified diff, knob ranges, rationale.

An agent may answer with SEARCH/REPLACE blocks or a unified diff, fenced or bare, surrounded by
prose, with CRLF line ends. `parse_edits` never raises: what it cannot use becomes one line in
`ParsedAnswer.errors`, fit to send back to the agent for a repair.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from agents.patches._base import TARGET, _target_ok, one_line
from agents.patches._unified import _FENCE, _HUNK, _FileDiff, _is_file_header, _read_diff, _render_files


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE block: replace the lines `search` with `replace` (no trailing newline)."""

    search: str
    replace: str
    block: int = 1  # position of the block in the answer, 1-based, for error messages


@dataclass(frozen=True)
class ParsedAnswer:
    edits: tuple[Edit, ...] = ()
    diff: str = ""  # a unified diff with repaired hunk headers, when the answer used one
    rationale: str = ""
    knob_ranges: dict[str, dict] = field(default_factory=dict)
    errors: tuple[str, ...] = ()  # each one line; any error makes the answer unusable
    warnings: tuple[str, ...] = ()  # things dropped or ignored that do not block the patch

    @property
    def ok(self) -> bool:
        return not self.errors


_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\b", re.IGNORECASE)
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\b", re.IGNORECASE)
_PATH_LINE = re.compile(r"^\s*(?:[#*>]+\s*)?(?:file(?:name)?\s*:\s*)?[`*\"']*([\w./\\-]+\.\w+)[`*\"']*\s*:?\s*$", re.I)
_RATIONALE = re.compile(r"^\s*(?:#+\s*)?[*_]*rationale[*_]*\s*[:\-]?[*_]*\s*(.*)$", re.I)
_KNOB_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def parse_edits(answer: str) -> ParsedAnswer:
    """Read edits, rationale and knob ranges out of an agent's answer. Never raises."""
    lines = str(answer).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    used = [False] * len(lines)
    errors: list[str] = []
    warnings: list[str] = []
    edits = _scan_blocks(lines, used, errors)
    diff = ""
    if not edits and not errors:
        diff = _scan_diffs(lines, used, errors)
    elif _looks_like_diff(lines, used):
        warnings.append("a unified diff beside SEARCH/REPLACE blocks was ignored")
    knobs = _scan_knobs(lines, used, warnings)
    if not edits and not diff and not errors:
        errors.append("no SEARCH/REPLACE block or unified diff found; answer with SEARCH/REPLACE blocks")
    return ParsedAnswer(
        edits=tuple(edits),
        diff=diff,
        rationale=_rationale(lines, used),
        knob_ranges=knobs,
        errors=tuple(errors),
        warnings=tuple(warnings),
    )


# SEARCH/REPLACE blocks --------------------------------------------------------------------


def _strip_inner_fence(body: list[str]) -> list[str]:
    if len(body) >= 2 and _FENCE.match(body[0]) and _FENCE.match(body[-1]):
        return body[1:-1]
    return body


def _block_path(lines: list[str], used: list[bool], i: int) -> tuple[int, str] | None:
    """The file name line just above a SEARCH marker, skipping fences and blank lines."""
    for j in range(i - 1, max(-1, i - 4), -1):
        if used[j]:
            return None
        text = lines[j]
        if not text.strip() or _FENCE.match(text):
            continue
        m = _PATH_LINE.match(text)
        return (j, m.group(1)) if m else None
    return None


def _scan_blocks(lines: list[str], used: list[bool], errors: list[str]) -> list[Edit]:
    edits: list[Edit] = []
    i, n, count = 0, len(lines), 0
    while i < n:
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        count += 1
        path = _block_path(lines, used, i)
        if path is not None:
            used[path[0]] = True
            if not _target_ok(path[1]):
                errors.append(f"block {count} edits {path[1]!r}; only {TARGET} may be changed")
        start, j = i, i + 1
        while j < n and not (_DIVIDER.match(lines[j]) or _SEARCH.match(lines[j]) or _REPLACE.match(lines[j])):
            j += 1
        if j >= n or not _DIVIDER.match(lines[j]):
            errors.append(f"block {count}: no '=======' line after '<<<<<<< SEARCH'")
            i = j
            continue
        mid, k = j, j + 1
        while k < n and not (_DIVIDER.match(lines[k]) or _SEARCH.match(lines[k]) or _REPLACE.match(lines[k])):
            k += 1
        if k >= n or not _REPLACE.match(lines[k]):
            errors.append(f"block {count}: no '>>>>>>> REPLACE' line after '======='")
            i = k
            continue
        for x in range(start, k + 1):
            used[x] = True
        search = _strip_inner_fence(lines[start + 1 : mid])
        replace = _strip_inner_fence(lines[mid + 1 : k])
        edits.append(Edit("\n".join(search), "\n".join(replace), count))
        i = k + 1
    return edits


# Unified diffs ------------------------------------------------------------------------------


def _starts_diff(lines: list[str], i: int) -> bool:
    line = lines[i]
    return line.startswith("diff --git ") or _is_file_header(lines, i) or bool(_HUNK.match(line))


def _looks_like_diff(lines: list[str], used: list[bool]) -> bool:
    return any(not used[i] and _starts_diff(lines, i) for i in range(len(lines)))


def _scan_diffs(lines: list[str], used: list[bool], errors: list[str]) -> str:
    files: list[_FileDiff] = []
    i, n = 0, len(lines)
    while i < n:
        fence = _FENCE.match(lines[i])
        if fence:
            close = i + 1
            while close < n and not _closes(lines[close], fence.group(1)):
                close += 1
            first = next((x for x in range(i + 1, close) if lines[x].strip()), close)
            lang = fence.group(2).lower()
            if first < close and (lang in ("diff", "patch", "udiff") or _starts_diff(lines, first)):
                found, _ = _read_diff(lines, first, close, fenced=True)
                files += found
                for x in range(i, min(close + 1, n)):
                    used[x] = True
            i = close + 1
        elif _starts_diff(lines, i):
            found, stop = _read_diff(lines, i, n, fenced=False)
            files += found
            for x in range(i, max(stop, i + 1)):
                used[x] = True
            i = max(stop, i + 1)
        else:
            i += 1
    if not any(f.hunks for f in files) and not any(f.extended for f in files):
        return ""
    return _render_files(files, errors)


def _closes(line: str, opener: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(opener[0] * len(opener)) and not stripped.strip(opener[0])


# Knob ranges and rationale ------------------------------------------------------------------


def _scan_knobs(lines: list[str], used: list[bool], warnings: list[str]) -> dict[str, dict]:
    """Knob ranges from a JSON object {"knobs": {NAME: {low, high, log}}} anywhere outside the edits."""
    i, n = 0, len(lines)
    while i < n:
        if used[i]:
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if fence:
            close = i + 1
            while close < n and not _closes(lines[close], fence.group(1)):
                close += 1
            body = "\n".join(lines[i + 1 : close])
            if fence.group(2).lower() == "json" or '"knobs"' in body:
                raw, why = _decode_json(body)
                if raw is not None:
                    for x in range(i, min(close + 1, n)):
                        used[x] = True
                    return _clean_knobs(raw.get("knobs", raw), warnings)
                if '"knobs"' in body:
                    warnings.append(f"knob block is not valid JSON ({why}); knob ranges ignored")
            i = close + 1
            continue
        if re.search(r'\{\s*"knobs"\s*:', lines[i]) or (lines[i].strip() == "{" and _knobs_follow(lines, i)):
            end = i
            text = ""
            while end < n and not used[end] and not _FENCE.match(lines[end]):
                text += lines[end] + "\n"
                end += 1
            start = text.find("{")
            raw, why = _decode_json(text[start:])
            if raw is not None and "knobs" in raw:
                consumed = text[start:].count("\n") if why == "" else 0
                for x in range(i, min(i + max(consumed, 1), n)):
                    used[x] = True
                return _clean_knobs(raw["knobs"], warnings)
            warnings.append(f"knob block is not valid JSON ({why or 'no knobs key'}); knob ranges ignored")
            return {}
        i += 1
    return {}


def _knobs_follow(lines: list[str], i: int) -> bool:
    return i + 1 < len(lines) and bool(re.match(r'^\s*"knobs"\s*:', lines[i + 1]))


def _decode_json(text: str) -> tuple[dict | None, str]:
    text = text.strip()
    if not text.startswith("{"):
        return None, "no JSON object"
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError) as e:
        return None, one_line(str(e), 120)
    return (value, "") if isinstance(value, dict) else (None, "not a JSON object")


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _clean_knobs(raw: object, warnings: list[str]) -> dict[str, dict]:
    if not isinstance(raw, dict):
        warnings.append("knobs is not a JSON object; knob ranges ignored")
        return {}
    out: dict[str, dict] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not _KNOB_NAME.match(name):
            warnings.append(f"knob {name!r} ignored: names are upper-case environment variables")
            continue
        if not isinstance(spec, dict):
            warnings.append(f"knob {name} ignored: give {{low, high, log}} or {{choices}}")
            continue
        choices = spec.get("choices")
        if isinstance(choices, list) and choices and all(isinstance(c, str | int | float) for c in choices):
            out[name] = {"choices": list(choices)}
            continue
        low, high = _number(spec.get("low")), _number(spec.get("high"))
        log = spec.get("log", False) is True
        if low is None or high is None or not low < high:
            warnings.append(f"knob {name} ignored: needs numeric low < high")
            continue
        if log and low <= 0:
            warnings.append(f"knob {name} ignored: a log range needs low > 0")
            continue
        is_int = spec.get("type") == "int" or (
            spec.get("type") is None and isinstance(spec.get("low"), int) and isinstance(spec.get("high"), int)
        )
        out[name] = {
            "low": int(low) if is_int else low,
            "high": int(high) if is_int else high,
            "log": log,
            "type": "int" if is_int else "float",
        }
    return out


def _rationale(lines: list[str], used: list[bool], limit: int = 1500) -> str:
    prose: list[str] = []
    in_fence = None
    for i, line in enumerate(lines):
        fence = _FENCE.match(line)
        if in_fence:
            if _closes(line, in_fence):
                in_fence = None
            continue
        if fence and not used[i]:
            in_fence = fence.group(1)
            continue
        if not used[i]:
            prose.append(line)
    for k, line in enumerate(prose):
        m = _RATIONALE.match(line)
        if m:
            section = [m.group(1)]
            for rest in prose[k + 1 :]:
                if re.match(r"^\s*(#+\s|[*_]*(knobs?|notes?|changes?)[*_]*\s*:)", rest, re.I):
                    break
                section.append(rest)
            text = one_line(" ".join(section), limit)
            if text:
                return text
    return one_line(" ".join(prose), limit)
