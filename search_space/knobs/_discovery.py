"""Knob discovery: every environment variable a trainer's source reads, with its type and default.

`discover_knobs(source)` reads the source with `ast` (`os.environ.get`, `os.getenv`,
`os.environ[...]`, wrapped in `int()`, `float()`, `bool(int())`, compared to a string, or read
through a small helper function).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class KnobSpec:
    """One environment variable a trainer reads: its name, the type its code parses, its default.

    `default` is the typed value the trainer uses when the variable is unset, or None when the
    default is computed at run time (e.g. a fresh uuid) or there is none.
    """

    name: str
    type: type = str
    default: Any = None
    line: int | None = None  # first line that reads it (None for knobs declared by techniques)


_CONVERSIONS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
_STRING_METHODS = ("lower", "upper", "strip", "lstrip", "rstrip", "casefold")
_COMPARE_OPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


def _unknown_result(_value: Any) -> Any:
    raise ValueError("the default goes through an expression discovery cannot evaluate")


@dataclass
class _Read:
    """An env read found in the AST: the key, the default expression, what is applied to the value."""

    key: str
    default: ast.expr | None
    node: ast.AST
    steps: list[Callable[[Any], Any]] = field(default_factory=list)
    typ: type | None = None


def _call_key_default(call: ast.Call) -> tuple[ast.expr | None, ast.expr | None]:
    key = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg in ("key", "name")), None)
    default = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "default"), None)
    return key, default


class _EnvNames:
    """How this source spells the environment: `os.environ`, `environ`, and any aliases it makes
    (`E = os.environ.get`, `env = os.environ`, `from os import getenv as ge`)."""

    def __init__(self, tree: ast.AST):
        self.mappings = {"environ"}  # bare names bound to os.environ
        self.getters = {"getenv"}  # bare names bound to os.environ.get / os.getenv
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                for alias in node.names:
                    if alias.name == "environ":
                        self.mappings.add(alias.asname or alias.name)
                    elif alias.name == "getenv":
                        self.getters.add(alias.asname or alias.name)
        for _ in range(2):  # aliases of aliases
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                        and isinstance(node.targets[0], ast.Name)):
                    continue
                target, value = node.targets[0].id, node.value
                if self.is_environ(value):
                    self.mappings.add(target)
                elif self.is_getter(value):
                    self.getters.add(target)

    def is_environ(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "environ":
            return isinstance(node.value, ast.Name) and node.value.id == "os"
        return isinstance(node, ast.Name) and node.id in self.mappings

    def is_getter(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute):
            if node.attr == "get" and self.is_environ(node.value):
                return True
            return node.attr == "getenv" and isinstance(node.value, ast.Name) and node.value.id == "os"
        return isinstance(node, ast.Name) and node.id in self.getters

    def read(self, node: ast.AST) -> tuple[ast.expr, ast.expr | None] | None:
        """(key expression, default expression) when `node` reads the environment directly."""
        if isinstance(node, ast.Call) and self.is_getter(node.func):
            key, default = _call_key_default(node)
            return (key, default) if key is not None else None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and self.is_environ(node.value):
            return node.slice, None
        return None


class _Discoverer:
    def __init__(self, source: str):
        self.tree = ast.parse(source)
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        self.env = _EnvNames(self.tree)
        self.consts = self._module_constants()
        self.helpers = self._find_helpers()

    # -- literal evaluation ---------------------------------------------------------------
    def _module_constants(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                target, value = stmt.target.id, stmt.value
            else:
                continue
            try:
                out[target] = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError):
                pass
        return out

    def literal(self, node: ast.expr | None) -> Any:
        """The constant value of a default expression, or None when it is computed at run time."""
        if node is None:
            return None
        try:
            return ast.literal_eval(node)
        except (ValueError, SyntaxError, TypeError):
            pass
        if isinstance(node, ast.Name):
            return self.consts.get(node.id)
        nested = self.env.read(node)  # os.environ.get("A", os.environ.get("B", 3)) -> 3
        if nested is not None:
            return self.literal(nested[1])
        return None

    # -- helpers like `def env_int(name, default): return int(os.environ.get(name, default))` ----
    def _find_helpers(self) -> dict[str, tuple[list[str], int, int | None, Any, list, type | None]]:
        helpers = {}
        for fn in ast.walk(self.tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
            defaults = [None] * (len(params) - len(fn.args.defaults)) + list(fn.args.defaults)
            for node in ast.walk(fn):
                raw = self.env.read(node)
                if raw is None or not isinstance(raw[0], ast.Name) or raw[0].id not in params:
                    continue
                key_idx = params.index(raw[0].id)
                default_idx = None
                if isinstance(raw[1], ast.Name) and raw[1].id in params:
                    default_idx = params.index(raw[1].id)
                fn_default = self.literal(defaults[default_idx]) if default_idx is not None else self.literal(raw[1])
                steps, typ = self._climb(node, stop=fn)
                helpers[fn.name] = (params, key_idx, default_idx, fn_default, steps, typ)
                break
        return helpers

    # -- what the code does with the value ------------------------------------------------------
    def _climb(self, node: ast.AST, stop: ast.AST | None = None) -> tuple[list[Callable[[Any], Any]], type | None]:
        """Walk up from a read through conversions, string methods, `or` defaults and comparisons."""
        steps: list[Callable[[Any], Any]] = []
        typ: type | None = None
        cur = node
        while True:
            p = self.parents.get(cur)
            if p is None or p is stop:
                break
            if (isinstance(p, ast.Call) and isinstance(p.func, ast.Name) and p.func.id in _CONVERSIONS
                    and p.args and p.args[0] is cur):
                conv = _CONVERSIONS[p.func.id]
                steps.append(conv)
                typ = conv
                cur = p
                continue
            if isinstance(p, ast.Attribute) and p.value is cur and p.attr in _STRING_METHODS:
                call = self.parents.get(p)
                if isinstance(call, ast.Call) and call.func is p and not call.args:
                    steps.append(operator.methodcaller(p.attr))
                    cur = call
                    continue
                break
            if isinstance(p, ast.BoolOp) and isinstance(p.op, ast.Or) and p.values and p.values[0] is cur:
                fallback = self.literal(p.values[-1])
                steps.append(lambda v, fb=fallback: v or fb)
                cur = p
                continue
            if isinstance(p, ast.Compare) and p.left is cur and len(p.ops) == 1:
                op = _COMPARE_OPS.get(type(p.ops[0]))
                rhs = self.literal(p.comparators[0])
                if op is not None and rhs is not None:
                    steps.append(lambda v, op=op, rhs=rhs: op(v, rhs))
                else:
                    steps.append(_unknown_result)
                typ = bool
                cur = p
                continue
            if isinstance(p, ast.UnaryOp) and isinstance(p.op, ast.Not):
                steps.append(operator.not_)
                typ = bool
                cur = p
                continue
            break
        return steps, typ

    # -- all reads ------------------------------------------------------------------------------
    def reads(self) -> list[_Read]:
        out: list[_Read] = []
        for node in ast.walk(self.tree):
            raw = self.env.read(node)
            pre_steps: list[Callable[[Any], Any]] = []
            pre_typ: type | None = None
            if raw is not None:
                key_node, default_node = raw
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.helpers:
                params, key_idx, default_idx, fn_default, pre_steps, pre_typ = self.helpers[node.func.id]
                by_kw = {k.arg: k.value for k in node.keywords}
                key_node = node.args[key_idx] if len(node.args) > key_idx else by_kw.get(params[key_idx])
                if key_node is None:
                    continue
                default_node = None
                if default_idx is not None:
                    default_node = node.args[default_idx] if len(node.args) > default_idx \
                        else by_kw.get(params[default_idx])
                if default_node is None:
                    default_node = ast.Constant(fn_default) if fn_default is not None else None
            else:
                continue
            if not (isinstance(key_node, ast.Constant) and isinstance(key_node.value, str)):
                continue  # computed key: nothing to discover
            steps, typ = self._climb(node)
            out.append(_Read(key_node.value, default_node, node, pre_steps + steps, typ or pre_typ))
        return out


def _typed_default(disc: _Discoverer, read: _Read) -> tuple[type, Any]:
    lit = disc.literal(read.default)
    typ = read.typ
    if typ is None:  # no conversion: a str, unless the default literal says otherwise
        typ = type(lit) if isinstance(lit, bool | int | float) else str
    if lit is None:
        return typ, None
    value: Any = lit  # exactly what the trainer computes when the variable is unset
    try:
        for step in read.steps:
            value = step(value)
    except (ValueError, TypeError, AttributeError):
        return typ, None
    return typ, value


def discover_knobs(source: str) -> list[KnobSpec]:
    """Every environment variable `source` reads with a constant name, in order of first read.

    Raises SyntaxError when the source does not parse.
    """
    disc = _Discoverer(source)
    found: dict[str, KnobSpec] = {}
    reads = sorted(disc.reads(), key=lambda r: (getattr(r.node, "lineno", 0), getattr(r.node, "col_offset", 0)))
    for read in reads:
        typ, default = _typed_default(disc, read)
        spec = KnobSpec(read.key, typ, default, getattr(read.node, "lineno", None))
        old = found.get(read.key)
        if old is None:
            found[read.key] = spec
        elif old.type is str and typ is not str:  # a later typed read says more than an untyped one
            found[read.key] = replace(spec, line=old.line)
        elif old.default is None and default is not None and old.type is typ:
            found[read.key] = replace(old, default=default)
    return list(found.values())
