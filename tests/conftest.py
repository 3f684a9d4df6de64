"""Shared fixtures: one locally built corpus per test session (real SentencePiece, real text)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tiny trainer configuration used by every CPU test run (seconds on 2 cores).
TINY_TRAINER_ENV = {
    "VOCAB_SIZE": "1024",
    "NUM_LAYERS": "2",
    "MODEL_DIM": "64",
    "NUM_HEADS": "4",
    "NUM_KV_HEADS": "2",
    "MLP_MULT": "2",
    "TRAIN_SEQ_LEN": "128",
    "TRAIN_BATCH_TOKENS": "8192",
    "VAL_BATCH_SIZE": "16384",
    "VAL_TOKENS": "32768",
    "ITERATIONS": "30",
    "WARMUP_STEPS": "2",
    "WARMDOWN_ITERS": "10",
    "VAL_LOSS_EVERY": "0",
    "TRAIN_LOG_EVERY": "10",
    "MAX_WALLCLOCK_SECONDS": "0",
    "DEVICE": "cpu",
    "COMPILE": "0",
}


@pytest.fixture(scope="session")
def local_data(tmp_path_factory: pytest.TempPathFactory):
    """A sp1024 tokenizer and train/val shards built from the standard library's docstrings."""
    from data.build import build_dataset, stdlib_documents

    root = tmp_path_factory.mktemp("data")
    return build_dataset(stdlib_documents(), dest=root, vocab_size=1024)


@pytest.fixture()
def trainer_env(local_data) -> dict[str, str]:
    """Environment for a tiny CPU run of any contract-following trainer on the local corpus."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(TINY_TRAINER_ENV)
    env.update(
        DATA_PATH=str(local_data.dataset_dir),
        TOKENIZER_PATH=str(local_data.tokenizer_path),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture()
def python() -> str:
    return sys.executable
