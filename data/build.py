"""Build a tokenizer and train/val shards from local text, following the official exporter's conventions.

Documents are de-duplicated, shuffled with a fixed seed, and the first ``num_val_docs`` become validation.
The BPE tokenizer is trained on the training documents only. Each document is written as ``[BOS] + ids``
(no EOS), validation shards first, into ``<dest>/datasets/<name>/``; the tokenizer goes to
``<dest>/tokenizers/``, and a ``manifest.json`` plus ``doc_hashes.json`` (for train/val audits) go beside the
shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import read_text_documents, stdlib_documents
from .manifest import DOC_HASHES_NAME, MANIFEST_NAME, recommended_bigram_vocab_size, write_manifest
from .shards import BOS_ID, shard_name, write_shard
from .tokenizer import SPM_SETTINGS, train_tokenizer

__all__ = ["BuildError", "BuiltDataset", "build_dataset", "doc_hash", "doc_key", "read_text_documents",
           "stdlib_documents"]

DEFAULT_SEED = 1337  # the official export's shuffle seed
DEFAULT_SHARD_TOKENS = 10**8
VAL_FRACTION = 0.1
_ENCODE_BATCH = 1024
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class BuildError(ValueError):
    """The inputs cannot make a dataset (too few documents, bad name ...); one-line message with the fix."""


@dataclass(frozen=True)
class BuiltDataset:
    """What ``build_dataset`` wrote. Token counts include one BOS per document; bytes are UTF-8 of the text."""

    dataset_dir: Path
    tokenizer_path: Path
    vocab_path: Path
    manifest_path: Path
    name: str
    vocab_size: int
    num_train_docs: int
    num_val_docs: int
    train_tokens: int
    val_tokens: int
    train_bytes: int
    val_bytes: int
    train_files: tuple[Path, ...]
    val_files: tuple[Path, ...]
    duplicates_dropped: int
    shard_tokens: int
    seed: int
    seconds: float

    @property
    def bytes_per_token(self) -> float:
        """Validation text bytes per validation token (BOS included): the tokenizer's compression."""
        return self.val_bytes / self.val_tokens


def build_dataset(
    documents: Sequence[str],
    dest: str | os.PathLike[str],
    vocab_size: int = 1024,
    name: str | None = None,
    num_val_docs: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    seed: int = DEFAULT_SEED,
    *,
    tokenizer_train_docs: int | None = None,
    source: str = "custom",
    num_threads: int | None = None,
) -> BuiltDataset:
    """Build ``<dest>/datasets/<name>/`` shards and ``<dest>/tokenizers/<stem>.model`` from ``documents``.

    Documents equal up to whitespace are kept once. ``name`` defaults to ``local_sp<V>`` (tokenizer
    ``local_<V>_bpe``). ``num_val_docs`` defaults to 10% of the unique documents (at least 1).
    ``tokenizer_train_docs`` limits how many training documents the tokenizer sees. Same inputs give
    byte-identical shards. Raises BuildError or TokenizerError.
    """
    start = time.perf_counter()
    name, tok_stem = _names(name, vocab_size)
    if shard_tokens < 1:
        raise BuildError(f"shard_tokens must be >= 1, got {shard_tokens}")
    docs, dropped = _unique_documents(documents)
    n_val = _val_count(len(docs), num_val_docs)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    val_docs = [docs[i] for i in order[:n_val]]
    train_docs = [docs[i] for i in order[n_val:]]

    root = Path(dest)
    dataset_dir = root / "datasets" / name
    model_path = root / "tokenizers" / f"{tok_stem}.model"
    tok_docs = train_docs if tokenizer_train_docs is None else train_docs[:tokenizer_train_docs]
    sp = train_tokenizer(tok_docs, vocab_size, model_path, num_threads=num_threads)

    dataset_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*dataset_dir.glob("fineweb_*.bin"), dataset_dir / MANIFEST_NAME, dataset_dir / DOC_HASHES_NAME]:
        stale.unlink(missing_ok=True)
    threads = num_threads or os.cpu_count() or 1
    val = _write_split(sp, val_docs, dataset_dir, "val", shard_tokens, threads)
    train = _write_split(sp, train_docs, dataset_dir, "train", shard_tokens, threads)
    (dataset_dir / DOC_HASHES_NAME).write_text(json.dumps(
        {"algorithm": "sha256 of the UTF-8 text with whitespace runs collapsed to one space, first 16 hex digits",
         "val": val.hashes, "train": train.hashes}
    ) + "\n", encoding="utf-8")

    built = BuiltDataset(
        dataset_dir=dataset_dir, tokenizer_path=model_path, vocab_path=model_path.with_suffix(".vocab"),
        manifest_path=dataset_dir / MANIFEST_NAME, name=name, vocab_size=vocab_size,
        num_train_docs=len(train_docs), num_val_docs=len(val_docs), train_tokens=train.tokens, val_tokens=val.tokens,
        train_bytes=train.bytes, val_bytes=val.bytes, train_files=tuple(train.files), val_files=tuple(val.files),
        duplicates_dropped=dropped, shard_tokens=shard_tokens, seed=seed, seconds=0.0,
    )
    write_manifest(built.manifest_path, _manifest(built, tok_stem, val, train, source, len(tok_docs), root))
    return replace(built, seconds=time.perf_counter() - start)


def _names(name: str | None, vocab_size: int) -> tuple[str, str]:
    if name is None:
        return f"local_sp{vocab_size}", f"local_{vocab_size}_bpe"
    if not _NAME_RE.fullmatch(name):
        raise BuildError(f"dataset name {name!r} must be a plain folder name (letters, digits, '.', '_', '-')")
    base = name.removesuffix(f"_sp{vocab_size}") or name
    return name, f"{base}_{vocab_size}_bpe"


def _unique_documents(documents: Iterable[str]) -> tuple[list[str], int]:
    kept: dict[str, str] = {}
    total = 0
    for doc in documents:
        if not isinstance(doc, str):
            raise BuildError(f"documents must be strings, got {type(doc).__name__}")
        if doc.strip():
            total += 1
            kept.setdefault(doc_key(doc), doc)
    # Duplicates would put the same text on both sides of the train/val split.
    return list(kept.values()), total - len(kept)


def doc_key(text: str) -> str:
    """A document's identity for de-duplication and audits: its text with whitespace runs collapsed.

    The tokenizer's normalization collapses whitespace too, so texts equal under this key encode alike.
    """
    return " ".join(text.split())


def doc_hash(text: str) -> str:
    """The audit hash of a document (``doc_hashes.json``): sha256 of ``doc_key(text)``, first 16 hex digits."""
    return hashlib.sha256(doc_key(text).encode("utf-8")).hexdigest()[:16]


def _val_count(n_docs: int, num_val_docs: int | None) -> int:
    if n_docs < 2:
        raise BuildError(f"need at least 2 distinct non-empty documents, got {n_docs}; pass more text")
    n_val = max(1, round(VAL_FRACTION * n_docs)) if num_val_docs is None else num_val_docs
    if not 1 <= n_val < n_docs:
        raise BuildError(f"num_val_docs must be in 1..{n_docs - 1} for {n_docs} documents, got {n_val}")
    return n_val


@dataclass
class _Split:
    files: list[Path]
    tokens: int
    bytes: int
    hashes: list[str]
    sha256: str


def _write_split(sp: Any, docs: list[str], folder: Path, split: str, shard_tokens: int, threads: int) -> _Split:
    out = _Split(files=[], tokens=0, bytes=0, hashes=[], sha256="")
    digest = hashlib.sha256()
    pending: list[np.ndarray] = []
    fill = 0

    def flush() -> None:
        nonlocal fill
        if fill:
            out.files.append(write_shard(folder / shard_name(split, len(out.files)), np.concatenate(pending)))
            pending.clear()
            fill = 0

    for lo in range(0, len(docs), _ENCODE_BATCH):
        batch = docs[lo : lo + _ENCODE_BATCH]
        for text, ids in zip(batch, sp.encode(batch, out_type=int, num_threads=threads), strict=True):
            raw = text.encode("utf-8")
            digest.update(len(raw).to_bytes(8, "little") + raw)
            out.hashes.append(doc_hash(text))
            out.bytes += len(raw)
            toks = np.array([BOS_ID, *ids], dtype=np.uint16)
            out.tokens += toks.size
            pos = 0
            while pos < toks.size:  # documents straddle shard boundaries, as in the official export
                take = min(shard_tokens - fill, toks.size - pos)
                pending.append(toks[pos : pos + take])
                fill += take
                pos += take
                if fill == shard_tokens:
                    flush()
    flush()
    out.sha256 = digest.hexdigest()
    return out


def _manifest(b: BuiltDataset, tok_stem: str, val: _Split, train: _Split, source: str, tok_docs: int,
              root: Path) -> dict[str, Any]:
    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    tok_name = tok_stem
    spec = {"name": tok_name, "kind": "sentencepiece_bpe", "vocab_size": b.vocab_size,
            "trainer": {**SPM_SETTINGS, "vocab_size": b.vocab_size}, "trained_on": "train", "train_docs": tok_docs}
    bigram = recommended_bigram_vocab_size(b.vocab_size)
    return {
        "version": "local",
        "num_docs": b.num_val_docs + b.num_train_docs,
        "num_val_docs": b.num_val_docs,
        "shuffle_seed": b.seed,
        "shard_size": b.shard_tokens,
        "append_eos": False,
        "docs_meta": {
            "source": source,
            "python": sys.version.split()[0],
            "duplicates_dropped": b.duplicates_dropped,
            "bytes_val": b.val_bytes,
            "bytes_train": b.train_bytes,
            "docs_sha256_val": val.sha256,
            "docs_sha256_train": train.sha256,
            "docs_sha256_rule": "sha256 over the documents in shard order, each as 8-byte LE length + UTF-8 text",
            "doc_hashes": DOC_HASHES_NAME,
        },
        "tokenizer_specs": [spec],
        "tokenizers": [{
            "name": tok_name, "kind": "sentencepiece_bpe", "vocab_size": b.vocab_size, "bos_id": BOS_ID, "eos_id": 2,
            "recommended_bigram_vocab_size": bigram, "source_spec": spec,
            "model_path": rel(b.tokenizer_path), "vocab_path": rel(b.vocab_path),
            "model_sha256": hashlib.sha256(b.tokenizer_path.read_bytes()).hexdigest(),
        }],
        "datasets": [{
            "name": b.name, "tokenizer_name": tok_name, "tokenizer_kind": "sentencepiece_bpe",
            "path": rel(b.dataset_dir), "train_glob": rel(b.dataset_dir / "fineweb_train_*.bin"),
            "val_glob": rel(b.dataset_dir / "fineweb_val_*.bin"), "vocab_size": b.vocab_size, "bos_id": BOS_ID,
            "eos_id": 2, "recommended_bigram_vocab_size": bigram,
            "stats": {
                "docs_total": b.num_val_docs + b.num_train_docs, "docs_val": b.num_val_docs,
                "docs_train": b.num_train_docs, "files_total": len(b.val_files) + len(b.train_files),
                "files_val": len(b.val_files), "files_train": len(b.train_files),
                "tokens_total": b.val_tokens + b.train_tokens, "tokens_val": b.val_tokens,
                "tokens_train": b.train_tokens,
            },
        }],
    }
