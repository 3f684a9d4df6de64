"""The size estimator against a real int8 + zlib export of small models (the bench's export routine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from search_space import calibrate, count_params, estimate_artifact_bytes, payload_bytes

BENCH = Path(__file__).resolve().parents[1] / "bench" / "size_estimator.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pgolf_bench_size_estimator", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHAPES = [
    {"NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2"},  # all passthrough
    {"NUM_LAYERS": "3", "MODEL_DIM": "128", "NUM_HEADS": "4", "NUM_KV_HEADS": "1", "TIE_EMBEDDINGS": "0"},
    {"NUM_LAYERS": "2", "MODEL_DIM": "256", "NUM_HEADS": "8", "NUM_KV_HEADS": "4", "MLP_MULT": "3"},  # mixed
]


def _cfg(env: dict[str, str]) -> dict:
    out = {"VOCAB_SIZE": 1024, "NUM_LAYERS": 9, "MODEL_DIM": 512, "NUM_HEADS": 8, "NUM_KV_HEADS": 4, "MLP_MULT": 2,
           "TIE_EMBEDDINGS": 1, "name": "t"}
    out.update({k: int(v) for k, v in env.items()})
    return out


@pytest.mark.parametrize("env", SHAPES)
def test_payload_and_params_match_a_real_export(bench, env):
    sd = bench.build_state_dict(_cfg(env), "trained", 0.4, seed=0)
    assert sum(t.numel() for t in sd.values()) == count_params(env)["total"]
    measured = bench.export_int8_zlib(sd)
    p = payload_bytes(env)
    assert p.total == measured["payload"]  # the storage rules are exact
    assert abs(p.total + p.container_bytes - measured["raw_torch"]) / measured["raw_torch"] < 0.005


def test_compressed_estimate_tracks_trained_like_exports(bench):
    pairs = []
    for env in SHAPES:
        measured = bench.export_int8_zlib(bench.build_state_dict(_cfg(env), "trained", 0.4, seed=1))
        pairs.append((env, measured["compressed"]))
        est = estimate_artifact_bytes(env, 0)  # default calibration: the real baseline's ratio
        assert abs(est.compressed_bytes - measured["compressed"]) / measured["compressed"] < est.band
    calib = calibrate(pairs)
    assert calib.max_abs_rel_error < 0.02 and 0.85 < calib.ratio < 0.95
