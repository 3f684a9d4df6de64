"""Notice what a candidate changed outside its run folder while it ran, and undo it.

Training runs have no filesystem sandbox (the eval-only re-score does: harness/sandbox.py), so a
candidate can write wherever its user may, and on many GPU machines that user is root. What the
search must not lose is what it trusts: the harness's own code (every new Ray worker imports it
again), the search config, the baseline trainer, the track file, the Python start-up hooks
(`*.pth`, sitecustomize) that run in every process, and the run store. The driver snapshots the
files at start and the store remembers what the driver wrote (`Store.track_own_writes`); after
every finished run and every few seconds the loop calls `check()`.

A changed file cannot be told apart from a person editing the harness during a search, so the
loop reruns the runs that were in flight alone; only a run that changes them again while nothing
else runs is convicted (see `harness.loop`), and only then are the files put back (`restore`).
Store rows are put back at once: nobody but the driver writes them.
"""

from __future__ import annotations

import hashlib
import site
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CODE_SUFFIXES = (".py", ".toml", ".json", ".md", ".diff", ".txt", ".pth")
SKIP_DIRS = {"__pycache__", "datasets", "tokenizers", "cache", ".git", ".venv", "node_modules"}
STARTUP_HOOKS = ("sitecustomize.py", "usercustomize.py")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass
class Tripwire:
    """Watches `files` and every code file under `roots` (new files included), plus `*.pth` and
    sitecustomize in the interpreter's site-packages. `check()` reports what changed since the
    last check, one line each; `restore()` puts files back as they were at the start."""

    files: list[Path]
    roots: list[Path]
    site_dirs: list[Path] = field(default_factory=list)
    original: dict[Path, bytes | None] = field(default_factory=dict)  # None: did not exist
    seen: dict[Path, tuple[int, int, str | None]] = field(default_factory=dict)  # size, mtime_ns, sha256

    @classmethod
    def for_harness(cls, extra_files: Iterable[Path]) -> Tripwire:
        import agents
        import harness
        import search_space
        import trainer

        roots = [Path(m.__file__).resolve().parent for m in (harness, agents, search_space, trainer)]
        data_pkg = Path(harness.__file__).resolve().parent.parent / "data"
        files = [p for p in data_pkg.glob("*.py")] + [Path(f).resolve() for f in extra_files if f]
        site_dirs = [Path(d) for d in {*site.getsitepackages(), site.getusersitepackages(), sys.prefix}
                     if Path(d).is_dir()]
        t = cls(files=files, roots=roots, site_dirs=site_dirs)
        t.original = {p: _read(p) for p in t._paths()}
        t.seen = {p: _stat(p) for p in t.original}
        return t

    def _paths(self) -> set[Path]:
        out = {p for p in self.files}
        for root in self.roots:
            for p in _walk(root):
                out.add(p)
        for d in self.site_dirs:
            try:
                out.update(p for p in d.iterdir() if p.suffix == ".pth" or p.name in STARTUP_HOOKS)
            except OSError:
                pass
        return out

    def check(self) -> list[Path]:
        """Paths created, changed or deleted since the last check (by content; mtime only says where to look)."""
        changed = []
        for p in self._paths() | set(self.seen):
            quick = _quick(p)
            old = self.seen.get(p)
            if old is not None and quick == old[:2]:
                continue
            st = (*quick, _digest(p) if quick[0] >= 0 else None)
            if (old[2] if old is not None else None) != st[2]:
                changed.append(p)
            self.seen[p] = st
            self.original.setdefault(p, None)  # created after the start: restoring removes it
        return sorted(changed)

    def restore(self, paths: Iterable[Path]) -> list[str]:
        """Put `paths` back as they were at the start (a file created since is removed)."""
        done = []
        for p in paths:
            before = self.original.get(p)
            try:
                if before is None:
                    p.unlink(missing_ok=True)
                    done.append(f"removed {p}")
                else:
                    p.write_bytes(before)
                    done.append(f"restored {p}")
            except OSError as e:
                done.append(f"could not restore {p}: {e.strerror}")
            self.seen[p] = _stat(p)
        return done


def _read(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


def _quick(p: Path) -> tuple[int, int]:
    try:
        st = p.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _stat(p: Path) -> tuple[int, int, str | None]:
    quick = _quick(p)
    return (*quick, _digest(p) if quick[0] >= 0 else None)


def _walk(root: Path) -> Iterable[Path]:
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for e in entries:
        if e.is_dir() and not e.is_symlink():
            if e.name not in SKIP_DIRS:
                yield from _walk(e)
        elif e.suffix in CODE_SUFFIXES:
            yield e.resolve() if e.is_symlink() else e
