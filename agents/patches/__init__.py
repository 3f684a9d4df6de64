"""Patch formats: parse an agent's answer, apply edits, make, apply, compare and combine unified diffs.

This is the one place patches are parsed and applied. `apply_patch` (git apply in a scratch
directory) is what the whole harness uses to turn a candidate's patch into the trainer it runs;
everything else here produces canonical diffs (`make_diff`) that go through it.

An agent may answer with SEARCH/REPLACE blocks or a unified diff, fenced or bare, surrounded by
prose, with CRLF line ends. `parse_edits` never raises: what it cannot use becomes one line in
`ParsedAnswer.errors`, fit to send back to the agent for a repair.

Modules:

_base      TARGET, PatchError, PatchRejected, one_line
_unified   reading and re-rendering unified diff text; its hunks
_answer    parse_edits -> ParsedAnswer (Edit blocks or a diff, knob ranges, rationale)
_apply     apply_edits, apply_patch (git apply), apply_answer, hunks_to_edits, to_diff
_make      make_diff, split_lines
_compare   changed_lines, normalize_diff, diff_hash, structure, similarity
_combine   combine
"""

from agents.patches._answer import Edit, ParsedAnswer, parse_edits
from agents.patches._apply import apply_answer, apply_edits, apply_patch, hunks_to_edits, to_diff
from agents.patches._base import TARGET, PatchError, PatchRejected, one_line
from agents.patches._combine import combine
from agents.patches._compare import changed_lines, diff_hash, normalize_diff, similarity, structure
from agents.patches._make import make_diff, split_lines

__all__ = [
    "TARGET",
    "Edit",
    "ParsedAnswer",
    "PatchError",
    "PatchRejected",
    "apply_answer",
    "apply_edits",
    "apply_patch",
    "changed_lines",
    "combine",
    "diff_hash",
    "hunks_to_edits",
    "make_diff",
    "normalize_diff",
    "one_line",
    "parse_edits",
    "similarity",
    "split_lines",
    "structure",
    "to_diff",
]
