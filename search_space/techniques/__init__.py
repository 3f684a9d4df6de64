"""The technique catalog: leaderboard techniques as patches of the baseline trainer plus their metadata.

Each technique is a folder `search_space/techniques/<name>/` with `technique.toml` and `patch.diff`; the schema is
in `search_space/techniques/loader.py`. `load_catalog()` returns them sorted by name (agents.catalog's
CatalogProposer and `pgolf techniques` read it); `get(name)` one of them; `closure(names)` a set with its
requirements, in application order.
"""

from search_space.techniques.loader import (
    CATEGORIES,
    SCALES,
    TECHNIQUES_DIR,
    CatalogError,
    Technique,
    closure,
    combined_patch,
    get,
    load_catalog,
    load_technique,
    merged_cost,
    merged_env,
)

__all__ = [
    "CATEGORIES",
    "SCALES",
    "TECHNIQUES_DIR",
    "CatalogError",
    "Technique",
    "closure",
    "combined_patch",
    "get",
    "load_catalog",
    "load_technique",
    "merged_cost",
    "merged_env",
]
