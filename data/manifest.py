"""The dataset manifest (``manifest.json``) in the official exporter's shape, and lookups into it.

Official data: one ``<root>/manifest.json`` lists every tokenizer and dataset. A local build writes the same
shape, holding one tokenizer and one dataset, into its dataset folder. In both, paths are relative to the data
root (``<root>/datasets/<name>`` is a dataset folder, ``<root>/tokenizers/`` holds the tokenizers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST_NAME = "manifest.json"
DOC_HASHES_NAME = "doc_hashes.json"  # a local build's per-document hashes, for train/val audits


@dataclass(frozen=True)
class ManifestEntry:
    """A dataset folder's manifest: where it was read, the data root, and the dataset and tokenizer entries."""

    path: Path
    root: Path
    dataset: dict[str, Any]
    tokenizer: dict[str, Any] | None
    local: bool  # True: a local build's manifest inside the dataset folder; False: the official root manifest

    @property
    def stats(self) -> dict[str, Any]:
        return self.dataset.get("stats") or {}

    def tokenizer_model(self) -> Path | None:
        """The tokenizer model (or JSON) file named by the manifest, as a local path, if any."""
        if not self.tokenizer:
            return None
        rel = self.tokenizer.get("model_path") or self.tokenizer.get("path")
        return self.root / safe_relpath(rel, self.path) if rel else None


def recommended_bigram_vocab_size(vocab_size: int) -> int:
    """The exporter's hint for hashed-bigram tables: ceil(V / 128) * 128 * 5."""
    return ((vocab_size + 127) // 128) * 128 * 5


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest file; bad JSON or a non-object raises ValueError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it and fetch or build again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: manifest must be a JSON object; delete it and fetch or build again")
    return data


def find_entry(manifest: dict[str, Any], key: str, name: str, where: str) -> dict[str, Any]:
    """The entry called ``name`` in ``manifest[key]`` ('datasets' or 'tokenizers'); ValueError lists the others."""
    entries = [e for e in manifest.get(key) or [] if isinstance(e, dict)]
    for entry in entries:
        if entry.get("name") == name:
            return entry
    names = ", ".join(sorted(str(e.get("name")) for e in entries)) or "none"
    raise ValueError(f"{where}: no {key[:-1]} named {name!r} (available: {names})")


def tokenizer_artifacts(entry: dict[str, Any]) -> list[str]:
    """Files a tokenizer entry names (``model_path``, ``vocab_path`` or ``path``), relative to the data root."""
    found = [str(entry[k]) for k in ("model_path", "vocab_path", "path") if entry.get(k)]
    if not found:
        raise ValueError(f"tokenizer {entry.get('name')!r} names no files (model_path, vocab_path or path)")
    return found


def safe_relpath(rel: str, where: str | os.PathLike[str]) -> PurePosixPath:
    """``rel`` as a relative path that stays under the data root; ValueError otherwise."""
    path = PurePosixPath(str(rel).replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"{where}: path {rel!r} must be relative to the data root, without '..'")
    return path


def manifest_for(dataset_dir: str | os.PathLike[str]) -> ManifestEntry | None:
    """The manifest describing ``dataset_dir``: its own ``manifest.json`` (local build) or the root one."""
    dataset_dir = Path(dataset_dir)
    root = dataset_dir.parent.parent
    for path, local in ((dataset_dir / MANIFEST_NAME, True), (root / MANIFEST_NAME, False)):
        if not path.is_file():
            continue
        manifest = load_manifest(path)
        try:
            dataset = find_entry(manifest, "datasets", dataset_dir.name, str(path))
        except ValueError:
            if local:
                raise
            continue
        tok_name = dataset.get("tokenizer_name")
        tokenizer = next((t for t in manifest.get("tokenizers") or [] if t.get("name") == tok_name), None)
        return ManifestEntry(path=path, root=root, dataset=dataset, tokenizer=tokenizer, local=local)
    return None


def write_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as indented JSON, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
