"""Making unified diffs: `make_diff`, the canonical diff every patch the harness stores goes through."""

from __future__ import annotations

import difflib

from agents.patches._base import TARGET


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
