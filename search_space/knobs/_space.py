"""SearchSpace: the Optuna space over the knobs a trainer reads.

Discovered knobs intersected with the curated table, narrowed by the search config (`include`,
`exclude`, `ranges`), extended by techniques (`extra=`). `distributions()` gives the Optuna
distributions, `sample(trial)` the env overrides as strings the trainer parses. Shape constraints
(GQA, head_dim, batch divisibility) are enforced by construction: the space only offers
combinations that are valid, and refuses to build with a clear reason when a user range makes an
invalid one possible.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from search_space.knobs._constraints import ConstraintError, _getter, _StaticValidation, constraint_violations
from search_space.knobs._discovery import KnobSpec, discover_knobs
from search_space.knobs._params import _check_type, _normalize_extra, _Param
from search_space.knobs._ranges import SIZE_GROUPS, KnobRange, curated_ranges, never_reason
from search_space.knobs._values import _same, format_env_value, parse_env_value


class SearchSpace(_StaticValidation):
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
