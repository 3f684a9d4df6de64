"""Numeric knobs: what a trainer reads from its environment, and the Optuna space over it.

Three layers:

* `discover_knobs(source)` reads a trainer's source with `ast` and returns every environment
  variable it reads, with the type its code parses it as and its default
  (`os.environ.get`, `os.getenv`, `os.environ[...]`, wrapped in `int()`, `float()`,
  `bool(int())`, compared to a string, or read through a small helper function).
* The curated table (`knobs.toml` beside this file): a range for every knob worth searching,
  taken from what the baseline and the records used, plus the knobs that must never be
  searched, each with its reason. `curated_ranges()` and `never_searched()` load it.
* `SearchSpace`: discovered knobs intersected with the table, narrowed by the search config
  (`include`, `exclude`, `ranges`), extended by techniques (`extra=`). `distributions()` gives
  the Optuna distributions, `sample(trial)` the env overrides as strings the trainer parses.
  Shape constraints (GQA, head_dim, batch divisibility) are enforced by construction: the
  space only offers combinations that are valid, and refuses to build with a clear reason
  when a user range makes an invalid one possible.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import product
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

TABLE_PATH = Path(__file__).with_name("knobs.toml")

KINDS = ("float", "int", "categorical", "fixed")
GROUPS = ("architecture", "quant", "model", "optimizer", "schedule", "training", "eval", "user")
SIZE_GROUPS = ("architecture", "quant")  # knobs in these groups change the artifact's bytes
RANGE_KEYS = ("kind", "low", "high", "log", "step", "choices", "value", "group", "auto", "when", "derived",
              "default", "note")

# The official baseline's knobs and defaults (train_gpt.py of openai/parameter-golf, record copy in
# records/track_10min_16mb/2026-03-17_NaiveBaseline), plus the harness contract's numeric additions.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "DATA_PATH": "./data/datasets/fineweb10B_sp1024",
    "TOKENIZER_PATH": "./data/tokenizers/fineweb_1024_bpe.model",
    "SEED": 1337,
    "VAL_BATCH_SIZE": 524_288,
    "VAL_LOSS_EVERY": 1000,
    "TRAIN_LOG_EVERY": 200,
    "ITERATIONS": 20000,
    "WARMDOWN_ITERS": 1200,
    "WARMUP_STEPS": 20,
    "TRAIN_BATCH_TOKENS": 524_288,
    "TRAIN_SEQ_LEN": 1024,
    "MAX_WALLCLOCK_SECONDS": 600.0,
    "QK_GAIN_INIT": 1.5,
    "VOCAB_SIZE": 1024,
    "NUM_LAYERS": 9,
    "NUM_KV_HEADS": 4,
    "MODEL_DIM": 512,
    "NUM_HEADS": 8,
    "MLP_MULT": 2,
    "TIE_EMBEDDINGS": True,
    "ROPE_BASE": 10000.0,
    "LOGIT_SOFTCAP": 30.0,
    "EMBED_LR": 0.6,
    "HEAD_LR": 0.008,
    "TIED_EMBED_LR": 0.05,
    "TIED_EMBED_INIT_STD": 0.005,
    "MATRIX_LR": 0.04,
    "SCALAR_LR": 0.04,
    "MUON_MOMENTUM": 0.95,
    "MUON_BACKEND_STEPS": 5,
    "MUON_MOMENTUM_WARMUP_START": 0.85,
    "MUON_MOMENTUM_WARMUP_STEPS": 500,
    "BETA1": 0.9,
    "BETA2": 0.95,
    "ADAM_EPS": 1e-8,
    "GRAD_CLIP_NORM": 0.0,
    "EVAL_STRIDE": 0,
    "VAL_TOKENS": 0,
}

# Micro-batches per optimizer step: WORLD_SIZE x grad_accum_steps is always 8 in the baseline.
MICRO_BATCHES = 8


class ConstraintError(ValueError):
    """A knob combination the trainer would refuse (or crash on); the message says why."""


# ===================================================================================== discovery
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


# ===================================================================================== value formats
def format_env_value(value: Any, typ: type) -> str:
    """A value as the string the trainer's own parsing (`int()`, `float()`, `bool(int())`) accepts."""
    if typ is bool:
        if isinstance(value, str):
            return "1" if _parse_bool(value) else "0"
        return "1" if value else "0"
    if typ is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not an integer")
            value = int(value)
        return str(int(value))
    if typ is float or isinstance(value, float):
        return f"{float(value):.6g}"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    return bool(int(t))


def parse_env_value(text: str, typ: type) -> Any:
    """Parse an env string the way the trainer would; ValueError when it would not parse."""
    if typ is bool:
        return _parse_bool(text)
    if typ is int:
        return int(text)
    if typ is float:
        return float(text)
    return text


# ===================================================================================== ranges
@dataclass(frozen=True)
class KnobRange:
    """A search range for one knob: the Optuna distribution plus the table's metadata."""

    kind: str  # float | int | categorical | fixed
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    value: Any = None  # kind "fixed": the value to set (None = leave the trainer's default)
    group: str = "optimizer"
    auto: bool = True  # searched when the include list is empty
    when: str | None = None  # "NAME=VALUE": conditional parameter
    derived: bool = False  # an Optuna parameter that is not an env var (GQA_GROUP)
    default: Any = None  # reference default (official or record script)
    note: str = ""
    source: str = "curated"  # curated | user | technique

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any], *, base: KnobRange | None = None,
                  knob_type: type | None = None, source: str = "user") -> KnobRange:
        """Build (or, with `base`, partially override) a range from a TOML-style table.

        Keys: kind, low, high, log, step, choices, value, group, auto, when, derived, default, note.
        An override that gives `choices` makes the range categorical; one that gives low/high
        on a categorical base makes it numeric (int or float from the trainer's type).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"range for {name}: expected a table like {{low = 0.01, high = 0.1}}, got {data!r}")
        for key in data:
            if key not in RANGE_KEYS:
                close = difflib.get_close_matches(str(key), RANGE_KEYS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"range for {name}: unknown key '{key}'{hint}; allowed: {', '.join(RANGE_KEYS)}")
        merged: dict[str, Any] = {}
        if base is not None:
            merged = {k: getattr(base, k) for k in RANGE_KEYS}
            if "choices" in data and "kind" not in data:
                merged.update(kind="categorical", low=None, high=None, log=False, step=None)
            elif ("low" in data or "high" in data) and "kind" not in data and base.kind in ("categorical", "fixed"):
                merged.update(kind="int" if knob_type in (int, bool) else "float", choices=(), step=None)
            elif "value" in data and "kind" not in data:
                merged.update(kind="fixed")
        merged.update(data)
        kind = merged.get("kind")
        if kind is None:
            if merged.get("choices"):
                kind = "categorical"
            elif "value" in merged and merged.get("low") is None:
                kind = "fixed"
            elif merged.get("low") is not None or merged.get("high") is not None:
                lo_hi = (merged.get("low"), merged.get("high"))
                integral = all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi)
                kind = "int" if knob_type is int or (knob_type is None and integral) else "float"
            else:
                raise ValueError(f"range for {name}: give low/high, choices or value (or kind)")
        merged["kind"] = kind
        merged["choices"] = tuple(merged.get("choices") or ())
        merged.setdefault("group", "user" if base is None else base.group)
        merged["source"] = source if base is None or data else base.source
        rng = cls(**{k: merged[k] for k in RANGE_KEYS if k in merged}, source=merged["source"])
        rng.validate(name)
        return rng

    def validate(self, name: str) -> None:
        where = f"range for {name}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.group not in GROUPS:
            raise ValueError(f"{where}: group {self.group!r} is not one of {', '.join(GROUPS)}")
        if self.when is not None:
            if not isinstance(self.when, str) or self.when.count("=") != 1 or not all(self.when.split("=")):
                raise ValueError(f"{where}: when = {self.when!r} must look like 'NAME=VALUE'")
        if self.kind in ("float", "int"):
            for k in ("low", "high"):
                v = getattr(self, k)
                if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                    raise ValueError(f"{where}: {k} must be a finite number, got {v!r}")
            if self.low > self.high:
                raise ValueError(f"{where}: low {self.low} > high {self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"{where}: a log range needs low > 0, got {self.low}")
            if self.log and self.step is not None:
                raise ValueError(f"{where}: log and step cannot be combined")
            if self.step is not None and (not isinstance(self.step, int | float) or self.step <= 0):
                raise ValueError(f"{where}: step must be positive, got {self.step!r}")
            if self.kind == "int":
                for k in ("low", "high", "step"):
                    v = getattr(self, k)
                    if v is not None and not float(v).is_integer():
                        raise ValueError(f"{where}: an int range needs integral {k}, got {v!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"{where}: a categorical range needs choices")
            for c in self.choices:
                if not isinstance(c, bool | int | float | str):
                    raise ValueError(f"{where}: choice {c!r} must be a number, bool or string")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"{where}: duplicate choices in {list(self.choices)}")

    # -- views -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("float", "int"):
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        elif self.kind == "categorical":
            out["choices"] = list(self.choices)
        elif self.value is not None:
            out["value"] = self.value
        out["group"] = self.group
        if not self.auto:
            out["auto"] = False
        if self.when:
            out["when"] = self.when
        if self.default is not None:
            out["default"] = self.default
        return out

    def distribution(self) -> BaseDistribution | None:
        if self.kind == "float":
            return FloatDistribution(float(self.low), float(self.high), log=self.log,
                                     step=float(self.step) if self.step is not None else None)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log,
                                   step=int(self.step) if self.step is not None else 1)
        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        return None

    def values(self) -> list | None:
        """Every value a discrete range can take (None for a continuous float range)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "float" and self.step is not None:
            n = int(round((self.high - self.low) / self.step))
            return [self.low + i * self.step for i in range(n + 1)]
        return None

    def contains(self, value: Any) -> bool:
        if self.kind == "fixed":
            return True
        if self.kind == "categorical":
            return any(_same(value, c) for c in self.choices)
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        tol = 1e-9 * max(1.0, abs(v))
        if not (self.low - tol <= v <= self.high + tol):
            return False
        if self.kind == "int" and not v.is_integer():
            return False
        if self.step is not None:
            k = (v - self.low) / self.step
            return abs(k - round(k)) < 1e-6
        return True

    def widened(self, value: Any) -> KnobRange:
        """This range stretched to contain `value` (a trainer default outside the curated range)."""
        if self.contains(value) or value is None:
            return self
        if self.kind == "categorical":
            return replace(self, choices=(*self.choices, value))
        v = float(value)
        if self.kind not in ("float", "int") or (self.log and v <= 0):
            return self
        if self.step is not None and not (abs((v - self.low) / self.step - round((v - self.low) / self.step)) < 1e-6):
            return replace(self, kind="categorical", choices=tuple(dict.fromkeys([*(self.values() or []), value])),
                           low=None, high=None, step=None, log=False)
        cast = int if self.kind == "int" else float
        return replace(self, low=cast(min(self.low, v)), high=cast(max(self.high, v)))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


# ===================================================================================== the table
@cache
def _load_table() -> tuple[dict[str, KnobRange], dict[str, str]]:
    data = tomllib.loads(TABLE_PATH.read_text(encoding="utf-8"))
    ranges = {name: KnobRange.from_dict(name, table, source="curated") for name, table in data.get("knob", {}).items()}
    never = {name: str(table["reason"]) for name, table in data.get("never", {}).items()}
    for name in ranges:
        if never_reason(name, never) is not None:
            raise RuntimeError(f"{TABLE_PATH}: {name} is both curated and never-searched")
    return ranges, never


def curated_ranges() -> dict[str, KnobRange]:
    """The curated table: knob name -> range (a fresh dict; the ranges are immutable)."""
    return dict(_load_table()[0])


def never_searched() -> dict[str, str]:
    """Knob names (or 'PREFIX*' patterns) that must never be searched -> why."""
    return dict(_load_table()[1])


def never_reason(name: str, table: Mapping[str, str] | None = None) -> str | None:
    """Why `name` must never be searched, or None when it may be."""
    table = _load_table()[1] if table is None else table
    if name in table:
        return table[name]
    for pattern, reason in table.items():
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return reason
    return None


# ===================================================================================== constraints
def _getter(env: Mapping[str, str], types: Mapping[str, type], defaults: Mapping[str, Any]):
    def get(name: str) -> Any:
        typ = types.get(name) or type(OFFICIAL_DEFAULTS.get(name, 0.0))
        if name in env:
            try:
                return parse_env_value(str(env[name]), typ)
            except ValueError:
                raise ConstraintError(f"{name}={env[name]!r} does not parse as {typ.__name__}") from None
        if name in defaults and defaults[name] is not None:
            return defaults[name]
        return OFFICIAL_DEFAULTS.get(name)
    return get


def constraint_violations(env: Mapping[str, str], defaults: Mapping[str, Any] | None = None,
                          types: Mapping[str, type] | None = None) -> list[str]:
    """Why the trainer would refuse this env (empty list = fine).

    Unset knobs take `defaults` (the trainer's discovered defaults), then the official ones.
    Checks: every value parses; NUM_KV_HEADS divides NUM_HEADS; MODEL_DIM divisible by NUM_HEADS
    with an even head_dim (RoPE rotates pairs); each of the 8 micro-batches holds whole
    TRAIN_SEQ_LEN sequences (train and validation); 0 <= EVAL_STRIDE <= the eval sequence length.
    """
    get = _getter(env, types or {}, defaults or {})
    out: list[str] = []
    try:
        heads, kv, dim = get("NUM_HEADS"), get("NUM_KV_HEADS"), get("MODEL_DIM")
        layers, seq = get("NUM_LAYERS"), get("TRAIN_SEQ_LEN")
        batch, val_batch = get("TRAIN_BATCH_TOKENS"), get("VAL_BATCH_SIZE")
        stride = get("EVAL_STRIDE") if "EVAL_STRIDE" in env else None
        eval_seq = get("EVAL_SEQ_LEN") if "EVAL_SEQ_LEN" in env else seq
        mlp, softcap = get("MLP_MULT"), get("LOGIT_SOFTCAP")
    except ConstraintError as e:
        return [str(e)]
    for name, v in (("NUM_HEADS", heads), ("NUM_KV_HEADS", kv), ("MODEL_DIM", dim), ("NUM_LAYERS", layers),
                    ("TRAIN_SEQ_LEN", seq), ("TRAIN_BATCH_TOKENS", batch), ("VAL_BATCH_SIZE", val_batch)):
        if v is None or v < 1:
            out.append(f"{name}={v} must be >= 1")
    if out:
        return out
    if heads % kv:
        out.append(f"NUM_KV_HEADS={kv} must divide NUM_HEADS={heads} (grouped-query attention)")
    if dim % heads:
        out.append(f"MODEL_DIM={dim} must be divisible by NUM_HEADS={heads}")
    elif (dim // heads) % 2:
        out.append(f"head_dim = MODEL_DIM/NUM_HEADS = {dim // heads} must be even (RoPE rotates pairs of dims)")
    per_micro = batch // MICRO_BATCHES
    if per_micro < seq or per_micro % seq:
        out.append(f"TRAIN_BATCH_TOKENS={batch} must split into {MICRO_BATCHES} micro-batches of whole "
                   f"TRAIN_SEQ_LEN={seq} sequences (a multiple of {MICRO_BATCHES * seq})")
    if val_batch // MICRO_BATCHES < seq:
        out.append(f"VAL_BATCH_SIZE={val_batch} must give each of the {MICRO_BATCHES} micro-batches at least one "
                   f"TRAIN_SEQ_LEN={seq} sequence (>= {MICRO_BATCHES * seq})")
    if stride is not None and not (0 <= stride <= eval_seq):
        out.append(f"EVAL_STRIDE={stride} must be between 0 and the eval sequence length {eval_seq}")
    if mlp is not None and mlp <= 0:
        out.append(f"MLP_MULT={mlp} must be positive")
    if softcap is not None and softcap <= 0:
        out.append(f"LOGIT_SOFTCAP={softcap} must be positive")
    return out


# Knobs whose constraints couple them, in independent components (enumerated separately).
_COUPLED = (("NUM_HEADS", "NUM_KV_HEADS", "MODEL_DIM"),
            ("TRAIN_SEQ_LEN", "TRAIN_BATCH_TOKENS", "VAL_BATCH_SIZE", "EVAL_STRIDE", "EVAL_SEQ_LEN"),
            ("NUM_LAYERS",), ("MLP_MULT",), ("LOGIT_SOFTCAP",))
_MAX_ENUMERATION = 250_000


# ===================================================================================== the space
@dataclass(frozen=True)
class _Param:
    """One Optuna parameter and the env variable it sets."""

    name: str  # Optuna parameter name (the env name, or GQA_GROUP)
    knob: str  # env variable it sets
    typ: type  # how the trainer parses that variable
    rng: KnobRange
    when: tuple[str, str] | None = None

    def env_value(self, value: Any, env: Mapping[str, str], get: Callable[[str], Any]) -> str:
        if self.name == "GQA_GROUP":
            heads = get("NUM_HEADS")
            if int(value) < 1 or heads % int(value):
                raise ConstraintError(f"GQA_GROUP={value} must divide NUM_HEADS={heads}")
            return format_env_value(heads // int(value), self.typ)
        return format_env_value(value, self.typ)


class SearchSpace:
    """Optuna search space over the knobs a trainer reads.

    knobs      the trainer's knobs (`discover_knobs(source)`); use `SearchSpace.from_source`.
    include    env names to search; empty = every curated knob the trainer reads that is not
               opt-in (`auto = false`), not fixed, and not already set by `base_env`.
    exclude    env names never to search.
    ranges     {name: {low=..., high=..., log=..., step=..., choices=[...], kind=..., value=...}}:
               overrides merged over the curated entry (partial tables allowed), or full ranges
               for knobs the table does not know. A range opts its knob in.
    base_env   env the samples are layered over (the track's env); its knobs are pinned unless
               included explicitly, and it decides conditions (`when`) and constraint checks.
    extra      technique knobs: (KnobSpec, range) pairs, or {name: range} for knobs the source
               already reads. Their ranges win over the curated table.

    Unknown names raise ValueError naming the knob with close matches; never-searched names
    raise with the reason.
    """

    def __init__(self, knobs: Iterable[KnobSpec], *, include: Iterable[str] = (), exclude: Iterable[str] = (),
                 ranges: Mapping[str, Mapping[str, Any]] | None = None, base_env: Mapping[str, str] | None = None,
                 extra: Iterable[tuple[KnobSpec, KnobRange | Mapping[str, Any]]] | Mapping[str, Any] = ()):
        self.knobs: dict[str, KnobSpec] = {}
        for k in knobs:
            self.knobs.setdefault(k.name, k)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.user_ranges = {str(k): dict(v) for k, v in (ranges or {}).items()}
        self.base_env = {str(k): str(v) for k, v in (base_env or {}).items()}
        self._extra = _normalize_extra(extra)

        self.table = curated_ranges()
        self.notes: list[str] = []  # adjustments made while building (widened or trimmed ranges)
        for spec, rng in self._extra:
            self.knobs.setdefault(spec.name, spec)
            base = self.table.get(spec.name)
            self.table[spec.name] = rng if isinstance(rng, KnobRange) else KnobRange.from_dict(
                spec.name, rng, base=base, knob_type=spec.type, source="technique")
        self.types = {name: spec.type for name, spec in self.knobs.items()}
        self.defaults = {name: spec.default for name, spec in self.knobs.items()}

        self._check_names()
        self.ranges = self._resolve_ranges()
        self.selected = self._select()
        self.params = self._build_params()
        self._validate_static()

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_source(cls, source: str, **kwargs: Any) -> SearchSpace:
        return cls(discover_knobs(source), **kwargs)

    @classmethod
    def from_config(cls, source: str, knobs_config: Any, base_env: Mapping[str, str] | None = None,
                    extra: Any = ()) -> SearchSpace:
        """From a search config's [knobs] table (anything with include / exclude / ranges)."""
        return cls.from_source(source, include=getattr(knobs_config, "include", ()),
                               exclude=getattr(knobs_config, "exclude", ()),
                               ranges=getattr(knobs_config, "ranges", None), base_env=base_env, extra=extra)

    def extend(self, extra: Iterable[tuple[KnobSpec, KnobRange | Mapping[str, Any]]] | Mapping[str, Any]
               ) -> SearchSpace:
        """A new space with technique knobs added (searched too when this space has an include list).

        extra: (KnobSpec, range) pairs, or {name: range} (e.g. a Proposal's knob_ranges) for knobs
        the (patched) source reads.
        """
        new_extra = _normalize_extra(extra)
        inc = tuple(self.include)
        if inc:
            inc = inc + tuple(s.name for s, _ in new_extra if s.name not in inc)
        return SearchSpace(self.knobs.values(), include=inc, exclude=self.exclude, ranges=self.user_ranges,
                           base_env=self.base_env, extra=[*self._extra, *new_extra])

    # -- name checks -------------------------------------------------------------------------------
    def _suggest(self, name: str) -> str:
        pool = sorted(set(self.knobs) | {n for n, r in self.table.items() if not r.derived} | {"GQA_GROUP"})
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
        return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""

    def _check_names(self) -> None:
        derived = {n for n, r in self.table.items() if r.derived}
        for where, names in (("include", self.include), ("ranges", self.user_ranges), ("exclude", self.exclude)):
            for name in names:
                reason = never_reason(name)
                if reason is not None and where != "exclude":
                    raise ValueError(f"knob {name} ({where}) must never be searched: {reason}")
                if name in derived:
                    if where == "ranges":
                        continue
                    raise ValueError(f"{name} is a derived parameter, not an env var: include NUM_HEADS and "
                                     f"NUM_KV_HEADS to search it")
                if name in self.knobs:
                    continue
                if name in self.table and not self.table[name].derived:
                    if where == "exclude":
                        continue
                    raise ValueError(f"knob {name} ({where}) is curated but the trainer does not read it; "
                                     f"a technique that adds it must be applied first")
                if where == "exclude" and reason is not None:
                    continue
                raise ValueError(f"unknown knob {name!r} in {where}{self._suggest(name)}; "
                                 f"the trainer reads: {', '.join(sorted(self.knobs)) or 'nothing'}")

    # -- ranges ----------------------------------------------------------------------------------
    def _resolve_ranges(self) -> dict[str, KnobRange]:
        out: dict[str, KnobRange] = {}
        for name, rng in self.table.items():
            if rng.derived or name in self.knobs:
                out[name] = rng
        for name, data in self.user_ranges.items():
            typ = self.types.get(name, int if name == "GQA_GROUP" else None)
            out[name] = KnobRange.from_dict(name, data, base=out.get(name), knob_type=typ, source="user")
        for name, rng in list(out.items()):
            if rng.derived or name not in self.knobs:
                continue
            spec = self.knobs[name]
            _check_type(name, rng, spec.type)
            if rng.source == "curated" and spec.default is not None and rng.kind != "fixed":
                wider = rng.widened(spec.default)
                if wider is not rng:
                    self.notes.append(f"{name}: curated range widened to contain the trainer's default "
                                      f"{spec.default!r}")
                    out[name] = wider
        return out

    def _select(self) -> list[str]:
        if self.include:
            chosen = list(dict.fromkeys(self.include))
        else:
            chosen = [n for n in self.knobs if n in self.ranges and self.ranges[n].auto
                      and self.ranges[n].kind != "fixed" and n not in self.base_env]
        for name in self.user_ranges:  # a range opts its knob in
            if name in self.knobs and name not in chosen:
                chosen.append(name)
        chosen = [n for n in chosen if n not in self.exclude]
        for name in chosen:
            rng = self.ranges.get(name)
            if rng is None:
                raise ValueError(f"knob {name} has no curated range; give one in the search config, e.g. "
                                 f"[knobs.ranges] {name} = {{low = ..., high = ...}}")
            if rng.kind == "fixed" and rng.value is None:
                raise ValueError(f"knob {name} is fixed in the curated table ({rng.note or 'not searchable'}); "
                                 f"give it a range in the search config to search it anyway")
        # Order: the trainer's order, so sampling order is stable across runs.
        order = {n: i for i, n in enumerate(self.knobs)}
        return sorted(chosen, key=lambda n: order.get(n, len(order)))

    # -- parameters --------------------------------------------------------------------------------
    def _base_get(self) -> Callable[[str], Any]:
        return _getter(self.base_env, self.types, self.defaults)

    def _build_params(self) -> list[_Param]:
        sel = set(self.selected)
        params: list[_Param] = []
        both_heads = {"NUM_HEADS", "NUM_KV_HEADS"} <= sel
        if both_heads and "NUM_KV_HEADS" in self.user_ranges:
            raise ValueError("NUM_KV_HEADS is sampled as NUM_HEADS / GQA_GROUP while NUM_HEADS is searched too; "
                             "give [knobs.ranges] GQA_GROUP = {choices = [...]} instead, or exclude NUM_HEADS")
        for name in self.selected:
            rng = self.ranges[name]
            typ = self.types.get(name, str)
            if name == "NUM_KV_HEADS" and both_heads:
                group = self.ranges.get("GQA_GROUP") or KnobRange("categorical", choices=(1, 2, 4), derived=True,
                                                                   group="architecture")
                params.append(_Param("GQA_GROUP", "NUM_KV_HEADS", typ, group))
                continue
            when = None
            if rng.when:
                cname, cval = rng.when.split("=")
                if cname not in sel:
                    # The condition's knob is pinned: decide now.
                    ctyp = self.types.get(cname, int)
                    try:
                        active = _same(self._base_get()(cname), parse_env_value(cval, ctyp))
                    except ValueError:
                        active = False
                    if not active:
                        if self.include and name in self.include:
                            raise ValueError(f"knob {name} is only used when {rng.when}, but {cname} is pinned to "
                                             f"{self._base_get()(cname)!r}; include {cname} or drop {name}")
                        self.notes.append(f"{name}: inactive ({rng.when} does not hold)")
                        continue
                else:
                    when = (cname, cval)
            params.append(_Param(name, name, typ, rng, when))
        # GQA_GROUP divides the sampled NUM_HEADS, so it is sampled after it.
        gqa = next((p for p in params if p.name == "GQA_GROUP"), None)
        if gqa is not None:
            params.remove(gqa)
            params.insert(next(i for i, p in enumerate(params) if p.name == "NUM_HEADS") + 1, gqa)
        # MODEL_DIM must be a multiple of 2 x every possible head count (even head_dim).
        for i, p in enumerate(params):
            if p.name != "MODEL_DIM" or p.rng.kind != "int":
                continue
            head_values = self._values_of("NUM_HEADS", params)
            need = math.lcm(int(p.rng.step or 1), *[2 * int(h) for h in head_values])
            if need != int(p.rng.step or 1):
                low = int(math.ceil(p.rng.low / need) * need)
                high = int(p.rng.high // need * need)
                if low > high:
                    raise ValueError(f"MODEL_DIM range [{p.rng.low}, {p.rng.high}] holds no multiple of {need} "
                                     f"(2 x NUM_HEADS for an even head_dim); widen it")
                self.notes.append(f"MODEL_DIM: step {p.rng.step} -> {need} so head_dim stays integral and even")
                params[i] = replace(p, rng=replace(p.rng, low=low, high=high, step=need))
        conditional = [p for p in params if p.when]
        return [p for p in params if not p.when] + conditional

    def _values_of(self, knob: str, params: list[_Param]) -> list[Any]:
        p = next((p for p in params if p.knob == knob and p.name == knob), None)
        if p is not None:
            vals = p.rng.values()
            if vals is None:
                raise ValueError(f"{knob} must have a discrete range (int or categorical)")
            return vals
        return [self._base_get()(knob)]

    # -- static validation: every combination the space can produce is valid ----------------------------
    def _validate_static(self) -> None:
        base_problems = constraint_violations(self.base_env, self.defaults, self.types)
        for component in _COUPLED:
            involved = [p for p in self.params if p.knob in component]
            if involved:
                self._validate_component(involved, component)
                continue
            mine = [m for m in base_problems if _mentions(m, component)]
            if mine:
                raise ConstraintError(f"the base env is invalid: {'; '.join(mine)}")

    def _validate_component(self, involved: list[_Param], component: tuple[str, ...]) -> None:
        """Enumerate the component's discrete values; drop curated values that are never valid, and
        refuse (ConstraintError with an example) when invalid combinations remain."""
        value_lists = [p.rng.values() for p in involved]
        if any(v is None for v in value_lists) or math.prod(len(v) for v in value_lists) > _MAX_ENUMERATION:
            return  # continuous or huge: sample() checks each draw instead
        for attempt in range(2):
            valid: list[set[int]] = [set() for _ in involved]
            bad: list[tuple[tuple, str]] = []
            for combo in product(*[range(len(v)) for v in value_lists]):
                env: dict[str, str] = {}
                try:
                    for p, vals, idx in zip(involved, value_lists, combo, strict=True):
                        get = _getter({**self.base_env, **env}, self.types, self.defaults)
                        env[p.knob] = p.env_value(vals[idx], env, get)
                    problems = constraint_violations({**self.base_env, **env}, self.defaults, self.types)
                except ConstraintError as e:
                    problems = [str(e)]
                problems = [m for m in problems if _mentions(m, component)]
                if problems:
                    bad.append((combo, problems[0]))
                else:
                    for i, idx in enumerate(combo):
                        valid[i].add(idx)
            if not bad:
                return
            changed = False
            for i, p in enumerate(involved):
                dead = [value_lists[i][j] for j in range(len(value_lists[i])) if j not in valid[i]]
                if not dead or attempt:
                    continue
                why = next(msg for c, msg in bad if c[i] not in valid[i])
                if p.rng.source == "user":
                    raise ConstraintError(f"range for {p.name}: value(s) {dead} are never valid in this space "
                                          f"({why}); narrow the range")
                if not valid[i]:
                    raise ConstraintError(f"{p.name}: no value of its range is valid with the base env ({why})")
                keep = [value_lists[i][j] for j in sorted(valid[i])]
                self.notes.append(f"{p.name}: dropped {dead} ({why})")
                new_rng = replace(p.rng, kind="categorical", choices=tuple(keep), low=None, high=None,
                                  step=None, log=False)
                self.params = [replace(q, rng=new_rng) if q is p else q for q in self.params]
                involved[i] = next(q for q in self.params if q.name == p.name)
                value_lists[i] = keep
                changed = True
            if not changed:
                break
        combo, msg = bad[0]
        desc = ", ".join(f"{p.name}={vals[i]}" for p, vals, i in zip(involved, value_lists, combo, strict=True))
        raise ConstraintError(f"the search space can produce invalid combinations, e.g. {desc}: {msg}; "
                              f"narrow the ranges of these knobs")

    # -- public API ------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Env variables this space sets."""
        return list(dict.fromkeys(p.knob for p in self.params))

    @property
    def size_knobs(self) -> list[str]:
        """Searched env variables that change the artifact's bytes (architecture and quant groups)."""
        return [p.knob for p in self.params if p.rng.group in SIZE_GROUPS]

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna parameter name -> distribution, for every parameter `sample` may suggest."""
        return {p.name: p.rng.distribution() for p in self.params if p.rng.kind != "fixed"}

    def sample(self, trial: optuna.Trial) -> dict[str, str]:
        """Suggest every parameter on `trial`; return the env overrides (strings the trainer parses).

        Raises ConstraintError (with the reason) if a combination is invalid; construction already
        rules that out for discrete ranges, so this only fires on inconsistent base envs.
        """
        env: dict[str, str] = {}
        for p in self.params:
            get = _getter({**self.base_env, **env}, self.types, self.defaults)
            if p.when is not None:
                cname, cval = p.when
                if not _same(get(cname), parse_env_value(cval, self.types.get(cname, int))):
                    continue
            r = p.rng
            if r.kind == "fixed":
                if r.value is not None:
                    env[p.knob] = format_env_value(r.value, p.typ)
                continue
            if r.kind == "float":
                v = trial.suggest_float(p.name, float(r.low), float(r.high), log=r.log,
                                        step=float(r.step) if r.step is not None else None)
            elif r.kind == "int":
                v = trial.suggest_int(p.name, int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
            else:
                v = trial.suggest_categorical(p.name, list(r.choices))
            env[p.knob] = p.env_value(v, env, get)
        problems = self.check(env)
        if problems:
            raise ConstraintError("; ".join(problems))
        try:
            trial.set_user_attr("env", env)
        except (AttributeError, NotImplementedError, RuntimeError):
            pass
        return env

    def check(self, env: Mapping[str, str]) -> list[str]:
        """Constraint violations of `env` layered over the base env (empty list = valid)."""
        return constraint_violations({**self.base_env, **env}, self.defaults, self.types)

    def to_params(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Optuna params that reproduce `env` (over the base env and defaults), e.g. to enqueue the baseline.

        Parameters whose value lies outside their distribution are left out.
        """
        get = _getter({**self.base_env, **(env or {})}, self.types, self.defaults)
        out: dict[str, Any] = {}
        for p in self.params:
            if p.rng.kind == "fixed":
                continue
            if p.when is not None and not _same(get(p.when[0]), parse_env_value(p.when[1],
                                                                                 self.types.get(p.when[0], int))):
                continue
            value = get(p.knob)
            if value is None:
                continue
            if p.name == "GQA_GROUP":
                heads = get("NUM_HEADS")
                if not value or heads % value:
                    continue
                value = heads // value
            if p.typ is bool:
                value = int(bool(value))
            if not p.rng.contains(value):
                continue
            if p.rng.kind == "categorical":
                value = next(c for c in p.rng.choices if _same(value, c))
            elif p.rng.kind == "int":
                value = int(value)
            else:
                value = float(value)
            out[p.name] = value
        return out

    def describe(self) -> list[dict[str, Any]]:
        """One row per knob the trainer reads: status (searched, pinned, fixed, never, ...) and detail."""
        searched = {p.knob: p for p in self.params}
        rows = []
        for name, spec in self.knobs.items():
            row: dict[str, Any] = {"name": name, "type": spec.type.__name__, "default": spec.default}
            reason = never_reason(name)
            rng = self.ranges.get(name)
            if name in searched:
                p = searched[name]
                row.update(status="searched", param=p.name, group=p.rng.group, range=p.rng.to_dict(),
                           when=p.rng.when)
                if p.name != name:
                    row["detail"] = f"{name} = NUM_HEADS / {p.name}"
            elif reason is not None:
                row.update(status="never", detail=reason)
            elif name in self.exclude:
                row.update(status="excluded")
            elif rng is None:
                row.update(status="not curated", detail="give a range in [knobs.ranges] to search it")
            elif rng.kind == "fixed":
                row.update(status="fixed", detail=rng.note)
            elif self.include and name not in self.include:
                row.update(status="not included", detail="not in [knobs] include")
            elif name in self.base_env:
                row.update(status="pinned", detail=f"set by the base env to {self.base_env[name]!r}")
            elif not rng.auto:
                row.update(status="opt-in", detail="add it to [knobs] include to search it")
            else:
                row.update(status="inactive", detail=f"only used when {rng.when}")
            rows.append(row)
        return rows

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(p.name for p in self.params)})"


def _mentions(message: str, names: Iterable[str]) -> bool:
    return any(re.search(rf"\b{n}\b", message) for n in names)


def _check_type(name: str, rng: KnobRange, typ: type) -> None:
    """The trainer must be able to parse every value of the range with its own conversion."""
    if typ is int:
        if rng.kind == "float":
            raise ValueError(f"range for {name} is float but the trainer parses it with int(); use an int range")
        for v in rng.values() or []:
            if v is not None and (isinstance(v, str) or not float(v).is_integer()):
                raise ValueError(f"range for {name}: value {v!r} does not parse with the trainer's int()")
    elif typ is bool:
        for v in rng.values() or [rng.low, rng.high]:
            if v is not None and not _same(v, 0) and not _same(v, 1):
                raise ValueError(f"range for {name}: value {v!r} is not a boolean (0/1)")
    elif typ is float:
        for v in rng.values() or []:
            if v is not None and isinstance(v, str):
                try:
                    float(v)
                except ValueError:
                    raise ValueError(f"range for {name}: value {v!r} does not parse with float()") from None


def _range_type(rng: KnobRange | Mapping[str, Any]) -> type:
    """The parse type implied by a technique's range, for knobs the source does not show."""
    data = rng.to_dict() if isinstance(rng, KnobRange) else dict(rng)
    kind = data.get("kind")
    sample = data.get("choices", [None])[0] if data.get("choices") else data.get("value", data.get("low"))
    if kind == "int" or (kind is None and isinstance(sample, int) and not isinstance(sample, bool)
                         and isinstance(data.get("high", 0), int)):
        return int
    if isinstance(sample, bool):
        return bool
    if isinstance(sample, str):
        return str
    if isinstance(sample, int) and kind in ("categorical", "fixed"):
        return int
    return float


def _normalize_extra(extra: Any) -> list[tuple[KnobSpec, KnobRange | Mapping[str, Any]]]:
    """Technique knobs as (KnobSpec, range) pairs; a {name: range} mapping gets specs from the ranges."""
    if isinstance(extra, Mapping):
        return [(KnobSpec(str(name), _range_type(rng), None), rng) for name, rng in extra.items()]
    return [(spec, rng) for spec, rng in extra]
