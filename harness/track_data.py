"""Which dataset and tokenizer a candidate trains on: the track's, or the variant its vocabulary needs.

A track names one dataset (e.g. `fineweb10B_sp1024` with `fineweb_1024_bpe.model`). A candidate that sets
VOCAB_SIZE to another value (a larger-vocabulary technique, by env or by its patched default) needs the
same data tokenized with that vocabulary: the names follow the data pipeline's convention, `..._sp{V}` and
`..._{V}_bpe.model`, so `pgolf data build --vocab V` / `pgolf data fetch --variant sp{V}` make them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from harness.config import Track
from harness.errors import ConfigError, PgolfError


def candidate_vocab(track: Track, source: str, env: Mapping[str, str]) -> int:
    """The vocabulary a candidate's trainer will use: the env it runs with, else its source's default."""
    from search_space.knobs import discover_knobs

    value = {**track.env, **env}.get("VOCAB_SIZE")
    if value is None:
        knob = next((k for k in discover_knobs(source) if k.name == "VOCAB_SIZE"), None)
        value = knob.default if knob is not None and knob.default is not None else track.data.vocab_size
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"VOCAB_SIZE={value!r} is not an integer; set it to a tokenizer size such as 1024") from None


def track_for_vocab(track: Track, vocab: int) -> Track:
    """The track with its data section pointing at the `vocab` variant of its dataset and tokenizer."""
    if vocab == track.data.vocab_size:
        return track
    old = track.data.vocab_size
    dataset, n = re.subn(rf"sp{old}$", f"sp{vocab}", track.data.dataset)
    tokenizer, m = re.subn(rf"_{old}_", f"_{vocab}_", track.data.tokenizer)
    if not (n and m):
        raise ConfigError(f"track {track.name}: cannot name the vocab {vocab} variant of dataset {track.data.dataset}"
                          f" / {track.data.tokenizer}; name them ..._sp{old} and ..._{old}_bpe.model")
    data = dataclasses.replace(track.data, dataset=dataset, tokenizer=tokenizer, vocab_size=vocab)
    return dataclasses.replace(track, data=data)


def ensure_data(track: Track, announce: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Dataset and tokenizer paths for a track, building the local corpus when the track says so."""
    root = Path(track.data.root).resolve()
    dataset = root / "datasets" / track.data.dataset
    tokenizer = root / "tokenizers" / track.data.tokenizer
    if dataset.is_dir() and tokenizer.exists() and any(dataset.glob("fineweb_val_*.bin")):
        check_shards(dataset)
        return dataset, tokenizer
    if track.data.source == "build":
        from data.build import build_dataset, stdlib_documents

        announce(f"building the local corpus into {root} (once; the standard library's docstrings)")
        built = build_dataset(stdlib_documents(), dest=root, vocab_size=track.data.vocab_size)
        return Path(built.dataset_dir), Path(built.tokenizer_path)
    raise PgolfError(f"data for track {track.name} is missing at {dataset}; run: pgolf data fetch --variant "
                     f"{track.data.dataset.rsplit('_', 1)[-1]} --train-shards {track.data.train_shards} "
                     f"--dest {track.data.root}")


def check_shards(dataset: Path) -> None:
    """Every shard's header and size (a few bytes each): a corrupted shard fails now, not in every run."""
    from data.shards import ShardError, read_header

    for shard in sorted(dataset.glob("fineweb_*.bin")):
        try:
            read_header(shard)
        except ShardError as e:
            raise PgolfError(f"corrupted data: {e}") from None
