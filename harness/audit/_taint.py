"""What counts as validation data, a score accumulator or an epoch loop, and what an expression reads.

The vocabulary of the validation-data flow analysis (`_flow`, `_val`): names and path literals that look like
validation data, score accumulators, epoch-like loops, calibration helpers, and the keys (`x`, `a.b`) an
expression reads or a loop assigns.
"""

from __future__ import annotations

import ast
import re

from harness.audit._context import const_str, walk_no_defs

_VAL_WORD = r"(?:val|valid|validation|heldout|held_out)"
VAL_NAME_RE = re.compile(rf"(?:^|_){_VAL_WORD}(?:_|\d)|_{_VAL_WORD}$", re.I)
VAL_METRIC_RE = re.compile(  # val-named values that are metrics or settings, not validation data
    rf"(?:^|_){_VAL_WORD}_(?:loss|losses|bpb|nll|ppl|acc|accuracy|score|bits|metric|metrics|every|batch_size|"
    r"batch_tokens|freq|interval|stride|log|time|time_ms|seq_len|frac|fraction|doc_fraction|steps)(?:_|$)",
    re.I,
)
VAL_LITERAL_RE = re.compile(
    r"fineweb_val|(?:^|[_/])val(?:id|idation)?_(?:\*|\d+)|/val(?:id|idation)?/|_val\.(?:bin|npy|pt|txt)", re.I
)
GLOB_BOTH_RE = re.compile(r"(?:^|/)(?:fineweb_?)?\*+(?:_\d+)?\*?\.bin$", re.I)
TRAIN_PATH_RE = re.compile(
    r"(?:^|_|\.)train(?:ing)?_(?:files?|pattern|glob|shards?|paths?|dir|loader|data|dataset|stream|tokens|iter)"
    r"(?:$|_)",
    re.I,
)
SCORE_ACC_RE = re.compile(r"loss|nll|bpb|bits|score|xent|entropy|logprob", re.I)
NOT_SCORE_RE = re.compile(r"train|running|ema|smooth|warm", re.I)
EPOCH_RE = re.compile(r"epoch|(?:^|_)(?:ep|pass|passes|rounds?|repeats?|sweeps?)(?:_|$|\d)", re.I)
CALIB_RE = re.compile(r"hessian|calib|gptq", re.I)
_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "numel", "size", "dim", "nelement"}
_META_FUNCS = {"len", "isinstance", "type", "id", "hasattr", "callable"}

LOCAL = "local"  # taint source kinds: "local" (val data named/loaded in this scope) or "param:<name>"


def key_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = key_of(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def refs(node: ast.AST | None) -> tuple[set[str], bool]:
    """Keys an expression reads (skipping size/shape metadata) and whether it has a val-path literal."""
    keys: set[str] = set()
    literal = False
    if node is None:
        return keys, literal
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name) and f.id in _META_FUNCS:
                continue
            if isinstance(f, ast.Attribute) and f.attr in _META_ATTRS:
                continue
        if isinstance(n, ast.Attribute) and n.attr in _META_ATTRS:
            continue
        if isinstance(n, (ast.Name, ast.Attribute)):
            k = key_of(n)
            if k:
                keys.add(k)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and VAL_LITERAL_RE.search(n.value):
            literal = True
        elif isinstance(n, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(n))
    return keys, literal


def looks_val(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return bool(VAL_NAME_RE.search(last)) and not VAL_METRIC_RE.search(last)


def is_score_acc(key: str | None) -> bool:
    if not key:
        return False
    last = key.rsplit(".", 1)[-1]
    return bool(SCORE_ACC_RE.search(last)) and not NOT_SCORE_RE.search(last)


def assigned_keys(loop: ast.AST) -> set[str]:
    out: set[str] = set()

    def add(t: ast.AST) -> None:
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                add(e)
        elif isinstance(t, ast.Starred):
            add(t.value)
        elif isinstance(t, ast.Subscript):
            add(t.value)
        elif (k := key_of(t)) is not None:
            out.add(k)

    for n in walk_no_defs(loop):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                add(t)
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.NamedExpr)):
            add(n.target)
        elif isinstance(n, ast.withitem) and n.optional_vars is not None:
            add(n.optional_vars)
    return out


def both_splits_glob(s: str | None) -> bool:
    """A shard glob that matches the train and the val split alike ('fineweb_*.bin')."""
    return bool(s) and bool(GLOB_BOTH_RE.search(s)) and not re.search(r"train|val", s, re.I)


def literal_glob(node: ast.AST) -> str | None:
    """The first both-splits glob literal inside an expression, if any."""
    for n in walk_no_defs(node):
        s = const_str(n)
        if both_splits_glob(s):
            return s
    return None
