"""Search configuration and track profiles, loaded from TOML into frozen dataclasses.

Every key is checked: an unknown key, a wrong type or an out-of-range value raises a
`ConfigError` whose one-line message names the key, the file and the allowed values.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

TRACKS_DIR = Path(__file__).with_name("tracks")
PRESETS_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class Rung:
    name: str
    gpus: int = 1  # 0 = CPU only; >1 runs under torchrun on one node
    time_cap_s: float = 600.0  # training cap at this rung (the harness kills at cap + grace)
    keep: float = 1.0  # fraction of this rung's finishers promoted to the next rung (successive halving)
    env: dict[str, str] = field(default_factory=dict)  # forced trainer env at this rung
    seeds: int = 1


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "local_sp1024"
    tokenizer: str = "local_1024_bpe.model"
    source: str = "build"  # "build" (local corpus) or "fetch" (official shards)
    root: str = "data"
    train_shards: int = 1
    vocab_size: int = 1024


@dataclass(frozen=True)
class Confirm:
    seeds: int = 3


@dataclass(frozen=True)
class Track:
    name: str
    description: str = ""
    byte_cap: int = 16_000_000
    time_cap_s: float = 600.0
    eval_cap_s: float = 600.0
    startup_s: float = 120.0  # interpreter, imports, compile and data loading: allowed on top of the caps
    records_folder: str = "track_10min_16mb"
    hardware: str = ""
    scale: str = "full"  # "small" (tiny CPU models) or "full": which catalog techniques can show a gain here
    data: DataSpec = field(default_factory=DataSpec)
    env: dict[str, str] = field(default_factory=dict)
    rungs: tuple[Rung, ...] = ()
    confirm: Confirm = field(default_factory=Confirm)

    def rung(self, name: str) -> Rung:
        for r in self.rungs:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def top_rung(self) -> Rung:
        return self.rungs[-1]

    def run_env(self, rung: Rung, candidate_env: dict[str, str], *, dataset: str | Path, tokenizer: str | Path,
                seed: int, run_id: str) -> dict[str, str]:
        """The trainer env of one run at `rung`: the track's settings, then the candidate's overrides, then
        what the rung forces, then the data and ids the harness owns. The driver's runs and the pre-flight
        CPU smoke both build it here, so the smoke trains what the ladder would."""
        env = {**self.env, **candidate_env, **rung.env}
        env.update(DATA_PATH=str(dataset), TOKENIZER_PATH=str(tokenizer), SEED=str(seed), RUN_ID=run_id)
        env.setdefault("MAX_WALLCLOCK_SECONDS", str(rung.time_cap_s))
        return env


@dataclass(frozen=True)
class Budget:
    max_candidates: int = 50  # proposals that pass pre-flight
    max_wall_hours: float = 8.0
    max_gpu_hours: float = 0.0  # 0 = unlimited
    price_per_gpu_hour: float = 0.0  # for the cost ledger
    max_cost_usd: float = 0.0  # 0 = unlimited


@dataclass(frozen=True)
class ProposerShares:
    optuna: float = 0.5
    catalog: float = 0.5
    llm: float = 0.0


@dataclass(frozen=True)
class Promotion:
    seeds: int = 3
    margin_nats: float = 0.005
    alpha: float = 0.01
    ablate: bool = True
    enabled: bool = True
    attempts: int = 2  # candidates confirmed in turn when the best fails; alpha is split between them


@dataclass(frozen=True)
class Knobs:
    include: tuple[str, ...] = ()  # empty = every curated knob the baseline reads
    exclude: tuple[str, ...] = ()
    ranges: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class LLM:
    model: str = "gpt-4.1"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    max_tokens: int = 4096
    concurrency: int = 2
    max_total_tokens: int = 2_000_000
    max_cost_usd: float = 20.0
    price_per_1k_input: float = 0.002
    price_per_1k_output: float = 0.008
    timeout_s: float = 120.0
    max_retries: int = 4
    max_repairs: int = 2
    # The CPU smoke stage of each LLM proposal (catalog techniques are tested in CI and Optuna samples only
    # shape-checked knobs, so they skip it): a few steps of the cpu-smoke track's tiny model through the
    # sandboxed runner; a crash goes back to the agent as a repair turn.
    smoke: bool = True
    smoke_timeout_s: float = 120.0  # hard wall-clock limit of one smoke, training and re-score together
    smoke_steps: int = 4  # training steps (the cpu-smoke track's smoke rung runs 4)
    smoke_concurrency: int = 1  # smoke runs at once: each takes a CPU core from the driver and Ray


@dataclass(frozen=True)
class SearchConfig:
    name: str = "search"
    track: str = "cpu-smoke"
    baseline: str = ""  # path to a contract-following train_gpt.py; "" = pgolf's own baseline
    store: str = "runs"  # parent folder; the search lives in <store>/<name>/
    records: str = "records"  # where promoted record folders are written (records/<track folder>/...)
    ray_address: str = ""  # "" = start Ray locally; "auto" = join a cluster
    logical_gpus: int = 0  # ray.init(num_gpus=...) when starting locally without real GPUs (CI, demos)
    seed: int = 0
    objective: str = "val_bpb"  # "val_bpb" (byte cap as a constraint) or "pareto" (val_bpb and bytes)
    eta: float = 3.0  # default successive-halving reduction when a rung does not set keep
    queue_depth: float = 2.0  # queued runs per free slot, so GPUs never idle while candidates wait
    grace_s: float = 30.0
    author: str = ""  # for submission.json of promoted records
    github_id: str = ""
    budget: Budget = field(default_factory=Budget)
    proposers: ProposerShares = field(default_factory=ProposerShares)
    promotion: Promotion = field(default_factory=Promotion)
    knobs: Knobs = field(default_factory=Knobs)
    llm: LLM = field(default_factory=LLM)

    def search_dir(self) -> Path:
        return Path(self.store) / self.name


_CHOICES = {("SearchConfig", "objective"): ("val_bpb", "pareto"), ("DataSpec", "source"): ("build", "fetch")}


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin in (tuple, list):
        return isinstance(value, list | tuple)
    if origin is dict:
        return isinstance(value, dict)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    return True


def _build(cls: type, table: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a TOML table, checking keys, types and choices."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{path}'{hint}; allowed: {', '.join(names)}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = _build(hint_t, value, path)
            continue
        if typing.get_origin(hint_t) is tuple and typing.get_args(hint_t)[0] is Rung:
            if not isinstance(value, list):
                raise ConfigError(f"{path}: expected an array of tables ([[{key}]])")
            kwargs[key] = tuple(_build(Rung, r, f"{path}[{i}]") for i, r in enumerate(value))
            continue
        if not _type_ok(value, hint_t):
            raise ConfigError(f"{path}: expected {getattr(hint_t, '__name__', hint_t)}, got {value!r}")
        choices = _CHOICES.get((cls.__name__, key))
        if choices and value not in choices:
            raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {', '.join(choices)}")
        if typing.get_origin(hint_t) is dict and key == "env":
            value = {str(k): str(v) for k, v in value.items()}
        if typing.get_origin(hint_t) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}); a config is TOML text") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}; pass a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML ({e}); fix the syntax at that line") from None


def _check_track(track: Track, source: str) -> Track:
    if not track.rungs:
        raise ConfigError(f"{source}: a track needs at least one [[rungs]] table")
    names = [r.name for r in track.rungs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: rung names must be unique, got {names}")
    for r in track.rungs:
        if not 0 < r.keep <= 1:
            raise ConfigError(f"{source}: rungs.{r.name}.keep must be in (0, 1], got {r.keep}")
        if r.gpus < 0 or (r.gpus > 1 and 8 % r.gpus):
            raise ConfigError(f"{source}: rungs.{r.name}.gpus must be 0, 1, 2, 4 or 8, got {r.gpus}")
    if track.scale not in ("small", "full"):
        raise ConfigError(f"{source}: scale must be 'small' or 'full', got {track.scale!r}")
    if track.byte_cap <= 0 or track.time_cap_s <= 0:
        raise ConfigError(f"{source}: byte_cap and time_cap_s must be positive")
    if track.eval_cap_s <= 0 or track.startup_s < 0 or any(r.time_cap_s <= 0 for r in track.rungs):
        raise ConfigError(f"{source}: eval_cap_s and every rung's time_cap_s must be positive, startup_s >= 0")
    return track


def available_tracks() -> list[str]:
    return sorted(p.stem for p in TRACKS_DIR.glob("*.toml"))


def load_track(name_or_path: str) -> Track:
    """A shipped track by name (main-10min-16mb, local-30min-2mb, cpu-smoke) or a user TOML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TRACKS_DIR / f"{name_or_path}.toml"
        if not path.exists():
            allowed = ", ".join(available_tracks())
            raise ConfigError(f"unknown track '{name_or_path}'; allowed: {allowed} or a .toml path")
    return _check_track(_build(Track, _read_toml(path), ""), str(path))


def load_config(path: str | Path | None = None, preset: str | None = None, **overrides: Any) -> SearchConfig:
    """A search config from a TOML file or a shipped preset, with CLI overrides on top."""
    if path is not None and preset is not None:
        raise ConfigError("give either a config file or --preset, not both")
    table: dict = {}
    if preset is not None:
        p = PRESETS_DIR / f"{preset}.toml"
        if not p.exists():
            names = ", ".join(sorted(q.stem for q in PRESETS_DIR.glob("*.toml")))
            raise ConfigError(f"unknown preset '{preset}'; allowed: {names}")
        table = _read_toml(p)
    elif path is not None:
        table = _read_toml(Path(path))
    table = {**table, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = _build(SearchConfig, table, "")
    load_track(cfg.track)  # fail now, not after Ray has started
    _check_ranges(cfg)
    if sum(dataclasses.astuple(cfg.proposers)) <= 0:
        raise ConfigError("proposers: at least one share must be positive (optuna, catalog, llm)")
    if cfg.promotion.seeds < 2:
        raise ConfigError("promotion.seeds must be >= 2 for a significance test")
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"name: {cfg.name!r} must be a non-empty folder name")
    return cfg


# (section, key) -> (lowest allowed, whether the lowest is allowed itself); every other number is >= 0
_LOWER = {("budget", "max_candidates"): (1, True), ("", "queue_depth"): (0, False), ("", "eta"): (1, False),
          ("promotion", "alpha"): (0, False), ("llm", "timeout_s"): (0, False), ("llm", "concurrency"): (1, True),
          ("llm", "max_tokens"): (1, True), ("promotion", "attempts"): (1, True),
          ("llm", "smoke_timeout_s"): (0, False), ("llm", "smoke_steps"): (1, True),
          ("llm", "smoke_concurrency"): (1, True)}


def _check_ranges(cfg: SearchConfig) -> None:
    """Numbers a search cannot mean negatively (budgets, shares, prices, caps) are checked here, by name."""
    sections = [("", cfg)] + [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                              if dataclasses.is_dataclass(getattr(cfg, f.name))]
    for section, obj in sections:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            low, inclusive = _LOWER.get((section, f.name), (0, True))
            if v < low or (v == low and not inclusive) or v != v:
                where = f"{section}.{f.name}" if section else f.name
                raise ConfigError(f"{where}: {v!r} is out of range; it must be {'>=' if inclusive else '>'} {low}")
    if not cfg.promotion.alpha < 1:
        raise ConfigError(f"promotion.alpha: {cfg.promotion.alpha!r} is out of range; it must be < 1")


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
