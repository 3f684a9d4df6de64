"""The scopes the validation-data flow analysis walks: the module, each class, each function with its
parameters, and for a function nested in another function the enclosing names it captures (its closure).

A nested function that reads `chunk` from the function around it sees whatever `chunk` holds when it runs,
so the analysis treats each of its captures like a parameter passed where the closure is called (or handed
to another call, as in `opt.step(closure)`). Functions nested in classes nested in functions, lambdas and
`global` names are not followed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class Scope:
    node: ast.AST  # Module, ClassDef, FunctionDef or AsyncFunctionDef
    name: str
    params: list[str]
    is_function: bool
    captures: list[str] = field(default_factory=list)  # names read from an enclosing function's scope
    closures: dict[str, list[str]] = field(default_factory=dict)  # nested function -> its captures


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return params + [x.arg for x in (a.vararg, a.kwarg) if x is not None]


def _captures(fn: ast.FunctionDef | ast.AsyncFunctionDef, outer: frozenset[str],
              found: dict[int, tuple[list[str], dict[str, list[str]]]]) -> set[str]:  # fmt: skip
    """Names `fn` (or a function nested in it) reads that an enclosing function binds; fills `found` for `fn`
    and every function nested in it with (captures, {nested function: its captures})."""
    bound, loaded, nonlocal_, global_ = set(_params(fn)), set(), set(), set()
    nested: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    stack: list[ast.AST] = list(fn.body)
    while stack:
        n = stack.pop()
        if isinstance(n, _FUNCS):
            bound.add(n.name)
            nested.append(n)
            continue
        if isinstance(n, ast.ClassDef):
            bound.add(n.name)
            continue
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, ast.Name):
            (loaded if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, ast.Nonlocal):
            nonlocal_.update(n.names)
        elif isinstance(n, ast.Global):
            global_.update(n.names)
        elif isinstance(n, ast.alias):
            bound.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        stack.extend(ast.iter_child_nodes(n))
    local = (bound - nonlocal_) | global_
    visible = frozenset(outer | (bound - global_))
    closures: dict[str, list[str]] = {}
    free = set(loaded) | nonlocal_
    for child in nested:
        child_caps = _captures(child, visible, found)
        free |= child_caps
        if child_caps:
            closures[child.name] = sorted(child_caps)
    caps = {name for name in free - local if name in outer}
    found[id(fn)] = (sorted(caps), closures)
    return caps


def collect_scopes(tree: ast.Module) -> list[Scope]:
    """Every scope of the module, in `ast.walk` order, functions with their captures and closures."""
    found: dict[int, tuple[list[str], dict[str, list[str]]]] = {}
    stack: list[ast.AST] = [tree]
    while stack:  # functions outside any function: module level, in classes, under if/try
        for child in ast.iter_child_nodes(stack.pop()):
            if isinstance(child, _FUNCS):
                _captures(child, frozenset(), found)
            else:
                stack.append(child)
    scopes = [Scope(tree, "<module>", [], False)]
    for node in ast.walk(tree):
        if isinstance(node, _FUNCS):
            captures, closures = found.get(id(node), ([], {}))
            scopes.append(Scope(node, node.name, _params(node), True, captures, closures))
        elif isinstance(node, ast.ClassDef):
            scopes.append(Scope(node, node.name, [], False))
    return scopes
