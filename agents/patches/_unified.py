"""Unified diff text: read it tolerantly (fenced or bare, miscounted hunks), re-render it with
recomputed hunk headers, and split it into hunks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.patches._base import TARGET, _target_ok

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+.-]*)")
_HUNK = re.compile(r"^@@+\s*(?:-(\d+)(?:,(\d+))?\s+\+(\d+)(?:,(\d+))?)?[^@]*@@+ ?(.*)$")
_EXTENDED = (
    "old mode", "new mode", "deleted file mode", "new file mode", "similarity index", "dissimilarity index",
    "rename from", "rename to", "copy from", "copy to", "GIT binary patch", "Binary files",
)  # fmt: skip


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
