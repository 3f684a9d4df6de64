"""A candidate's vocabulary picks its dataset and tokenizer: the track's, or the variant named for that vocabulary."""

from __future__ import annotations

import dataclasses

import pytest

from agents.patches import apply_patch
from harness.config import load_track
from harness.errors import ConfigError, PgolfError
from harness.track_data import candidate_vocab, ensure_data, track_for_vocab
from search_space.techniques import load_catalog
from trainer import BASELINE_PATH

BASELINE = BASELINE_PATH.read_text()


def test_the_vocab_variant_follows_the_data_pipelines_names():
    smoke, main = load_track("cpu-smoke"), load_track("main-10min-16mb")
    assert track_for_vocab(smoke, 1024) is smoke
    v = track_for_vocab(smoke, 4096).data
    assert (v.dataset, v.tokenizer, v.vocab_size) == ("local_sp4096", "local_4096_bpe.model", 4096)
    v = track_for_vocab(main, 8192).data
    assert (v.dataset, v.tokenizer, v.source) == ("fineweb10B_sp8192", "fineweb_8192_bpe.model", "fetch")
    odd = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, dataset="mine"))
    with pytest.raises(ConfigError, match="cannot name the vocab 4096 variant"):
        track_for_vocab(odd, 4096)


def test_the_vocab_comes_from_the_env_else_from_the_patched_default():
    main, smoke = load_track("main-10min-16mb"), load_track("cpu-smoke")
    technique = next(t for t in load_catalog() if t.name == "vocab_sp4096")
    patched = apply_patch(BASELINE, technique.patch)
    assert candidate_vocab(main, BASELINE, {}) == 1024
    assert candidate_vocab(main, patched, {}) == 4096  # the main track does not pin VOCAB_SIZE
    assert candidate_vocab(smoke, patched, {}) == 1024  # the tiny track pins it: the env must say 4096
    assert candidate_vocab(smoke, patched, {"VOCAB_SIZE": "4096"}) == 4096
    with pytest.raises(ConfigError, match="VOCAB_SIZE='big' is not an integer"):
        candidate_vocab(smoke, BASELINE, {"VOCAB_SIZE": "big"})


def test_a_missing_fetched_variant_names_the_command_that_fetches_it(tmp_path):
    main = load_track("main-10min-16mb")
    main = dataclasses.replace(main, data=dataclasses.replace(main.data, root=str(tmp_path)))
    with pytest.raises(PgolfError, match="pgolf data fetch --variant sp4096"):
        ensure_data(track_for_vocab(main, 4096), announce=lambda m: None)

