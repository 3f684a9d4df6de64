"""Env values: the official baseline's defaults, and values as the strings the trainer parses."""

from __future__ import annotations

from typing import Any

# The official baseline's knobs and defaults (train_gpt.py of openai/parameter-golf, record copy in
# records/track_10min_16mb/2026-03-17_NaiveBaseline), plus the harness contract's numeric additions.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "DATA_PATH": "./data/datasets/fineweb10B_sp1024",
    "TOKENIZER_PATH": "./data/tokenizers/fineweb_1024_bpe.model",
    "SEED": 1337,
    "VAL_BATCH_SIZE": 524_288,
    "VAL_LOSS_EVERY": 1000,
    "TRAIN_LOG_EVERY": 200,
    "ITERATIONS": 20000,
    "WARMDOWN_ITERS": 1200,
    "WARMUP_STEPS": 20,
    "TRAIN_BATCH_TOKENS": 524_288,
    "TRAIN_SEQ_LEN": 1024,
    "MAX_WALLCLOCK_SECONDS": 600.0,
    "QK_GAIN_INIT": 1.5,
    "VOCAB_SIZE": 1024,
    "NUM_LAYERS": 9,
    "NUM_KV_HEADS": 4,
    "MODEL_DIM": 512,
    "NUM_HEADS": 8,
    "MLP_MULT": 2,
    "TIE_EMBEDDINGS": True,
    "ROPE_BASE": 10000.0,
    "LOGIT_SOFTCAP": 30.0,
    "EMBED_LR": 0.6,
    "HEAD_LR": 0.008,
    "TIED_EMBED_LR": 0.05,
    "TIED_EMBED_INIT_STD": 0.005,
    "MATRIX_LR": 0.04,
    "SCALAR_LR": 0.04,
    "MUON_MOMENTUM": 0.95,
    "MUON_BACKEND_STEPS": 5,
    "MUON_MOMENTUM_WARMUP_START": 0.85,
    "MUON_MOMENTUM_WARMUP_STEPS": 500,
    "BETA1": 0.9,
    "BETA2": 0.95,
    "ADAM_EPS": 1e-8,
    "GRAD_CLIP_NORM": 0.0,
    "EVAL_STRIDE": 0,
    "VAL_TOKENS": 0,
}


def format_env_value(value: Any, typ: type) -> str:
    """A value as the string the trainer's own parsing (`int()`, `float()`, `bool(int())`) accepts."""
    if typ is bool:
        if isinstance(value, str):
            return "1" if _parse_bool(value) else "0"
        return "1" if value else "0"
    if typ is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not an integer")
            value = int(value)
        return str(int(value))
    if typ is float or isinstance(value, float):
        return f"{float(value):.6g}"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    return bool(int(t))


def parse_env_value(text: str, typ: type) -> Any:
    """Parse an env string the way the trainer would; ValueError when it would not parse."""
    if typ is bool:
        return _parse_bool(text)
    if typ is int:
        return int(text)
    if typ is float:
        return float(text)
    return text


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b
