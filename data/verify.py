"""Check a dataset folder the way a trainer will read it: every shard, the split layout and the vocabulary."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .manifest import DOC_HASHES_NAME, ManifestEntry, manifest_for
from .shards import BOS_ID, ShardError, read_header, read_shard, shard_name

SHARD_RE = re.compile(r"fineweb_(train|val)_(\d{6})\.bin")
_VOCAB_IN_NAME = re.compile(r"_sp(\d+)$")


@dataclass(frozen=True)
class ShardReport:
    """One shard: its tokens, documents (BOS count) and largest id (None when only the header was read)."""

    path: Path
    split: str
    index: int
    tokens: int
    docs: int | None
    max_id: int | None


@dataclass(frozen=True)
class DatasetReport:
    """A verified dataset folder: the vocabulary checked against, where it came from, and every shard."""

    dataset_dir: Path
    vocab_size: int | None
    vocab_source: str  # "argument", "manifest", "tokenizer", "folder name" or "none"
    val: tuple[ShardReport, ...]
    train: tuple[ShardReport, ...]
    tokenizer_path: Path | None = None  # the tokenizer the manifest names, checked when deep

    @property
    def val_tokens(self) -> int:
        return sum(s.tokens for s in self.val)

    @property
    def train_tokens(self) -> int:
        return sum(s.tokens for s in self.train)

    @property
    def val_docs(self) -> int | None:
        return _sum_docs(self.val)

    @property
    def train_docs(self) -> int | None:
        return _sum_docs(self.train)


def _sum_docs(shards: tuple[ShardReport, ...]) -> int | None:
    docs = [s.docs for s in shards]
    return None if any(d is None for d in docs) else sum(d for d in docs if d is not None)


def verify_dataset(
    dataset_dir: str | os.PathLike[str],
    vocab_size: int | None = None,
    *,
    deep: bool = True,
    require_train: bool = True,
) -> DatasetReport:
    """Verify every ``fineweb_{val,train}_NNNNNN.bin`` in ``dataset_dir``; raise ShardError on the first fault.

    Checks headers and sizes, contiguous numbering, that val (and, with ``require_train``, train) shards
    exist, the manifest's counts, and the doc-hash audit file when present. ``deep`` also reads the tokens:
    every id below the vocabulary size (argument, else manifest, else tokenizer, else ``_sp<V>`` in the
    folder name) and BOS at the start of each split.
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise ShardError(folder, "no such dataset folder", "run `pgolf data fetch` or `pgolf data build` first")
    entry = manifest_for(folder)
    vocab, source = _vocab(folder, vocab_size, entry)
    shards = {"val": _split_files(folder, "val"), "train": _split_files(folder, "train")}
    if not shards["val"]:
        raise ShardError(folder / shard_name("val", 0), "no validation shard in the dataset folder")
    if require_train and not shards["train"]:
        raise ShardError(folder / shard_name("train", 0), "no training shard in the dataset folder")
    reports = {split: tuple(_check_shard(p, split, i, vocab, deep) for i, p in enumerate(paths))
               for split, paths in shards.items()}
    tokenizer = entry.tokenizer_model() if entry is not None else None
    report = DatasetReport(folder, vocab, source, reports["val"], reports["train"], tokenizer)
    if entry is not None:
        _check_manifest(report, entry)
    if deep and tokenizer is not None and tokenizer.suffix == ".model":
        _check_tokenizer(tokenizer, vocab)
    _check_doc_hashes(folder)
    return report


def _vocab(folder: Path, vocab_size: int | None, entry: ManifestEntry | None) -> tuple[int | None, str]:
    if vocab_size is not None:
        return vocab_size, "argument"
    if entry is not None and entry.dataset.get("vocab_size"):
        return int(entry.dataset["vocab_size"]), "manifest"
    model = entry.tokenizer_model() if entry is not None else None
    if model is not None and model.suffix == ".model" and model.is_file():
        from .tokenizer import load_tokenizer

        return load_tokenizer(model).get_piece_size(), "tokenizer"
    match = _VOCAB_IN_NAME.search(folder.name)
    if match:
        return int(match.group(1)), "folder name"
    return None, "none"


def _split_files(folder: Path, split: str) -> list[Path]:
    found = {int(m.group(2)): p for p in folder.iterdir() if (m := SHARD_RE.fullmatch(p.name)) and m.group(1) == split}
    for i in range(len(found)):
        if i not in found:
            present = ", ".join(found[k].name for k in sorted(found)[:3])
            raise ShardError(folder / shard_name(split, i), f"missing, yet later {split} shards exist ({present} ...)")
    return [found[i] for i in range(len(found))]


def _check_shard(path: Path, split: str, index: int, vocab: int | None, deep: bool) -> ShardReport:
    count = read_header(path)
    if not deep:
        return ShardReport(path, split, index, count, None, None)
    tokens = read_shard(path)
    max_id = int(tokens.max()) if count else None
    if vocab is not None and max_id is not None and max_id >= vocab:
        pos = int(np.argmax(tokens >= vocab))
        raise ShardError(path, f"token id {int(tokens[pos])} at position {pos} is >= vocab size {vocab}",
                         "the shard belongs to a larger vocabulary or is corrupt: check --vocab-size, rebuild or "
                         "re-fetch")
    if index == 0 and count and int(tokens[0]) != BOS_ID:
        raise ShardError(path, f"first token is {int(tokens[0])}, not BOS ({BOS_ID}): documents must start with BOS",
                         "rebuild with `pgolf data build` (every document is written as [BOS] + ids)")
    docs = int(np.count_nonzero(tokens == BOS_ID))
    return ShardReport(path, split, index, count, docs, max_id)


def _check_manifest(report: DatasetReport, entry: ManifestEntry) -> None:
    stats = entry.stats
    fix = f"the shards do not match {entry.path}: re-fetch or rebuild the dataset"
    if "files_val" in stats and len(report.val) != int(stats["files_val"]):
        raise ShardError(report.dataset_dir, f"{len(report.val)} val shards, manifest lists {stats['files_val']}", fix)
    if "tokens_val" in stats and report.val_tokens != int(stats["tokens_val"]):
        raise ShardError(report.dataset_dir, f"{report.val_tokens} val tokens, manifest lists {stats['tokens_val']}",
                         fix)
    if "files_train" in stats:
        listed = int(stats["files_train"])
        # A local build has all its train shards; an official download holds a prefix of them.
        if len(report.train) > listed or (entry.local and len(report.train) != listed):
            raise ShardError(report.dataset_dir, f"{len(report.train)} train shards, manifest lists {listed}", fix)
    if entry.local and "tokens_train" in stats and report.train_tokens != int(stats["tokens_train"]):
        raise ShardError(report.dataset_dir,
                         f"{report.train_tokens} train tokens, manifest lists {stats['tokens_train']}", fix)


def _check_tokenizer(path: Path, vocab: int | None) -> None:
    from .tokenizer import TokenizerError, check_tokenizer, load_tokenizer

    try:
        check_tokenizer(load_tokenizer(path), vocab, name=str(path))
    except TokenizerError as e:
        fault = str(e).removeprefix(f"{path}: ")
        raise ShardError(path, fault, "re-fetch or rebuild the tokenizer with the dataset") from None


def _check_doc_hashes(folder: Path) -> None:
    path = folder / DOC_HASHES_NAME
    if not path.is_file():
        return
    try:
        hashes = json.loads(path.read_text(encoding="utf-8"))
        shared = set(hashes["val"]) & set(hashes["train"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ShardError(path, "unreadable doc-hash file", "rebuild with `pgolf data build`") from None
    if shared:
        raise ShardError(path, f"{len(shared)} validation documents also appear in the training split",
                         "rebuild: train/val must be disjoint")
