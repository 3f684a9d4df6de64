"""The challenge's shard format: a 1024-byte header of 256 little-endian int32, then uint16 tokens.

Header: ``[0]`` magic 20240520, ``[1]`` version 1, ``[2]`` token count, the rest zero. The file size is
exactly ``1024 + 2 * count`` bytes. Readers (the official ``load_data_shard`` included) reject anything else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2
MAX_TOKENS = 2**31 - 1
MAX_VOCAB = 2**16
BOS_ID = 1

_FIX = "delete it and re-run `pgolf data fetch` (official data) or `pgolf data build` (local data)"


class ShardError(ValueError):
    """A shard (or a dataset folder) is malformed; the message is one line: file, fault, fix."""

    def __init__(self, path: str | os.PathLike[str], fault: str, fix: str = _FIX) -> None:
        self.path = Path(path)
        self.fault = fault
        self.fix = fix
        super().__init__(f"{self.path}: {fault}; {fix}")


def write_shard(path: str | os.PathLike[str], tokens: Sequence[int] | np.ndarray) -> Path:
    """Write ``tokens`` as one shard at ``path`` atomically (temporary file, then rename); return the path."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size > MAX_TOKENS:
        raise ValueError(f"{arr.size} tokens do not fit one shard (max {MAX_TOKENS})")
    if arr.size and arr.dtype != np.uint16:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= MAX_VOCAB:
            raise ValueError(f"token ids must lie in [0, {MAX_VOCAB}), got min {lo} max {hi}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(arr.astype("<u2", copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: str | os.PathLike[str]) -> int:
    """Check a shard's header and file size; return its token count. Raises ShardError."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(path, "no such shard file")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(path, f"file is {size} bytes, shorter than the {HEADER_BYTES}-byte header (truncated)")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    if int(header[0]) != MAGIC:
        raise ShardError(path, f"bad magic {int(header[0])} (expected {MAGIC}): not a shard or corrupted header")
    if int(header[1]) != VERSION:
        raise ShardError(path, f"unsupported version {int(header[1])} (expected {VERSION})")
    count = int(header[2])
    if count < 0:
        raise ShardError(path, f"negative token count {count} in header")
    if np.any(header[3:]):
        raise ShardError(path, "header words 3..255 are not zero (corrupted header)")
    expected = HEADER_BYTES + TOKEN_BYTES * count
    if size != expected:
        what = "truncated" if size < expected else "trailing bytes"
        fault = f"file is {size} bytes but its header declares {count} tokens = {expected} bytes ({what})"
        raise ShardError(path, fault)
    return count


def read_shard(path: str | os.PathLike[str]) -> np.ndarray:
    """Return a shard's tokens as a read-only uint16 array (memory-mapped). Raises ShardError."""
    count = read_header(path)
    if count == 0:
        return np.empty(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def shard_name(split: str, index: int) -> str:
    """The official file name of shard ``index`` of ``split`` ('train' or 'val')."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return f"fineweb_{split}_{index:06d}.bin"
