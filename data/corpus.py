"""Documents to build a dataset from: the built-in standard-library corpus, or the user's own text files."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import os
import re
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

# Folders of the standard library that hold tests, test data or third-party packages, not library docs.
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# Statement-like nodes whose bodies may hold more definitions (`if`, `try`/`except`, `with`, `match` ...).
_CONTAINERS = (ast.stmt, ast.excepthandler, ast.match_case)
# Modules whose live docstrings stand in when the install ships no .py sources (rare: zipped or stripped stdlib).
_FALLBACK_MODULES = (
    "builtins", "os", "re", "json", "math", "string", "collections", "itertools", "functools", "pathlib",
    "typing", "argparse", "logging", "inspect", "textwrap", "datetime", "random", "statistics", "decimal",
    "fractions", "heapq", "bisect", "array", "struct", "codecs", "io", "shutil", "tempfile", "glob", "fnmatch",
    "csv", "configparser", "hashlib", "hmac", "secrets", "zlib", "gzip", "tarfile", "zipfile", "sqlite3",
    "threading", "queue", "subprocess", "socket", "selectors", "email", "urllib.parse", "http.client",
    "html", "xml.etree.ElementTree", "unittest", "doctest", "pdb", "timeit", "traceback", "warnings",
    "contextlib", "abc", "dataclasses", "enum", "copy", "pickle", "shelve", "difflib", "pprint", "operator",
)
TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".rst", ".jsonl"})


def stdlib_documents(limit: int | None = None) -> list[str]:
    """Docstrings of the Python standard library: real English prose, offline, deterministic, de-duplicated.

    Module, class and function docstrings (``ast.get_docstring``, cleaned) of every ``.py`` file under the
    stdlib path, test folders skipped, files in sorted path order and docstrings in source order; docstrings
    equal up to whitespace are kept once. ``limit`` keeps the first N. The result depends on the Python version only.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    docs = _stdlib_docstrings()
    return list(docs if limit is None else docs[:limit])


@functools.cache
def _stdlib_docstrings() -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = _dedupe(doc for path in _stdlib_sources(root) for doc in _file_docstrings(path))
    if len(docs) < 100:  # a stdlib without sources: fall back to the docstrings of importable modules
        docs = _dedupe([*docs, *_live_docstrings(_FALLBACK_MODULES)])
    return tuple(docs)


def _stdlib_sources(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        files.extend(Path(folder) / n for n in sorted(names) if n.endswith(".py"))
    return files


def _file_docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        return
    stack: list[ast.AST] = [tree]
    while stack:  # depth first, in source order
        node = stack.pop()
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node)
            if doc and doc.strip():
                yield doc
        stack.extend(reversed([c for c in ast.iter_child_nodes(node) if isinstance(c, _CONTAINERS)]))


def _live_docstrings(module_names: Iterable[str]) -> Iterator[str]:
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        yield from filter(None, [inspect.getdoc(module)])
        for _, member in sorted(vars(module).items()):
            if inspect.isclass(member) or inspect.isroutine(member):
                doc = inspect.getdoc(member)
                if doc and doc.strip():
                    yield doc


def _dedupe(docs: Iterable[str]) -> list[str]:
    kept: dict[str, str] = {}
    for doc in docs:
        kept.setdefault(" ".join(doc.split()), doc)  # equal up to whitespace = the same document
    return list(kept.values())


def read_text_documents(paths: Iterable[str | os.PathLike[str]], *, paragraphs: bool = False) -> list[str]:
    """Read documents from text files, in the order given (folders: their text files, sorted, recursively).

    ``.jsonl``: one JSON object per line with a ``"text"`` field, one document per line (the official
    ``docs_selected.jsonl`` format). Any other file: one document per file, or with ``paragraphs=True`` one
    document per block of text separated by blank lines. Whitespace-only documents are skipped.
    """
    docs: list[str] = []
    for path in _expand(paths):
        if path.suffix == ".jsonl":
            docs.extend(_jsonl_texts(path))
            continue
        text = _read_utf8(path)
        blocks = re.split(r"\n[ \t\r\f\v]*\n", text) if paragraphs else [text]
        docs.extend(b.strip() for b in blocks if b.strip())
    return docs


def _expand(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
            yield from found
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or folder; pass existing text files to --text")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); convert it to UTF-8 first") from None


def _jsonl_texts(path: Path) -> Iterator[str]:
    for lineno, line in enumerate(_read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg}); each line must be an object") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ValueError(f'{path}:{lineno}: no string "text" field; each line must be {{"text": "..."}}')
        if text.strip():
            yield text
