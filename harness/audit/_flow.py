"""The validation-data flow tracker: one flow-sensitive walk of one scope.

`FlowWalker` follows taint (which values come from validation data) and freshness (which values were produced
in the current iteration of each enclosing loop) statement by statement, through branches and loops (each loop
body is walked twice so loop-carried values count), and records the events `_val` judges: adaptations
("B": backward / autograd.grad / a call to a helper that adapts) and score accumulations ("S").
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.audit._context import Ctx, finding, unparse, walk_no_defs
from harness.audit._findings import ERROR, Finding
from harness.audit._scopes import Scope
from harness.audit._taint import (
    CALIB_RE,
    EPOCH_RE,
    LOCAL,
    TRAIN_PATH_RE,
    assigned_keys,
    is_score_acc,
    key_of,
    literal_glob,
    looks_val,
    refs,
)


@dataclass
class Event:
    kind: str  # "B" (adaptation: backward / grad / adapting call) or "S" (score accumulation)
    seq: int
    line: int
    loops: tuple[int, ...]  # ids of enclosing loops in this scope, outermost first
    fresh: frozenset[int]  # loops relative to whose current iteration the data is fresh
    sources: frozenset[str]
    what: str
    target: str | None = None  # S: the accumulator key


@dataclass
class ScopeResult:
    events: list[Event] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    tainted_calls: list[tuple[str, bool, list[int | str]]] = field(default_factory=list)  # callee, is_attr, params
    deps: dict[str, set[str]] = field(default_factory=dict)  # flow-insensitive key -> keys it was built from
    return_refs: set[str] = field(default_factory=set)
    loop_info: dict[int, tuple[int, bool]] = field(default_factory=dict)  # loop id -> (line, epoch-like)


class LoopLevel:
    def __init__(self, loop_id: int, fresh: set[str], assigned: set[str]) -> None:
        self.id = loop_id
        self.fresh = fresh  # keys holding data produced in the current iteration
        self.assigned = assigned  # keys assigned anywhere in the loop (the rest is loop-invariant)


def _calls_by_end(node: ast.AST) -> list[ast.Call]:
    """The calls in an expression, inner calls (which finish first) before the calls they are arguments of."""
    calls = [n for n in walk_no_defs(node) if isinstance(n, ast.Call)]
    calls.sort(key=lambda c: (getattr(c, "end_lineno", 0) or 0, getattr(c, "end_col_offset", 0) or 0))
    return calls


class FlowWalker:
    """Flow-sensitive taint + freshness walk of one scope; records adaptation and scoring events."""

    MAX_DOUBLE_PASS_DEPTH = 6

    def __init__(self, ctx: Ctx, scope: Scope, tainted_params: set[str], adapting: set[str]) -> None:
        self.ctx = ctx
        self.scope = scope
        self.params = set(scope.params)
        self.adapting = adapting
        self.state: dict[str, frozenset[str]] = {p: frozenset({f"param:{p}"}) for p in tainted_params}
        self.loops: list[LoopLevel] = []
        self.silent = 0
        self.seq = 0
        self.res = ScopeResult()

    # -- cached per-node helpers (the walk visits loop bodies several times) ----------------------
    def _memo(self, kind: str, node: ast.AST, compute: Callable[[ast.AST], Any]) -> Any:
        key = (kind, id(node))
        if key not in self.ctx.memo:
            self.ctx.memo[key] = compute(node)
        return self.ctx.memo[key]

    def _refs(self, node: ast.AST | None) -> tuple[set[str], bool]:
        if node is None:
            return set(), False
        keys, literal = self._memo("refs", node, refs)
        return set(keys), literal

    # -- taint lookup --------------------------------------------------------------------------
    def _key_sources(self, key: str) -> frozenset[str]:
        if key in self.state:
            return self.state[key]
        if looks_val(key):
            root = key.split(".", 1)[0]
            return frozenset({f"param:{root}"}) if root in self.params and "." not in key else frozenset({LOCAL})
        return frozenset()

    def sources(self, node: ast.AST | None) -> tuple[frozenset[str], set[str]]:
        keys, literal = self._refs(node)
        out: set[str] = {LOCAL} if literal else set()
        for k in keys:
            out |= self._key_sources(k)
        return frozenset(out), keys

    def _is_fresh(self, level: LoopLevel, keys: set[str]) -> bool:
        """Data is fresh for a loop's iteration when built from this iteration's values, or read anew
        from a loop-invariant validation source (``val_tokens[pos:pos + n]`` in a while loop)."""
        if keys & level.fresh:
            return True
        return any(k not in level.assigned and self._key_sources(k) for k in keys)

    def _fresh_levels(self, keys: set[str]) -> frozenset[int]:
        return frozenset(level.id for level in self.loops if self._is_fresh(level, keys))

    # -- recording -----------------------------------------------------------------------------
    def _record(self, kind: str, node: ast.AST, srcs: frozenset[str], keys: set[str], what: str,
                target: str | None = None) -> None:  # fmt: skip
        self.seq += 1
        if self.silent:
            return
        self.res.events.append(
            Event(kind, self.seq, getattr(node, "lineno", 0), tuple(level.id for level in self.loops),
                   self._fresh_levels(keys), srcs, what, target)
        )  # fmt: skip

    def _finding(self, finding: Finding) -> None:
        if not self.silent:
            self.res.findings.append(finding)

    # -- assignments ---------------------------------------------------------------------------
    def assign(self, target: ast.AST, srcs: frozenset[str], keys: set[str], weak: bool = False,
               value: ast.AST | None = None) -> None:  # fmt: skip
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self.assign(elt, srcs, keys, weak, None)
            return
        if isinstance(target, ast.Starred):
            self.assign(target.value, srcs, keys, weak, None)
            return
        if isinstance(target, ast.Subscript):
            base = target.value
            while isinstance(base, ast.Subscript):
                base = base.value
            k = key_of(base)
            if k:
                idx_srcs, idx_keys = self.sources(target.slice)
                self._bind(k, srcs, keys | idx_keys, weak=True)
            return
        k = key_of(target)
        if not k:
            return
        if srcs and TRAIN_PATH_RE.search(k) and "ttt" not in k.lower() and (LOCAL in srcs):
            self._finding(
                finding(
                    "val_in_train_path", ERROR,
                    f"`{k}` is built from validation data/paths; training must read only fineweb_train_* "
                    "shards, point it at the train split",
                    target,
                )
            )  # fmt: skip
        if value is not None:
            lit = literal_glob(value)
            if lit and TRAIN_PATH_RE.search(k):
                self._finding(
                    finding(
                        "val_in_train_path", ERROR,
                        f"`{k}` uses the glob {lit!r}, which also matches fineweb_val_* shards; use "
                        "fineweb_train_*.bin",
                        target,
                    )
                )  # fmt: skip
        self._bind(k, srcs, keys, weak)

    def _bind(self, k: str, srcs: frozenset[str], keys: set[str], weak: bool) -> None:
        self.res.deps.setdefault(k, set()).update(keys)
        if weak:
            self.state[k] = self._key_sources(k) | srcs
        else:
            self.state[k] = srcs
        for level in self.loops:
            if self._is_fresh(level, keys):
                level.fresh.add(k)
            elif not weak:
                level.fresh.discard(k)

    # -- expressions: events inside calls --------------------------------------------------------
    def scan_expr(self, node: ast.AST | None) -> None:
        if node is None:
            return
        for call in self._memo("calls", node, _calls_by_end):  # sorted by end position: inner calls finish first
            self.scan_call(call)

    def scan_call(self, call: ast.Call) -> None:
        f = call.func
        name = self.ctx.call_name(call)
        simple = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        # adaptation events
        data: list[ast.AST] = []
        what = ""
        if isinstance(f, ast.Attribute) and f.attr == "backward":
            data, what = [f.value], f"{unparse(f.value)}.backward()"
        elif name.endswith(("autograd.grad", "autograd.backward")) and call.args:
            data, what = [call.args[0]], f"{name}(...)"
        elif simple and simple in self.adapting and simple != self.scope.name:
            data, what = list(call.args) + [kw.value for kw in call.keywords], f"{simple}(...) (adapts the model)"
        srcs: set[str] = set()
        keys: set[str] = set()
        for d in data:
            s, k = self.sources(d)
            srcs |= s
            keys |= k
        closures = self._closures_run(call)
        for closure, captured in closures.items():  # a closure adapts on what it captures, where it runs
            if closure in self.adapting and closure != self.scope.name:
                s, k = self._captured_sources(captured)
                srcs |= s
                keys |= k
                what = what or f"{closure}(...) (adapts the model on {', '.join(sorted(k))}, which it captures)"
        if srcs:
            self._record("B", call, frozenset(srcs), keys, what)
        # score accumulation through methods: acc.add_(x), accs.append(x)
        if isinstance(f, ast.Attribute) and f.attr in ("add_", "append", "extend", "addcmul_") and call.args:
            acc = key_of(f.value)
            if is_score_acc(acc):
                srcs2, keys2 = self.sources(call.args[0])
                if srcs2:
                    self._record("S", call, srcs2, keys2, f"{acc}.{f.attr}(...)", acc)
        # calibration on val data
        if simple and CALIB_RE.search(simple):
            srcs3 = frozenset().union(*(self.sources(a)[0] for a in call.args)) if call.args else frozenset()
            if LOCAL in srcs3:
                self._finding(
                    finding(
                        "val_used_for_calibration", ERROR,
                        f"`{simple}(...)` is fed validation data; quantization calibration (Hessians, "
                        "GPTQ) must use training data or self-generated samples",
                        call,
                    )
                )  # fmt: skip
        # interprocedural: which parameters of module functions receive tainted data
        if simple and not self.silent:
            params: list[int | str] = []
            for i, a in enumerate(call.args):
                if isinstance(a, ast.Starred):
                    break
                if self.sources(a)[0]:
                    params.append(i)
            params += [kw.arg for kw in call.keywords if kw.arg and self.sources(kw.value)[0]]
            if params:
                self.res.tainted_calls.append((simple, isinstance(f, ast.Attribute), params))
        if not self.silent:  # a closure's captures are passed wherever it runs
            for closure, captured in closures.items():
                tainted: list[int | str] = sorted(self._captured_sources(captured)[1])
                if tainted:
                    self.res.tainted_calls.append((closure, False, tainted))

    def _closures_run(self, call: ast.Call) -> dict[str, list[str]]:
        """Closures of this scope that `call` runs: called by name, or handed over (`opt.step(closure)`)."""
        operands = [call.func, *call.args, *(kw.value for kw in call.keywords)]
        names = [n.id for n in operands if isinstance(n, ast.Name) and n.id in self.scope.closures]
        return {name: self.scope.closures[name] for name in names}

    def _captured_sources(self, captured: list[str]) -> tuple[set[str], set[str]]:
        """Taint sources of a closure's captures here, and which captures carry them."""
        srcs: set[str] = set()
        tainted: set[str] = set()
        for name in captured:
            if s := self._key_sources(name):
                srcs |= s
                tainted.add(name)
        return srcs, tainted

    # -- statements ----------------------------------------------------------------------------
    def walk_body(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.walk_stmt(stmt)

    def walk_stmt(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return  # separate scopes
        if isinstance(stmt, ast.Assign):
            self.scan_expr(stmt.value)
            srcs, keys = self.sources(stmt.value)
            for t in stmt.targets:
                self.assign(t, srcs, keys, value=stmt.value)
                tk = key_of(t)
                if is_score_acc(tk) and srcs and tk in keys:  # acc = acc + x
                    self._record("S", stmt, srcs, keys, f"{tk} = {tk} + ...", tk)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.scan_expr(stmt.value)
                srcs, keys = self.sources(stmt.value)
                self.assign(stmt.target, srcs, keys, value=stmt.value)
        elif isinstance(stmt, ast.AugAssign):
            self.scan_expr(stmt.value)
            srcs, keys = self.sources(stmt.value)
            tk = key_of(stmt.target) or key_of(getattr(stmt.target, "value", stmt.target))
            if is_score_acc(tk) and srcs:
                self._record("S", stmt, srcs, keys, f"{tk} += ...", tk)
            self.assign(stmt.target, srcs, keys, weak=True)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.scan_expr(stmt.iter)
            srcs, keys = self.sources(stmt.iter)
            self._loop(stmt, stmt.target, srcs, keys)
        elif isinstance(stmt, ast.While):
            self.scan_expr(stmt.test)
            self._loop(stmt, None, frozenset(), set())
        elif isinstance(stmt, ast.If):
            self.scan_expr(stmt.test)
            self._branches([stmt.body, stmt.orelse])
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self.scan_expr(item.context_expr)
                if item.optional_vars is not None:
                    srcs, keys = self.sources(item.context_expr)
                    self.assign(item.optional_vars, srcs, keys)
            self.walk_body(stmt.body)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self.walk_body(stmt.body)  # type: ignore[attr-defined]
            for handler in stmt.handlers:  # type: ignore[attr-defined]
                self.walk_body(handler.body)
            self.walk_body(stmt.orelse)  # type: ignore[attr-defined]
            self.walk_body(stmt.finalbody)  # type: ignore[attr-defined]
        elif isinstance(stmt, ast.Match):
            self.scan_expr(stmt.subject)
            self._branches([case.body for case in stmt.cases] + [[]])
        elif isinstance(stmt, ast.Return):
            self.scan_expr(stmt.value)
            if not self.silent:
                self.res.return_refs |= self._refs(stmt.value)[0]
        else:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self.scan_expr(child)

    def _branches(self, bodies: list[list[ast.stmt]]) -> None:
        start_state = dict(self.state)
        start_fresh = [set(level.fresh) for level in self.loops]
        merged_state: dict[str, frozenset[str]] = {}
        merged_fresh = [set() for _ in self.loops]
        for body in bodies:
            self.state = dict(start_state)
            for level, fresh in zip(self.loops, start_fresh, strict=True):
                level.fresh = set(fresh)
            self.walk_body(body)
            for k, v in self.state.items():
                merged_state[k] = merged_state.get(k, frozenset()) | v
            for acc, level in zip(merged_fresh, self.loops, strict=True):
                acc |= level.fresh
        self.state = merged_state
        for level, fresh in zip(self.loops, merged_fresh, strict=True):
            level.fresh = fresh

    def _loop(self, stmt: ast.For | ast.AsyncFor | ast.While, target: ast.AST | None,
              srcs: frozenset[str], keys: set[str]) -> None:  # fmt: skip
        loop_id = id(stmt)
        epoch_like = False
        if target is not None:
            tk = self._refs(target)[0]
            epoch_like = any(EPOCH_RE.search(k.rsplit(".", 1)[-1]) for k in tk | keys)
        self.res.loop_info[loop_id] = (stmt.lineno, epoch_like)
        passes = 2 if len(self.loops) < self.MAX_DOUBLE_PASS_DEPTH else 1
        assigned = self._memo("assigned", stmt, assigned_keys)
        for p in range(passes):
            silent = p < passes - 1
            self.silent += silent
            level = LoopLevel(loop_id, set(), assigned)
            if target is not None:
                self.assign(target, srcs, keys)
                level.fresh |= self._refs(target)[0]
            self.loops.append(level)
            self.walk_body(stmt.body)
            self.loops.pop()
            self.silent -= silent
        self.walk_body(stmt.orelse)
