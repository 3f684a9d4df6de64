"""SearchSpace parameters: one Optuna parameter per searched knob, and the checks on technique knobs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from search_space.knobs._constraints import ConstraintError
from search_space.knobs._discovery import KnobSpec
from search_space.knobs._ranges import KnobRange
from search_space.knobs._values import _same, format_env_value


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
