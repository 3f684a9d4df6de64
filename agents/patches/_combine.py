"""Combining two diffs of one source into one, or a PatchError naming the conflicting lines."""

from __future__ import annotations

from agents.patches._apply import apply_patch
from agents.patches._base import TARGET, PatchError
from agents.patches._make import _matcher, make_diff, split_lines


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
