"""Static checks on validation data: used for training, for calibration, or in test-time training (TTT) that
adapts before it scores or scores twice; and shard globs that match both splits.

`check_val_flow` walks every scope with `_flow.FlowWalker` to a fixpoint over which function parameters receive
validation data and which helpers adapt on what they are given, then judges each scope's events.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from harness.audit._context import Ctx, const_str, finding
from harness.audit._findings import ERROR, WARNING, Finding
from harness.audit._flow import Event, FlowWalker, ScopeResult
from harness.audit._scopes import Scope, collect_scopes
from harness.audit._taint import LOCAL, both_splits_glob


def _closure(deps: dict[str, set[str]], start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        k = todo.pop()
        if k in seen:
            continue
        seen.add(k)
        todo.extend(deps.get(k, ()))
        if "." in k:
            todo.append(k.split(".", 1)[0])
    return seen


def check_val_flow(ctx: Ctx) -> Iterator[Finding]:
    """Validation data used for training, calibration, or TTT that adapts before (or re-)scoring."""
    scopes = collect_scopes(ctx.tree)
    by_name: dict[str, list[Scope]] = {}
    for s in scopes:
        if s.is_function:
            by_name.setdefault(s.name, []).append(s)
    called: set[str] = set()
    for call in ctx.calls:
        f = call.func
        called.add(f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")
    # names referenced anywhere but as a call (passed as callbacks) also count as having callers
    for node in ctx.nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in by_name:
            called.add(node.id)

    tainted_params: dict[int, set[str]] = {id(s.node): set() for s in scopes}
    adapting: set[str] = set()
    results: dict[int, ScopeResult] = {}
    for _ in range(8):  # fixpoint over parameter taint and adapting helpers
        results = {}
        for s in scopes:
            walker = FlowWalker(ctx, s, tainted_params[id(s.node)], adapting)
            walker.walk_body(s.node.body)  # type: ignore[attr-defined]
            results[id(s.node)] = walker.res
        new_params = {k: set(v) for k, v in tainted_params.items()}
        for res in results.values():
            for callee, is_attr, params in res.tainted_calls:
                for target in by_name.get(callee, []):
                    names = target.params
                    offset = 1 if is_attr and names and names[0] in ("self", "cls") else 0
                    for p in params:
                        if isinstance(p, int) and p + offset < len(names):
                            new_params[id(target.node)].add(names[p + offset])
                        elif isinstance(p, str) and (p in names or p in target.captures):
                            new_params[id(target.node)].add(p)
        new_adapting = set(adapting)
        for s in scopes:
            res = results[id(s.node)]
            if s.is_function and s.name in called and _unguarded_adaptations(res, param_only=True):
                new_adapting.add(s.name)  # a helper that adapts on whatever its callers pass in
        if new_params == tainted_params and new_adapting == adapting:
            break
        tainted_params, adapting = new_params, new_adapting

    for s in scopes:
        res = results[id(s.node)]
        yield from res.findings
        yield from _judge_scope(s, res, has_callers=s.is_function and s.name in called)


def _guard_loop(res: ScopeResult, b: Event) -> int | None:
    """Innermost loop enclosing `b` that also contains a score accumulation, if any."""
    for loop_id in reversed(b.loops):
        if any(e.kind == "S" and loop_id in e.loops for e in res.events):
            return loop_id
    return None


def _unguarded_adaptations(res: ScopeResult, param_only: bool) -> list[Event]:
    out = []
    for e in res.events:
        if e.kind == "B" and _guard_loop(res, e) is None:
            if param_only and LOCAL in e.sources:
                continue
            out.append(e)
    return out


def _judge_scope(scope: Scope, res: ScopeResult, has_callers: bool) -> Iterator[Finding]:
    val_b = [e for e in res.events if e.kind == "B"]
    if not val_b:
        return
    guarded: dict[int, list[Event]] = {}
    for b in val_b:
        loop_id = _guard_loop(res, b)
        if loop_id is None:
            if LOCAL in b.sources or not has_callers:
                yield finding(
                    "val_used_for_training", ERROR,
                    f"`{b.what}` on validation data with no score-first accumulation around it (pre-scoring "
                    "TTT / training on val); train only on train shards, and for TTT add each chunk's "
                    "loss to the score under no_grad before adapting on it",
                    b.line,
                )  # fmt: skip
            continue
        guarded.setdefault(loop_id, []).append(b)
    for loop_id, bs in guarded.items():
        loop_line, _ = res.loop_info.get(loop_id, (0, False))
        scores = sorted((e for e in res.events if e.kind == "S" and loop_id in e.loops), key=lambda e: e.seq)
        first_s = scores[0]
        early = [b for b in bs if b.seq < first_s.seq and loop_id in b.fresh]
        if early:
            b = early[0]
            yield finding(
                "ttt_adapt_before_score", ERROR,
                f"`{b.what}` at line {b.line} adapts on the current val chunk before its loss is scored "
                f"(`{first_s.what}` at line {first_s.line}, loop at line {loop_line}); score the chunk first "
                "under torch.no_grad(), then adapt",
                b.line,
            )  # fmt: skip
        late_b = [b for b in bs if b.seq > first_s.seq and loop_id in b.fresh]
        if late_b:
            rescored = [s for s in scores if s.seq > late_b[0].seq and s.target == first_s.target]
            if rescored:
                s = rescored[0]
                yield finding(
                    "ttt_rescore", ERROR,
                    f"`{s.what}` at line {s.line} adds a chunk's loss to the score again after adapting on it "
                    f"(line {late_b[0].line}); report only the first, pre-adaptation score of each token",
                    s.line,
                )  # fmt: skip
        # scoring loop nested inside an epoch/pass loop: every chunk is scored on each pass
        s_loops = first_s.loops
        if loop_id in s_loops:
            outer = s_loops[: s_loops.index(loop_id)]
            for outer_id in outer:
                line, epoch_like = res.loop_info.get(outer_id, (0, False))
                if epoch_like:
                    yield finding(
                        "ttt_rescore", ERROR,
                        f"TTT scoring loop (line {loop_line}) runs inside a multi-pass loop (line {line}): "
                        "chunks are scored again after earlier passes adapted on them; make one "
                        "left-to-right pass, epochs go inside the per-chunk adaptation step",
                        line,
                    )  # fmt: skip
                    break
        if scope.is_function:
            returned = _closure(res.deps, res.return_refs)
            if not any(s.target in returned for s in scores):
                yield finding(
                    "ttt_score_not_returned", WARNING,
                    f"`{scope.name}` adapts on val data after accumulating `{first_s.target}`, but does not "
                    "return that score; make sure the reported val_bpb is this first-pass score",
                    first_s.line,
                )  # fmt: skip


def check_val_globs(ctx: Ctx) -> Iterator[Finding]:
    """Shard globs that match both splits ('fineweb_*.bin'); an error when they feed a train path."""
    for node in ctx.nodes:
        s = const_str(node)
        if both_splits_glob(s):
            yield finding(
                "shard_glob_includes_val", WARNING,
                f"glob {s!r} matches validation shards as well as training shards; use "
                "fineweb_train_*.bin / fineweb_val_*.bin explicitly",
                node,
            )  # fmt: skip
