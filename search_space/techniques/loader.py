"""The technique catalog: one folder per technique, read and validated here.

    search_space/techniques/<name>/technique.toml   metadata (schema below)
    search_space/techniques/<name>/patch.diff       unified diff against trainer/train_gpt.py (a/ b/ prefixes);
                                                    absent or empty for a technique that only sets env

technique.toml (values in [env] / [small_env] are strings, numbers or booleans; all become strings):

    category      = "eval"          # required: one of CATEGORIES
    description   = "..."           # required: one paragraph (no blank line): what it does and why it helps
    introduced_in = "2026-03-19_SlidingWindowEval"  # required: the record folder that introduced it
    reported_gain = "-0.0319 bpb (1.2244 -> 1.1925)"  # required: what that record (or its ablation) reported
    scale         = "both"          # required: where the gain is expected: "small", "full" or "both"
    conflicts     = ["other"]       # optional: techniques it cannot be combined with (either side may say it)
    requires      = ["other"]       # optional: techniques it needs (applied with it, requirements first)

    [env]          # optional: the settings it turns on. A patch should bake them in as its new defaults (the
    EVAL_STRIDE = "64"   # catalog agent applies only patches); tests check the patched defaults agree.
    [small_env]    # optional: what small CPU runs (tests, bench) change on top of [env]: those runs use the tiny
    TTT_CHUNK_TOKENS = "4096"  # config, then [env], then [small_env]. The tiny config pins the shape knobs
                               # (NUM_LAYERS, MODEL_DIM, MLP_MULT, ...) and TRAIN_SEQ_LEN, so a patched default
                               # alone is invisible there: set the knob in [env] or [small_env].
    [knobs.EVAL_STRIDE]  # optional: the env knobs it adds or retunes, as search_space.knobs range tables
    choices = [32, 64, 128, 256]  # (kind, low, high, log, step, choices, value, group, auto, when, default, note);
    default = 64                  # default is required and must lie in the range. Consumed by SearchSpace.extend
    group = "eval"
    [cost]         # optional: expected bytes and time. Size keys are search_space.size_estimate.SizeCost's
    compressor_ratio = 0.78       # (bits_per_weight, bytes_per_param, embed_bits, compressor_ratio, extra_params,
    time_factor = 1.0             # scheme); time_factor = training step time vs the baseline, eval_time_factor =
    eval_time_factor = 16         # final evaluation time vs one flat pass over the val set.

Every problem is a CatalogError whose one-line message names the folder and the key.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from search_space.knobs import KnobRange
from search_space.size_estimate import SizeCost

TECHNIQUES_DIR = Path(__file__).resolve().parent
META_FILE, PATCH_FILE = "technique.toml", "patch.diff"
CATEGORIES = ("architecture", "tokenizer", "eval", "optimizer", "schedule", "quantization", "training")
SCALES = ("small", "full", "both")
REQUIRED = ("category", "description", "introduced_in", "reported_gain", "scale")
OPTIONAL = ("conflicts", "requires", "env", "small_env", "knobs", "cost")
SIZE_COST_KEYS = ("bits_per_weight", "bytes_per_param", "embed_bits", "compressor_ratio", "extra_params", "scheme")
TIME_COST_KEYS = ("time_factor", "eval_time_factor")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class CatalogError(ValueError):
    """A technique folder that cannot be used; the message is one line naming the folder and the key."""


@dataclass(frozen=True, eq=False)
class Technique:
    """One catalog technique (satisfies agents.catalog.TechniqueLike). Mappings are read-only views."""

    name: str
    description: str
    category: str
    introduced_in: str
    reported_gain: str
    scale: str
    patch: str = ""  # unified diff against the baseline trainer; "" = env only
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    small_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    knobs: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    conflicts: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    cost: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    path: Path | None = None  # the technique's folder

    @property
    def size_cost(self) -> SizeCost:
        """The byte cost for search_space.size_estimate (the [cost] table without the time keys)."""
        return SizeCost.from_metadata({k: v for k, v in self.cost.items() if k in SIZE_COST_KEYS})

    @property
    def time_factor(self) -> float:
        return float(self.cost.get("time_factor", 1.0))

    @property
    def eval_time_factor(self) -> float:
        return float(self.cost.get("eval_time_factor", 1.0))

    def __repr__(self) -> str:
        return f"Technique({self.name!r}, category={self.category!r})"


# ------------------------------------------------------------------------------------------------ loading


def _hint(word: str, pool: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(pool), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _env_table(where: str, key: str, table: Any) -> MappingProxyType:
    if not isinstance(table, Mapping):
        raise CatalogError(f"{where}: [{key}] must be a table of NAME = value, got {type(table).__name__}")
    out = {}
    for name, value in table.items():
        if not _ENV_RE.match(name):
            raise CatalogError(f"{where}: [{key}] {name!r} is not an environment variable name (UPPER_CASE)")
        if isinstance(value, bool):
            value = "1" if value else "0"
        elif not isinstance(value, str | int | float) or (isinstance(value, float) and not math.isfinite(value)):
            raise CatalogError(f"{where}: [{key}] {name} must be a string or a number, got {value!r}")
        out[name] = str(value)
    return MappingProxyType(out)


def _knobs(where: str, table: Any) -> MappingProxyType:
    if not isinstance(table, Mapping):
        raise CatalogError(f"{where}: [knobs] must hold one table per knob ([knobs.NAME]), got {type(table).__name__}")
    out = {}
    for name, data in table.items():
        if not _ENV_RE.match(name):
            raise CatalogError(f"{where}: knobs.{name} is not an environment variable name (UPPER_CASE)")
        if not isinstance(data, Mapping):
            raise CatalogError(f"{where}: knobs.{name} must be a table like {{low = 0.01, high = 0.1, default = 0.04}}")
        if "default" not in data:
            raise CatalogError(f"{where}: knobs.{name} has no default (the value the patched trainer uses when unset)")
        try:
            rng = KnobRange.from_dict(name, data, source="technique")
        except ValueError as e:
            raise CatalogError(f"{where}: knobs.{name}: {' '.join(str(e).split())}") from None
        if rng.kind != "fixed" and not rng.contains(data["default"]):
            raise CatalogError(f"{where}: knobs.{name} default {data['default']!r} is outside its range")
        out[name] = MappingProxyType(dict(data))
    return MappingProxyType(out)


def _cost(where: str, table: Any) -> MappingProxyType:
    if not isinstance(table, Mapping):
        raise CatalogError(f"{where}: [cost] must be a table, got {type(table).__name__}")
    allowed = SIZE_COST_KEYS + TIME_COST_KEYS
    for key, value in table.items():
        if key not in allowed:
            raise CatalogError(f"{where}: cost.{key} is not a cost key{_hint(key, allowed)}; "
                               f"allowed: {', '.join(allowed)}")
        if key in TIME_COST_KEYS and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
            raise CatalogError(f"{where}: cost.{key} must be a positive number, got {value!r}")
    try:
        SizeCost.from_metadata({k: v for k, v in table.items() if k in SIZE_COST_KEYS})
    except (ValueError, TypeError) as e:
        raise CatalogError(f"{where}: [cost] {' '.join(str(e).split())}") from None
    return MappingProxyType(dict(table))


def _names(where: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogError(f"{where}: {key} must be a list of technique names, got {value!r}")
    return tuple(dict.fromkeys(value))


def _text(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: {key} must be a non-empty string")
    return " ".join(value.split()) if key == "description" else value.strip()


def load_technique(folder: Path) -> Technique:
    """One folder, validated on its own (names in conflicts/requires are checked by load_catalog)."""
    name = folder.name
    where = f"search_space/techniques/{name}/{META_FILE}"
    if not _NAME_RE.match(name):
        raise CatalogError(f"search_space/techniques/{name}: folder names are technique names (lower_snake_case)")
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise CatalogError(f"{where}: missing; every technique folder needs one (schema: techniques/loader.py)")
    try:
        meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CatalogError(f"{where}: not valid TOML ({' '.join(str(e).split())})") from None
    for key in meta:
        if key not in REQUIRED + OPTIONAL:
            raise CatalogError(f"{where}: unknown key '{key}'{_hint(key, REQUIRED + OPTIONAL)}; "
                               f"allowed: {', '.join(REQUIRED + OPTIONAL)}")
    for key in REQUIRED:
        if key not in meta:
            raise CatalogError(f"{where}: missing required key '{key}'")
    text = {key: _text(where, key, meta[key]) for key in REQUIRED}
    if "\n\n" in meta["description"].strip():
        raise CatalogError(f"{where}: description must be one paragraph (no blank line)")
    if text["category"] not in CATEGORIES:
        raise CatalogError(f"{where}: category '{text['category']}' is not one of {', '.join(CATEGORIES)}"
                           f"{_hint(text['category'], CATEGORIES)}")
    if text["scale"] not in SCALES:
        raise CatalogError(f"{where}: scale '{text['scale']}' is not one of {', '.join(SCALES)}")
    patch_path = folder / PATCH_FILE
    patch = patch_path.read_text(encoding="utf-8") if patch_path.is_file() else ""
    if patch.strip() and not re.search(r"^--- (a/)?train_gpt\.py\s*$", patch, re.M):
        raise CatalogError(f"search_space/techniques/{name}/{PATCH_FILE}: not a unified diff of train_gpt.py "
                           "(needs '--- a/train_gpt.py' / '+++ b/train_gpt.py' headers)")
    conflicts = _names(where, "conflicts", meta.get("conflicts", []))
    requires = _names(where, "requires", meta.get("requires", []))
    for key, names in (("conflicts", conflicts), ("requires", requires)):
        if name in names:
            raise CatalogError(f"{where}: {key} names the technique itself")
    both = set(conflicts) & set(requires)
    if both:
        raise CatalogError(f"{where}: {sorted(both)[0]} is in both conflicts and requires")
    env = _env_table(where, "env", meta.get("env", {}))
    small_env = _env_table(where, "small_env", meta.get("small_env", {}))
    if not patch.strip() and not env:
        raise CatalogError(f"{where}: no patch.diff and no [env]: the technique changes nothing")
    return Technique(
        name=name, description=text["description"], category=text["category"],
        introduced_in=text["introduced_in"], reported_gain=text["reported_gain"], scale=text["scale"],
        patch=patch, env=env, small_env=small_env, knobs=_knobs(where, meta.get("knobs", {})),
        conflicts=conflicts, requires=requires, cost=_cost(where, meta.get("cost", {})), path=folder,
    )  # fmt: skip


def load_catalog(root: str | Path | None = None) -> list[Technique]:
    """Every technique under `root` (default: this folder), sorted by name, cross-checked.

    Conflicts are made symmetric (A lists B => B conflicts with A). Raises CatalogError for a conflict or
    requirement naming a technique that does not exist, and for a requirement that conflicts with the technique
    (directly or through requirements of requirements).
    """
    root = Path(root) if root is not None else TECHNIQUES_DIR
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    loaded = {t.name: t for t in (load_technique(f) for f in folders)}
    for t in loaded.values():
        where = f"search_space/techniques/{t.name}/{META_FILE}"
        for key in ("conflicts", "requires"):
            for other in getattr(t, key):
                if other not in loaded:
                    raise CatalogError(f"{where}: {key} names unknown technique '{other}'{_hint(other, loaded)}")
    symmetric = {name: set(t.conflicts) for name, t in loaded.items()}
    for name, t in loaded.items():
        for other in t.conflicts:
            symmetric[other].add(name)
    out = []
    for name in sorted(loaded):
        t = loaded[name]
        conflicts = tuple(sorted(symmetric[name]))
        if conflicts != t.conflicts:
            t = replace(t, conflicts=conflicts)
        out.append(t)
    by_name = {t.name: t for t in out}
    for t in out:
        group = _requirements(t.name, by_name) | {t.name}
        for member in sorted(group):
            clash = sorted(set(by_name[member].conflicts) & group)
            if clash:
                raise CatalogError(f"search_space/techniques/{t.name}/{META_FILE}: its requirements bring "
                                   f"{member!r} and {clash[0]!r} together, but they conflict")
    return out


def _requirements(name: str, by_name: Mapping[str, Technique]) -> set[str]:
    todo, done = list(by_name[name].requires), set()
    while todo:
        n = todo.pop()
        if n not in done:
            done.add(n)
            todo += list(by_name[n].requires)
    done.discard(name)
    return done


# ------------------------------------------------------------------------------------------------ lookups


def get(name: str, catalog: Iterable[Technique] | None = None) -> Technique:
    """The technique called `name`; CatalogError with close matches when there is none."""
    techniques = {t.name: t for t in (load_catalog() if catalog is None else catalog)}
    if name not in techniques:
        close = difflib.get_close_matches(name, list(techniques), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise CatalogError(f"unknown technique {name!r}{hint} (pgolf techniques list shows them all)")
    return techniques[name]


def closure(names: Iterable[str], catalog: Iterable[Technique] | None = None) -> list[Technique]:
    """The named techniques plus what they require, requirements before the techniques needing them (ties by name).
    CatalogError when a name is unknown or two of them conflict."""
    techniques = {t.name: t for t in (load_catalog() if catalog is None else catalog)}
    order: list[Technique] = []
    seen: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in seen:
            return
        t = get(name, techniques.values())
        if name in stack:
            raise CatalogError(f"technique requirements form a cycle: {' -> '.join((*stack, name))}")
        for req in sorted(t.requires):
            visit(req, (*stack, name))
        seen.add(name)
        order.append(t)

    for name in sorted(dict.fromkeys(names)):
        visit(name, ())
    chosen = {t.name for t in order}
    for t in order:
        clash = sorted(set(t.conflicts) & chosen)
        if clash:
            raise CatalogError(f"techniques {t.name!r} and {clash[0]!r} conflict; they cannot be combined")
    return order


def combined_patch(techniques: Iterable[Technique], base_source: str) -> str:
    """One diff with every technique's patch (agents.patches.combine); PatchError when two touch the same lines."""
    from agents.patches import combine

    diff = ""
    for t in techniques:
        diff = combine(base_source, diff, t.patch) if t.patch.strip() else diff
    return diff


def merged_env(techniques: Iterable[Technique], small: bool = False) -> dict[str, str]:
    """The techniques' [env] in order (later ones win); small=True: each one's [small_env] over its [env]."""
    out: dict[str, str] = {}
    for t in techniques:
        out.update(t.env)
        if small:
            out.update(t.small_env)
    return out


def merged_cost(techniques: Iterable[Technique]) -> SizeCost:
    """The techniques' byte costs merged in order (SizeCost.merged: set fields win, extra_params add up)."""
    cost = SizeCost()
    for t in techniques:
        cost = cost.merged(t.size_cost)
    return cost
