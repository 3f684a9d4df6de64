"""Comparing diffs: what a diff changes (normalized), its dedup hash, and similarity between two diffs."""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from agents.patches._unified import _diff_hunks


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
