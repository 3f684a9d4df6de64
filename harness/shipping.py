"""Bring a run folder home from a worker node that does not share the driver's disk.

On one machine, or on a cluster with a shared filesystem (NFS, a mounted bucket), the slot writes
the run folder where the driver will read it: zero copies. Otherwise the slot runs the trainer in
a node-local scratch folder, packs what the runner left (tar; the scratch caches home/ and tmp/
are already gone) and returns the bytes with the outcome through Ray's object store (an artifact
is ~16 MB at full scale). The driver unpacks into the run folder atomically before it writes the
store row, so the store never points at a half-written folder.

Sharing is detected, not assumed: the driver writes a nonce file next to the run folders; a slot
that reads the same nonce at the same path shares the driver's disk. `PGOLF_NO_SHARED_FS=1` in a
node's environment (set when `ray start` launches it) forces shipping: a slow network filesystem,
and the tests, which run every "node" on one real disk. `PGOLF_SCRATCH` names the node-local
scratch root (default: the system temp folder).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tarfile
import tempfile
from pathlib import Path

NONCE_NAME = ".pgolf-shared-fs"
NO_SHARED_FS_ENV = "PGOLF_NO_SHARED_FS"
SCRATCH_ENV = "PGOLF_SCRATCH"
MAX_SHIP_BYTES = 1 << 30  # a candidate may write junk into its folder: past this, files stay behind (noted)
_SKIP_DIRS = {"home", "tmp"}  # compile caches: big and worthless at home
_FIRST = {"outcome.json", "result.json", "train.log", "final_model.int8.ptz", "train_gpt.py", "patch.diff", "env.json",
          "logs", "rescore", "harness_error.txt"}  # what the driver, audit and export read


def write_nonce(folder: Path) -> str:
    """The driver's side: a fresh nonce in `folder` (created). A slot that reads it shares this disk."""
    folder.mkdir(parents=True, exist_ok=True)
    nonce = secrets.token_hex(16)
    tmp = folder / f"{NONCE_NAME}.{os.getpid()}.tmp"
    tmp.write_text(nonce)
    os.replace(tmp, folder / NONCE_NAME)  # atomic: a slot never reads half a nonce
    return nonce


def sees_driver_disk(folder: Path, nonce: str) -> bool:
    """The slot's side: does this node see the driver's `folder` (the same nonce at the same path)?"""
    if os.environ.get(NO_SHARED_FS_ENV, "") not in ("", "0"):
        return False
    try:
        return (folder / NONCE_NAME).read_text() == nonce
    except OSError:
        return False


def scratch_dir(run_id: str) -> Path:
    """A fresh node-local folder for one run (an older one of the same run is removed)."""
    root = Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "pgolf-runs")
    d = root / run_id
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def pack(folder: Path, limit: int = MAX_SHIP_BYTES) -> tuple[bytes, list[str]]:
    """Tar the run folder (regular files only). Returns (bytes, paths left behind).

    The files the harness judges by go first, so a candidate that fills its folder with junk loses the
    junk, never its artifact or its log."""
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = Path(dirpath).relative_to(folder)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        files += [((rel_dir / n).as_posix(), Path(dirpath) / n) for n in filenames]
    files.sort(key=lambda f: (f[0].split("/")[0] not in _FIRST, f[0]))
    buf = io.BytesIO()
    left: list[str] = []
    total = 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel, p in files:
            if p.is_symlink() or not p.is_file():  # a candidate's link could point anywhere on the node
                left.append(rel)
                continue
            size = p.stat().st_size
            if total + size > limit:
                left.append(rel)
                continue
            total += size
            tar.add(p, arcname=rel, recursive=False)
    return buf.getvalue(), left


def unpack(blob: bytes, run_dir: Path) -> None:
    """The driver's side: replace `run_dir` by the shipped folder, atomically (rename)."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.incoming-", dir=run_dir.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            tar.extractall(incoming, filter="data")  # refuses absolute paths, '..' and links out of the folder
        old = None
        if run_dir.exists():
            old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(run_dir, old)
        os.replace(incoming, run_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
