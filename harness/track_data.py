"""Which dataset and tokenizer a candidate trains on: the track's, or the variant its vocabulary needs.

A track names one dataset (e.g. `fineweb10B_sp1024` with `fineweb_1024_bpe.model`). A candidate that sets
VOCAB_SIZE to another value (a larger-vocabulary technique, by env or by its patched default) needs the
same data tokenized with that vocabulary: the names follow the data pipeline's convention, `..._sp{V}` and
`..._{V}_bpe.model`, so `pgolf data build --vocab V` / `pgolf data fetch --variant sp{V}` make them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from harness.config import Track
from harness.errors import ConfigError


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
