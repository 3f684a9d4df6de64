"""Knob ranges: `KnobRange` (one knob's Optuna distribution and metadata) and the curated table.

The curated table is `search_space/knobs.toml` (beside this package): a range for every knob
worth searching, plus the knobs that must never be searched, each with its reason.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from search_space.knobs._values import _same

TABLE_PATH = Path(__file__).parent.with_name("knobs.toml")  # search_space/knobs.toml

KINDS = ("float", "int", "categorical", "fixed")
GROUPS = ("architecture", "quant", "model", "optimizer", "schedule", "training", "eval", "user")
SIZE_GROUPS = ("architecture", "quant")  # knobs in these groups change the artifact's bytes
RANGE_KEYS = ("kind", "low", "high", "log", "step", "choices", "value", "group", "auto", "when", "derived",
              "default", "note")


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
