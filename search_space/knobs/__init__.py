"""Numeric knobs: what a trainer reads from its environment, and the Optuna space over it.

Three layers:

* `discover_knobs(source)` reads a trainer's source with `ast` and returns every environment
  variable it reads, with the type its code parses it as and its default
  (`os.environ.get`, `os.getenv`, `os.environ[...]`, wrapped in `int()`, `float()`,
  `bool(int())`, compared to a string, or read through a small helper function).
* The curated table (`search_space/knobs.toml`, beside this package): a range for every knob
  worth searching, taken from what the baseline and the records used, plus the knobs that must
  never be searched, each with its reason. `curated_ranges()` and `never_searched()` load it.
* `SearchSpace`: discovered knobs intersected with the table, narrowed by the search config
  (`include`, `exclude`, `ranges`), extended by techniques (`extra=`). `distributions()` gives
  the Optuna distributions, `sample(trial)` the env overrides as strings the trainer parses.
  Shape constraints (GQA, head_dim, batch divisibility) are enforced by construction: the
  space only offers combinations that are valid, and refuses to build with a clear reason
  when a user range makes an invalid one possible.

Modules:

_values       OFFICIAL_DEFAULTS; format_env_value / parse_env_value (the trainer's own parsing)
_discovery    KnobSpec, discover_knobs (AST)
_ranges       KnobRange; the curated table (curated_ranges, never_searched, never_reason)
_constraints  ConstraintError, constraint_violations; the static check of a whole space
_params       one Optuna parameter per searched knob; technique knobs' types
_space        SearchSpace
"""

from search_space.knobs._constraints import MICRO_BATCHES, ConstraintError, constraint_violations
from search_space.knobs._discovery import KnobSpec, discover_knobs
from search_space.knobs._ranges import (
    GROUPS,
    KINDS,
    RANGE_KEYS,
    SIZE_GROUPS,
    TABLE_PATH,
    KnobRange,
    curated_ranges,
    never_reason,
    never_searched,
)
from search_space.knobs._space import SearchSpace
from search_space.knobs._values import OFFICIAL_DEFAULTS, format_env_value, parse_env_value

__all__ = [
    "GROUPS",
    "KINDS",
    "MICRO_BATCHES",
    "OFFICIAL_DEFAULTS",
    "RANGE_KEYS",
    "SIZE_GROUPS",
    "TABLE_PATH",
    "ConstraintError",
    "KnobRange",
    "KnobSpec",
    "SearchSpace",
    "constraint_violations",
    "curated_ranges",
    "discover_knobs",
    "format_env_value",
    "never_reason",
    "never_searched",
    "parse_env_value",
]
