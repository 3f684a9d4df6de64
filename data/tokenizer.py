"""SentencePiece BPE with the challenge's exact trainer settings, plus the checks a tokenizer must pass."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sentencepiece as spm

# The official exporter's settings (data/download_hf_docs_and_tokenize.py, build_sentencepiece_tokenizer).
SPM_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}
SPECIAL_PIECES = {0: "<pad>", 1: "<s>", 2: "</s>", 3: "<unk>"}
SPACE_PIECE = "\u2581"  # "▁", SentencePiece's whitespace marker
MIN_VOCAB = 320  # 4 specials + 256 byte-fallback pieces + room for characters and merges
MAX_VOCAB = 2**16  # shards store uint16 ids


class TokenizerError(ValueError):
    """A tokenizer cannot be trained or does not meet the challenge's conventions (one-line message)."""


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    model_path: str | os.PathLike[str],
    *,
    num_threads: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> spm.SentencePieceProcessor:
    """Train a BPE tokenizer on ``texts``; write ``model_path`` and its ``.vocab`` beside it; return it loaded.

    Texts are fed as the official exporter does (NUL as space, stripped, empty ones skipped). The model is
    written from memory, so its bytes do not embed the output path. Raises TokenizerError.
    """
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise TokenizerError(f"vocab_size {vocab_size} out of range; use {MIN_VOCAB}..{MAX_VOCAB} (e.g. 1024)")
    model_path = Path(model_path)
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {
        **SPM_SETTINGS,
        "vocab_size": vocab_size,
        "num_threads": num_threads or os.cpu_count() or 1,
        "minloglevel": 2,  # keep the C++ trainer's chatter (e.g. "too long line" skips) off the terminal
        **(overrides or {}),
    }
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=_training_lines(texts), model_writer=buf, **kwargs)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise TokenizerError(f"SentencePiece training failed for vocab_size {vocab_size} ({msg}); "
                             "use more text or a smaller vocab size") from None
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    check_tokenizer(sp, vocab_size, name=str(model_path))
    model_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(model_path, buf.getvalue())
    _write_atomic(model_path.with_suffix(".vocab"), vocab_text(sp).encode("utf-8"))
    return sp


def _training_lines(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        line = text.replace("\x00", " ").strip()
        if line:
            yield line


def check_tokenizer(sp: spm.SentencePieceProcessor, vocab_size: int | None = None, *, name: str = "tokenizer") -> None:
    """Raise TokenizerError unless ``sp`` has the challenge's ids, size and a standalone "▁" piece."""
    size = sp.get_piece_size()
    if vocab_size is not None and size != vocab_size:
        raise TokenizerError(f"{name}: has {size} pieces, expected exactly {vocab_size} (VOCAB_SIZE must equal "
                             "the tokenizer size); the corpus is too small for this vocab: add text or lower it")
    for i, piece in SPECIAL_PIECES.items():
        if size <= i or sp.id_to_piece(i) != piece:
            raise TokenizerError(f"{name}: id {i} is not {piece}; train with pad=0 bos=1 eos=2 unk=3")
    if not sp.is_byte(4) or sp.id_to_piece(4) != "<0x00>":
        raise TokenizerError(f"{name}: no byte-fallback pieces at ids 4..259; train with byte_fallback=True")
    space = sp.piece_to_id(SPACE_PIECE)
    if space == sp.unk_id() or sp.is_byte(space) or sp.is_control(space) or sp.id_to_piece(space) != SPACE_PIECE:
        # Without it, a lone space becomes byte <0x20> and the bits-per-byte accounting of the space marker breaks.
        raise TokenizerError(f"{name}: no standalone '{SPACE_PIECE}' piece; the corpus needs ordinary spaced text")


def vocab_text(sp: spm.SentencePieceProcessor) -> str:
    """The ``.vocab`` file SentencePiece writes: one ``piece<TAB>score`` line per id."""
    return "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))


def load_tokenizer(path: str | os.PathLike[str]) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model file; a missing or unreadable file raises TokenizerError naming it."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer model not found; fetch or build the dataset first")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise TokenizerError(f"{path}: not a SentencePiece model ({' '.join(str(e).split())})") from None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
