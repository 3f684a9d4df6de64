"""Patch formats: parse an agent's answer, apply edits, make, apply, compare and combine unified diffs.

This is the one place patches are parsed and applied. `apply_patch` (git apply in a scratch
directory) is what the whole harness uses to turn a candidate's patch into the trainer it runs;
everything else here produces canonical diffs (`make_diff`) that go through it.

An agent may answer with SEARCH/REPLACE blocks or a unified diff, fenced or bare, surrounded by
prose, with CRLF line ends. `parse_edits` never raises: what it cannot use becomes one line in
`ParsedAnswer.errors`, fit to send back to the agent for a repair.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

TARGET = "train_gpt.py"  # the only file a patch may change


class PatchError(ValueError):
    """A patch or edit that cannot be used. The message is one line; `detail` may hold more."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(one_line(message))
        self.detail = detail


class PatchRejected(PatchError):
    """The patch does something no candidate may do (another path, a symlink, binary data, ...)."""


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace so a reason fits one line of a log or a table cell."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Parsing an answer


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
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+.-]*)")
_PATH_LINE = re.compile(r"^\s*(?:[#*>]+\s*)?(?:file(?:name)?\s*:\s*)?[`*\"']*([\w./\\-]+\.\w+)[`*\"']*\s*:?\s*$", re.I)
_HUNK = re.compile(r"^@@+\s*(?:-(\d+)(?:,(\d+))?\s+\+(\d+)(?:,(\d+))?)?[^@]*@@+ ?(.*)$")
_RATIONALE = re.compile(r"^\s*(?:#+\s*)?[*_]*rationale[*_]*\s*[:\-]?[*_]*\s*(.*)$", re.I)
_KNOB_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_EXTENDED = (
    "old mode", "new mode", "deleted file mode", "new file mode", "similarity index", "dissimilarity index",
    "rename from", "rename to", "copy from", "copy to", "GIT binary patch", "Binary files",
)  # fmt: skip


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


def _strip_inner_fence(body: list[str]) -> list[str]:
    if len(body) >= 2 and _FENCE.match(body[0]) and _FENCE.match(body[-1]):
        return body[1:-1]
    return body


def _target_ok(path: str) -> bool:
    path = path.replace("\\", "/").strip()
    return not path.startswith("/") and ".." not in path.split("/") and path.rsplit("/", 1)[-1] == TARGET


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


@dataclass
class _FileDiff:
    old: str = ""
    new: str = ""
    extended: list[str] = field(default_factory=list)
    hunks: list[list[str]] = field(default_factory=list)  # each: [header, line, line, ...]


def _is_file_header(lines: list[str], i: int) -> bool:
    return lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")


def _header_path(line: str) -> str:
    rest = line[4:].split("\t", 1)[0].strip()
    return rest.split()[0] if rest else ""


def _hunk_counts_met(hunk: list[str]) -> bool:
    m = _HUNK.match(hunk[0])
    if not m or m.group(1) is None:
        return False
    want_old = int(m.group(2)) if m.group(2) is not None else 1
    want_new = int(m.group(4)) if m.group(4) is not None else 1
    old = sum(1 for x in hunk[1:] if x[:1] in (" ", "-"))
    new = sum(1 for x in hunk[1:] if x[:1] in (" ", "+"))
    return old >= want_old and new >= want_new


def _read_diff(lines: list[str], i: int, end: int, fenced: bool) -> tuple[list[_FileDiff], int]:
    """Parse diff lines from i up to end; returns the files and the index after the last diff line.

    Inside a fence everything up to the closing fence belongs to the diff (a blank line is a
    context line whose space the agent dropped). Bare, the diff ends at the first line that
    cannot be part of it.
    """
    files: list[_FileDiff] = []
    cur: _FileDiff | None = None
    hunk: list[str] | None = None
    last = i
    while i < end:
        line = lines[i]
        if line.startswith("diff --git "):
            cur, hunk = _FileDiff(), None
            files.append(cur)
            parts = line.split()
            if len(parts) >= 4:
                cur.old, cur.new = parts[2], parts[3]
        elif _is_file_header(lines, i):
            if cur is None or cur.hunks:
                cur = _FileDiff()
                files.append(cur)
            cur.old, cur.new, hunk = _header_path(line), _header_path(lines[i + 1]), None
            i += 1
        elif line.startswith(("index ", *_EXTENDED)) and hunk is None:
            if cur is None:
                cur = _FileDiff()
                files.append(cur)
            cur.extended.append(line)
        elif _HUNK.match(line):
            if cur is None:
                cur = _FileDiff(old=TARGET, new=TARGET)
                files.append(cur)
            hunk = [line]
            cur.hunks.append(hunk)
        elif hunk is not None and line[:1] in (" ", "+", "-", "\\"):
            hunk.append(line)
        elif hunk is not None and not line.strip():
            if not fenced and (_hunk_counts_met(hunk) or not _more_hunk(lines, i + 1, end)):
                break
            hunk.append(" ")
        elif hunk is not None and fenced and not _FENCE.match(line):
            hunk.append(" " + line)  # a context line whose leading space was lost
        elif fenced and not line.strip():
            pass
        else:
            break
        i += 1
        last = i
    for f in files:
        for h in f.hunks:
            while len(h) > 1 and h[-1] == " ":
                h.pop()  # trailing blank "context" is almost always the gap before prose
    return files, last


def _more_hunk(lines: list[str], i: int, end: int) -> bool:
    while i < end and not lines[i].strip():
        i += 1
    return i < end and (lines[i][:1] in (" ", "+", "-", "\\") or lines[i].startswith("@@"))


def _render_hunk(hunk: list[str], shift: int) -> tuple[str, int]:
    """Hunk text with counts recomputed from its lines; also the net line change."""
    m = _HUNK.match(hunk[0])
    body = hunk[1:]
    old = sum(1 for x in body if x[:1] in (" ", "-"))
    new = sum(1 for x in body if x[:1] in (" ", "+"))
    start = int(m.group(1)) if m and m.group(1) is not None else 1
    start = max(start, 1) if old else max(start, 0)
    tail = (m.group(5) or "").strip() if m else ""
    header = f"@@ -{start},{old} +{max(start + shift, 0 if not new else 1)},{new} @@" + (f" {tail}" if tail else "")
    return "\n".join([header, *body]), new - old


def _render_files(files: list[_FileDiff], errors: list[str]) -> str:
    out: list[str] = []
    for f in files:
        for path in {f.old, f.new}:
            if path == "/dev/null":
                errors.append(f"the diff creates or deletes a file; only edit {TARGET}")
                return ""
            if path and not _target_ok(path):
                errors.append(f"the diff changes {path!r}; only {TARGET} may be changed")
                return ""
        bad = [x for x in f.extended if not x.startswith("index ")]
        if bad:
            errors.append(f"the diff has a {bad[0].split(' ')[0]!r} header (modes, renames, binaries are not allowed)")
            return ""
        if not f.hunks:
            continue
        out += [f"--- a/{TARGET}", f"+++ b/{TARGET}"]
        shift = 0
        for h in f.hunks:
            text, delta = _render_hunk(h, shift)
            out.append(text)
            shift += delta
    return "\n".join(out) + "\n" if out else ""


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


# --------------------------------------------------------------------------------------------
# Applying SEARCH/REPLACE edits


def apply_edits(source: str, edits: Sequence[Edit]) -> str:
    """Apply edits in order: exact line match first, then whitespace-tolerant. Raises PatchError."""
    for edit in edits:
        source = _apply_edit(source, edit)
    return source


def _trim_blank(lines: list[str]) -> tuple[int, int]:
    lo, hi = 0, len(lines)
    while lo < hi and not lines[lo].strip():
        lo += 1
    while hi > lo and not lines[hi - 1].strip():
        hi -= 1
    return lo, hi


def _find(src: list[str], pat: list[str]) -> list[int]:
    k = len(pat)
    first = pat[0]
    return [i for i in range(len(src) - k + 1) if src[i] == first and src[i : i + k] == pat]


def _apply_edit(source: str, edit: Edit) -> str:
    if not edit.search.strip():
        raise PatchError(f"block {edit.block}: SEARCH is empty; quote the exact lines of {TARGET} to replace")
    src = source.split("\n")
    pat = edit.search.split("\n")
    rep = edit.replace.split("\n") if edit.replace else []
    hits = _find(src, pat)
    if len(hits) == 1:
        return "\n".join(src[: hits[0]] + rep + src[hits[0] + len(pat) :])
    if not hits:
        lo, hi = _trim_blank(pat)
        core = pat[lo:hi]
        rlo = min(lo, _trim_blank(rep)[0]) if rep else 0
        rhi = len(rep) - min(len(pat) - hi, len(rep) - _trim_blank(rep)[1]) if rep else 0
        rep = rep[rlo:rhi]
        for norm in (str.rstrip, str.strip):
            hits = _find([norm(x) for x in src], [norm(x) for x in core])
            if len(hits) == 1:
                at = hits[0]
                rep = _keep_file_lines(rep, core, src[at : at + len(core)], reindent=norm is str.strip)
                return "\n".join(src[:at] + rep + src[at + len(core) :])
            if hits:
                break
    if hits:
        where = ", ".join(str(h + 1) for h in hits[:6])
        raise PatchError(
            f"block {edit.block}: SEARCH matches {len(hits)} places in {TARGET} (lines {where}); "
            "add surrounding lines so it matches exactly one"
        )
    raise PatchError(
        f"block {edit.block}: SEARCH not found in {TARGET}; first line that did not match: "
        f"{_first_mismatch(src, pat)!r}"
    )


def _keep_file_lines(rep: list[str], pat: list[str], found: list[str], reindent: bool) -> list[str]:
    """After a whitespace-tolerant match: REPLACE lines copied unchanged from SEARCH take the file's
    exact text, and (when indentation differed) the other lines shift by the same indentation."""
    same = {}
    for p, f in zip(pat, found, strict=True):
        same.setdefault(p, f)
    first = next((k for k, x in enumerate(pat) if x.strip()), 0)
    s_ind = pat[first][: len(pat[first]) - len(pat[first].lstrip())]
    t_ind = found[first][: len(found[first]) - len(found[first].lstrip())]
    out = []
    for x in rep:
        if x in same:
            out.append(same[x])
        elif reindent and x.strip() and x.startswith(s_ind):
            out.append(t_ind + x[len(s_ind) :])
        else:
            out.append(x)
    return out


def _first_mismatch(src: list[str], pat: list[str]) -> str:
    """The first SEARCH line at which the longest matching prefix stops matching the file."""
    norm_src = [x.strip() for x in src]
    norm_pat = [x.strip() for x in pat]
    lo, hi = _trim_blank(pat)
    k = lo
    while k < hi and _find(norm_src, norm_pat[lo : k + 1]):
        k += 1
    return pat[min(k, len(pat) - 1)].strip()[:160]


# --------------------------------------------------------------------------------------------
# Unified diffs: make, apply, compare, combine


def split_lines(text: str) -> list[str]:
    """Lines with their newline, splitting on '\\n' only (str.splitlines also splits on \\f, \\x1c, ...)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _matcher(old: list[str], new: list[str]) -> difflib.SequenceMatcher:
    # autojunk off: with it, blank lines in files over 200 lines become "junk" and diffs get noisy
    return difflib.SequenceMatcher(None, old, new, autojunk=False)


def _range(start: int, length: int) -> str:
    return f"{start + 1 if length else start},{length}"


def make_diff(old: str, new: str, path: str = TARGET, context: int = 3) -> str:
    """Unified diff from old to new with a/ b/ prefixes; "" when they are equal."""
    a, b = split_lines(old), split_lines(new)
    if a == b:
        return ""
    out = [f"--- a/{path}\n", f"+++ b/{path}\n"]
    for group in _matcher(a, b).get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{_range(i1, i2 - i1)} +{_range(j1, j2 - j1)} @@\n")
        for tag, x1, x2, y1, y2 in group:
            if tag == "equal":
                out += [" " + line for line in a[x1:x2]]
                continue
            out += ["-" + line for line in a[x1:x2]]
            out += ["+" + line for line in b[y1:y2]]
    return "".join(x if x.endswith("\n") else x + "\n\\ No newline at end of file\n" for x in out)


def _git_env(home: str) -> dict[str, str]:
    # Only what git needs: no API keys, no user config that could change how patches apply.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CEILING_DIRECTORIES": str(Path(home).parent),
    }


def _header_lines(diff: str) -> list[str]:
    """The lines outside hunks, delimited the way `git apply --recount` reads them: after an
    "@@ " header every line starting with ' ', '-', '+' or a backslash (or empty) is hunk content."""
    out, in_hunk = [], False
    for line in diff.split("\n"):
        if line.startswith("@@ "):
            in_hunk = True
        elif not (in_hunk and (line[:1] in (" ", "-", "+", "\\") or not line)):
            in_hunk = False
            out.append(line)
    return out


def _check_headers(diff: str) -> int:
    """Reject anything but a text patch of train_gpt.py; returns the -p strip level."""
    headers = _header_lines(diff)
    for line in headers:
        if line.startswith(("GIT binary patch", "Binary files ")):
            raise PatchRejected("binary patches are not allowed")
        if "120000" in line and line.startswith(("new file mode", "old mode", "new mode", "deleted file mode")):
            raise PatchRejected(f"the patch creates a symlink; only text edits of {TARGET} are allowed")
        if line.startswith(("old mode", "new mode", "new file mode", "deleted file mode")):
            raise PatchRejected(f"file modes, new and deleted files are not allowed; only edit {TARGET}")
        if line.startswith(("rename ", "copy ", "similarity index", "dissimilarity index")):
            raise PatchRejected("renames and copies are not allowed")
    levels: set[int] = set()
    for line in headers:
        paths: list[str] = []
        if line.startswith(("--- ", "+++ ")):
            paths = [_header_path(line)]
        elif line.startswith("diff --git "):
            paths = line.split()[2:]
        for p in paths:
            if p == "/dev/null":
                raise PatchRejected(f"the patch creates or deletes a file; only edit {TARGET}")
            if p.startswith("/") or ".." in p.replace("\\", "/").split("/"):
                raise PatchRejected(f"path {p!r} is absolute or leaves the directory; only {TARGET} may be changed")
            if p in (f"a/{TARGET}", f"b/{TARGET}"):
                levels.add(1)
            elif p == TARGET:
                levels.add(0)
            else:
                raise PatchRejected(f"the patch changes {p!r}; only {TARGET} may be changed")
    if not levels:
        raise PatchError(f"not a unified diff of {TARGET} (no '--- a/{TARGET}' / '+++ b/{TARGET}' header)")
    if len(levels) > 1:
        raise PatchError("mixed path prefixes (some with a/ b/, some without)")
    return levels.pop()


def _git(args: list[str], cwd: str, home: str, patch: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args, str(patch)], cwd=cwd, env=_git_env(home), capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PatchError(f"git apply could not run: {e}") from None


def apply_patch(source: str, diff: str) -> str:
    """Apply a unified diff to the trainer source with `git apply --recount`; raises PatchError.

    The patch may only edit train_gpt.py: other paths, absolute paths, '..', symlinks, mode
    changes, new or deleted files, renames and binary patches are rejected (PatchRejected).
    Hunk line counts need not be right (--recount); context lines must match exactly.
    """
    if not diff.strip():
        return source
    if "\r" not in source:
        diff = diff.replace("\r\n", "\n")
    return _apply_patch(source, diff)


@functools.lru_cache(maxsize=64)  # pure: the loop, the catalog and combine re-apply the same patches
def _apply_patch(source: str, diff: str) -> str:
    level = _check_headers(diff)
    with tempfile.TemporaryDirectory(prefix="pgolf-apply-") as tmp:
        work, home = Path(tmp, "work"), Path(tmp, "home")
        work.mkdir()
        home.mkdir()
        target = work / TARGET
        target.write_bytes(source.encode())
        patch = Path(tmp, "candidate.diff")
        patch.write_bytes(diff.encode() if diff.endswith("\n") else (diff + "\n").encode())
        # one git process: --numstat/--summary report what git parsed, --apply then applies it in
        # the scratch directory; anything the report shows beyond a text edit of the trainer is
        # rejected before the result is read
        args = ["apply", f"-p{level}", "--recount", "--whitespace=nowarn", "--numstat", "--summary", "--apply"]
        done = _git(args, str(work), str(home), patch)
        for row in done.stdout.splitlines():
            fields = row.split("\t")
            if len(fields) == 3 and fields[2] != TARGET:
                raise PatchRejected(f"the patch changes {fields[2]!r}; only {TARGET} may be changed")
            if len(fields) == 3 and fields[0] == "-":
                raise PatchRejected("binary patches are not allowed")
            if row.startswith(" ") and any(w in row for w in ("mode", "rename", "copy")):
                raise PatchRejected(f"not allowed: {row.strip()}")
        if done.returncode != 0:
            raise PatchError(_apply_failure(source, diff, done.stderr))
        if sorted(p.name for p in work.iterdir()) != [TARGET] or target.is_symlink():
            raise PatchRejected(f"the patch created files beside {TARGET}")
        return target.read_bytes().decode()


def _apply_failure(source: str, diff: str, stderr: str) -> str:
    m = re.search(r"patch failed: [^:\n]+:(\d+)", stderr)
    if m:
        hint = int(m.group(1))
        for n, hunk in enumerate(_diff_hunks(diff), 1):
            if hunk.old_start == hint:
                old = [x[1:] for x in hunk.lines if x[:1] in (" ", "-")]
                src = source.split("\n")
                if old and not _find(src, old):
                    line = _first_mismatch(src, old)
                    return f"hunk {n} ({hunk.header}) does not apply: line not found in {TARGET}: {line!r}"
                return f"hunk {n} ({hunk.header}) does not apply here; give 3 unchanged context lines around changes"
    first = next((x for x in stderr.splitlines() if x.strip()), "git apply failed")
    return f"patch does not apply: {first.removeprefix('error: ')}"


@dataclass(frozen=True)
class _Hunk:
    header: str
    old_start: int
    lines: tuple[str, ...]


def _diff_hunks(diff: str) -> list[_Hunk]:
    lines = diff.replace("\r\n", "\n").split("\n")
    files, _ = _read_diff(lines, 0, len(lines), fenced=False)
    out = []
    for f in files:
        for h in f.hunks:
            m = _HUNK.match(h[0])
            start = int(m.group(1)) if m and m.group(1) is not None else 1
            out.append(_Hunk(h[0].split(" @@")[0] + " @@", start, tuple(h[1:])))
    return out


def hunks_to_edits(diff: str) -> list[Edit]:
    """Each hunk as a SEARCH/REPLACE edit, for diffs whose context does not match exactly."""
    edits = []
    for n, hunk in enumerate(_diff_hunks(diff), 1):
        old = [x[1:] for x in hunk.lines if x[:1] in (" ", "-")]
        new = [x[1:] for x in hunk.lines if x[:1] in (" ", "+")]
        if not any(x.strip() for x in old):
            raise PatchError(f"hunk {n} ({hunk.header}) has no context lines to locate it; add context")
        edits.append(Edit("\n".join(old), "\n".join(new), n))
    return edits


def apply_answer(source: str, parsed: ParsedAnswer) -> str:
    """The source with a parsed answer's edits or diff applied; raises PatchError.

    Diffs go through apply_patch first; when their context does not match exactly, each hunk is
    retried as a whitespace-tolerant SEARCH/REPLACE edit. Forbidden patches are never retried.
    """
    if parsed.errors:
        raise PatchError(parsed.errors[0])
    if parsed.edits:
        new = apply_edits(source, parsed.edits)
    else:
        try:
            new = apply_patch(source, parsed.diff)
        except PatchRejected:
            raise
        except PatchError:
            new = apply_edits(source, hunks_to_edits(parsed.diff))
    if new == source:
        raise PatchError(f"the edits leave {TARGET} unchanged")
    return new


def to_diff(source: str, parsed: ParsedAnswer) -> str:
    """The canonical diff (make_diff) of a parsed answer against source; raises PatchError."""
    return make_diff(source, apply_answer(source, parsed))


def changed_lines(diff: str) -> list[str]:
    """The diff's added and removed lines, whitespace-collapsed, whitespace-only changes cancelled."""
    out: list[str] = []
    for hunk in _diff_hunks(diff):
        run: list[str] = []
        for line in [*hunk.lines, " "]:
            if line[:1] in ("+", "-"):
                text = " ".join(line[1:].split())
                if text:
                    run.append(line[0] + text)
            elif run:
                out += _cancel_whitespace_changes(run)
                run = []
    return out


def _cancel_whitespace_changes(run: list[str]) -> list[str]:
    """Drop lines a run of changes removes and adds again (they differed only in whitespace)."""
    removed = Counter(x[1:] for x in run if x[0] == "-")
    added = Counter(x[1:] for x in run if x[0] == "+")
    drop = {"-": removed & added, "+": removed & added}
    out = []
    for x in run:
        if drop[x[0]][x[1:]] > 0:
            drop[x[0]][x[1:]] -= 1
        else:
            out.append(x)
    return out


def normalize_diff(diff: str) -> str:
    """Canonical text of what a diff changes: no headers, no context, no line numbers, no
    whitespace-only changes. Two diffs making the same change with different context sizes,
    offsets or indentation of unchanged code normalize alike."""
    return "\n".join(changed_lines(diff))


def diff_hash(diff: str) -> str:
    """Hash of normalize_diff: the dedup key the loop keeps in SearchView.tried_patch_hashes."""
    return hashlib.sha256(normalize_diff(diff).encode()).hexdigest()[:16]


_NUMBER = re.compile(r"(?<![\w.])\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.])|(?<![\w.])\.\d+")


def structure(diff: str) -> set[str]:
    """The normalized changed lines with numeric literals masked: what a change does, not its constants."""
    return {_NUMBER.sub("<n>", line) for line in changed_lines(diff)}


def similarity(diff_a: str, diff_b: str, base: str = "") -> float:
    """Jaccard similarity of the structures (changed lines, numbers masked) of two diffs, in [0, 1].

    Jaccard rather than difflib's ratio: it does not depend on hunk order, is symmetric and
    linear, and a small patch inside a large one scores low (technique A vs A+B is a new
    candidate). Numbers are masked because tuning constants is the nested Optuna search's job:
    two patches that differ only in a constant are near-duplicates.

    `base` is a diff both sides build on (a parent): its lines are left out of both, so children
    of one parent are compared by what each adds (A+x vs A+y), not by the A they share.
    """
    common = structure(base) if base else set()
    a, b = structure(diff_a) - common, structure(diff_b) - common
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _regions(old: list[str], new: list[str]) -> list[tuple[int, int, list[str]]]:
    return [(i1, i2, new[j1:j2]) for tag, i1, i2, j1, j2 in _matcher(old, new).get_opcodes() if tag != "equal"]


def _clash(a: tuple[int, int, list[str]], b: tuple[int, int, list[str]]) -> bool:
    (s1, e1, _), (s2, e2, _) = a, b
    if s1 == e1 and s2 == e2:
        return s1 == s2  # two insertions at one place: their order is a decision
    if s1 == e1:
        return s2 < s1 < e2
    if s2 == e2:
        return s1 < s2 < e1
    return max(s1, s2) < min(e1, e2)


def combine(source: str, diff_a: str, diff_b: str) -> str:
    """One diff with the changes of both; PatchError naming the conflicting lines otherwise.

    Changes that replace overlapping lines, or insert at the same place, conflict; the error's
    `detail` holds both sides of each conflict so an LLM combiner can resolve it.
    """
    old = split_lines(source)
    try:
        new_a = split_lines(apply_patch(source, diff_a))
    except PatchError as e:
        raise PatchError(f"A does not apply: {e}") from None
    try:
        new_b = split_lines(apply_patch(source, diff_b))
    except PatchError as e:
        raise PatchError(f"B does not apply: {e}") from None
    ra, rb = _regions(old, new_a), _regions(old, new_b)
    clashes = [(x, y) for x in ra for y in rb if x != y and _clash(x, y)]
    if clashes:
        parts = []
        for (s1, e1, add1), (s2, e2, add2) in clashes:
            lo, hi = min(s1, s2), max(e1, e2)
            parts.append(
                f"lines {lo + 1}-{max(hi, lo + 1)} of {TARGET} were:\n{''.join(old[lo:hi])}"
                f"A changes lines {s1 + 1}-{e1} to:\n{''.join(add1)}B changes lines {s2 + 1}-{e2} to:\n{''.join(add2)}"
            )
        (s1, e1, _), (s2, e2, _) = clashes[0]
        where = f"{min(s1, s2) + 1}-{max(e1, e2, min(s1, s2) + 1)}"
        raise PatchError(
            f"conflict: A and B both change {TARGET} lines {where} ({len(clashes)} conflicts)", "\n".join(parts)
        )
    merged = list(old)
    # identical changes made by both are applied once
    regions = sorted({(s, e, tuple(add)) for s, e, add in ra + rb}, key=lambda r: (r[0], r[1]), reverse=True)
    for s, e, add in regions:
        merged[s:e] = list(add)
    return make_diff(source, "".join(merged))
