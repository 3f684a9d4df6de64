"""Download the official data (manifest, tokenizer, val shards, first N train shards) from the Hugging Face Hub.

Remote layout (dataset repo, default ``willdepueoai/parameter-golf``): ``<remote_root>/manifest.json``,
``<remote_root>/datasets/fineweb10B_<variant>/fineweb_{val,train}_NNNNNN.bin`` and the tokenizer files the
manifest names under ``<remote_root>/``. Files land at the same relative paths under ``dest`` (the manifest at
``<dest>/manifest.json``), hard-linked from a Hugging Face cache (``<dest>/cache/huggingface`` unless given).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .manifest import MANIFEST_NAME, find_entry, load_manifest, safe_relpath, tokenizer_artifacts
from .shards import ShardError, read_header, shard_name
from .verify import DatasetReport, verify_dataset

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
REPO_ID_ENV = "MATCHED_FINEWEB_REPO_ID"
REMOTE_ROOT_ENV = "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX"
DEFAULT_REMOTE_ROOT = "datasets"


class FetchError(RuntimeError):
    """A download failed or the remote repo cannot serve the request; one-line message: cause and fix."""


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` left on disk, and which files it downloaded or found already in place."""

    dataset_dir: Path
    tokenizer_path: Path
    manifest_path: Path
    repo_id: str
    variant: str
    downloaded: tuple[str, ...]
    skipped: tuple[str, ...]
    report: DatasetReport


@dataclass(frozen=True)
class _Hub:
    repo_id: str
    remote_root: str
    endpoint: str | None
    revision: str | None
    cache_dir: Path
    token: str | bool | None

    def where(self) -> str:
        from huggingface_hub import constants

        return f"{self.repo_id} at {self.endpoint or constants.ENDPOINT}"

    def download(self, rel: str, *, force: bool = False) -> Path:
        """Fetch ``<remote_root>/<rel>`` into the cache; return the cached file."""
        from huggingface_hub import hf_hub_download

        root = self.remote_root.strip("/")
        remote = f"{root}/{rel}" if root else rel
        try:
            cached = hf_hub_download(self.repo_id, remote, repo_type="dataset", revision=self.revision,
                                     cache_dir=self.cache_dir, endpoint=self.endpoint, token=self.token,
                                     force_download=force)
        except Exception as e:  # huggingface_hub raises many types; turn each into one actionable line
            raise FetchError(_describe(e, remote, self)) from e
        return Path(cached).resolve(strict=True)


def fetch(
    variant: str = "sp1024",
    train_shards: int = 80,
    dest: str | os.PathLike[str] = Path("data"),
    repo_id: str | None = None,
    endpoint: str | None = None,
    *,
    remote_root: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> FetchResult:
    """Download dataset ``fineweb10B_<variant>``: val shards, the first ``train_shards`` train shards, tokenizer.

    ``repo_id`` defaults to ``$MATCHED_FINEWEB_REPO_ID``, then ``willdepueoai/parameter-golf``; ``endpoint``
    to the Hub (``$HF_ENDPOINT``). Files already present and valid are skipped, so an interrupted fetch
    resumes. Every shard's header and size is verified at the end. Raises FetchError, ShardError, ValueError.
    """
    if train_shards < 0:
        raise ValueError(f"train_shards must be >= 0, got {train_shards}")
    dest = Path(dest)
    hub = _Hub(
        repo_id=repo_id or os.environ.get(REPO_ID_ENV) or DEFAULT_REPO_ID,
        remote_root=(os.environ.get(REMOTE_ROOT_ENV, DEFAULT_REMOTE_ROOT) if remote_root is None else remote_root),
        endpoint=endpoint.rstrip("/") if endpoint else None,
        revision=revision,
        cache_dir=Path(cache_dir) if cache_dir is not None else dest / "cache" / "huggingface",
        token=token,
    )
    manifest_path = dest / MANIFEST_NAME
    # Always refreshed from the repo: a stale manifest from another repo would give wrong shard counts.
    _place(hub.download(MANIFEST_NAME), manifest_path)
    plan = _plan(load_manifest(manifest_path), variant, train_shards, hub, manifest_path)

    downloaded: list[str] = []
    skipped: list[str] = []
    with _progress(progress, console) as bar:
        task = bar.add_task(f"fetch {variant}", total=len(plan.files), file="")
        for rel in plan.files:
            bar.update(task, file=PurePosixPath(rel).name)
            target = dest / rel
            if _present(target):
                skipped.append(rel)
            else:
                _place(_download_checked(hub, rel), target)
                downloaded.append(rel)
            bar.advance(task)
    dataset_dir = dest / plan.dataset_rel
    report = verify_dataset(dataset_dir, deep=False, require_train=train_shards > 0)
    return FetchResult(dataset_dir=dataset_dir, tokenizer_path=dest / plan.tokenizer_rels[0],
                       manifest_path=manifest_path, repo_id=hub.repo_id, variant=variant,
                       downloaded=tuple(downloaded), skipped=tuple(skipped), report=report)


@dataclass(frozen=True)
class _Plan:
    dataset_rel: str
    tokenizer_rels: tuple[str, ...]
    files: tuple[str, ...]  # relative to the data root: val shards, the train prefix, tokenizer files


def _plan(manifest: dict[str, Any], variant: str, train_shards: int, hub: _Hub, where: Path) -> _Plan:
    name = f"fineweb10B_{variant}"
    try:
        dataset = find_entry(manifest, "datasets", name, f"{where} (from {hub.where()})")
        tokenizer = find_entry(manifest, "tokenizers", str(dataset.get("tokenizer_name")), str(where))
        stats = dataset.get("stats") or {}
        files_val, files_train = int(stats["files_val"]), int(stats["files_train"])
        dataset_rel = safe_relpath(dataset.get("path") or f"datasets/{name}", where).as_posix()
        tokenizer_rels = tuple(safe_relpath(r, where).as_posix() for r in tokenizer_artifacts(tokenizer))
    except (KeyError, TypeError, ValueError) as e:
        raise FetchError(f"{where}: cannot plan the download of {name} ({e}); check --variant and --repo-id") from None
    if train_shards > files_train:
        raise FetchError(f"{variant} has only {files_train} train shards in {hub.where()}, requested "
                         f"{train_shards}; pass --train-shards {files_train} or fewer")
    shards = [*(shard_name("val", i) for i in range(files_val)), *(shard_name("train", i) for i in range(train_shards))]
    return _Plan(dataset_rel, tokenizer_rels, (*(f"{dataset_rel}/{s}" for s in shards), *tokenizer_rels))


def _present(path: Path) -> bool:
    """Whether ``path`` is already in place and sound (a shard's header and size check out)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    if path.suffix != ".bin":
        return True
    try:
        read_header(path)
    except ShardError:
        return False
    return True


def _download_checked(hub: _Hub, rel: str) -> Path:
    """Download ``rel``; a shard that fails its header check is fetched once more, bypassing the cache."""
    cached = hub.download(rel)
    if not rel.endswith(".bin"):
        return cached
    try:
        read_header(cached)
    except ShardError:
        cached = hub.download(rel, force=True)
        try:
            read_header(cached)
        except ShardError as e:
            raise ShardError(rel, f"{e.fault}, in the copy served by {hub.where()}",
                             "the remote file is corrupt; try again later or report it to the repo's owners") from None
    return cached


def _place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically: a hard link when possible (no extra disk), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _progress(enabled: bool, console: Console | None) -> Iterator[Progress]:
    """A rich progress bar over files; the Hub's own per-file tqdm bars are muted meanwhile."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[file]}"))
    try:
        with Progress(*columns, console=console or Console(stderr=True), disable=not enabled) as bar:
            yield bar
    finally:
        if not was_disabled:
            enable_progress_bars()


def _describe(e: Exception, remote: str, hub: _Hub) -> str:
    """One line saying why downloading ``remote`` failed and what to do about it."""
    from huggingface_hub import errors

    cause = e.__cause__ if isinstance(e, errors.LocalEntryNotFoundError) and e.__cause__ else e
    detail = f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:300]
    if isinstance(e, errors.RepositoryNotFoundError):
        return (f"dataset repo {hub.where()} not found, private or gated; check --repo-id / ${REPO_ID_ENV} "
                "and your Hugging Face token")
    if isinstance(e, errors.RevisionNotFoundError):
        return f"revision {hub.revision!r} not found in {hub.where()}; check --revision"
    if isinstance(e, errors.EntryNotFoundError) and not isinstance(e, errors.LocalEntryNotFoundError):
        return (f"{remote} is not in {hub.where()}; check --variant, --repo-id and "
                f"${REMOTE_ROOT_ENV} (remote root {hub.remote_root!r})")
    if isinstance(e, errors.OfflineModeIsEnabled | errors.LocalEntryNotFoundError):
        return (f"cannot reach {hub.where()} for {remote} and it is not cached ({detail}); check the network or "
                "proxy and --endpoint / HF_ENDPOINT, or unset HF_HUB_OFFLINE")
    if isinstance(e, getattr(errors, "FileMetadataError", ())):  # newer huggingface_hub only
        return f"{hub.where()} does not answer like a Hugging Face Hub ({detail}); check --endpoint / HF_ENDPOINT"
    if isinstance(e, errors.HfHubHTTPError):
        return f"downloading {remote} from {hub.where()} failed ({detail}); retry later, or check --endpoint"
    if isinstance(e, OSError):
        return f"downloading {remote} failed ({detail}); check free disk space and permissions under {hub.cache_dir}"
    return f"downloading {remote} from {hub.where()} failed ({detail}); re-run to resume"
