"""Shape constraints: what env the trainer refuses, and the space-wide check that none can be sampled.

`constraint_violations(env)` checks one env. `_StaticValidation` is SearchSpace's construction-time
check: it enumerates each group of coupled knobs, drops curated values that are never valid, and
refuses a space that can still produce an invalid combination.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import product
from typing import TYPE_CHECKING, Any

from search_space.knobs._values import OFFICIAL_DEFAULTS, parse_env_value

if TYPE_CHECKING:
    from search_space.knobs._params import _Param

# Micro-batches per optimizer step: WORLD_SIZE x grad_accum_steps is always 8 in the baseline.
MICRO_BATCHES = 8


class ConstraintError(ValueError):
    """A knob combination the trainer would refuse (or crash on); the message says why."""


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


class _StaticValidation:
    """SearchSpace's static validation: every combination the space can produce is valid.

    A mixin: SearchSpace sets these attributes before it calls `_validate_static()`.
    """

    base_env: dict[str, str]
    defaults: dict[str, Any]
    types: dict[str, type]
    params: list[_Param]
    notes: list[str]

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


def _mentions(message: str, names: Iterable[str]) -> bool:
    return any(re.search(rf"\b{n}\b", message) for n in names)
