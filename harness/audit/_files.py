"""Reading a folder's files without raising: text, train_gpt.py, JSON; problems come back as findings."""

from __future__ import annotations

import json
from pathlib import Path

from harness.audit._findings import ERROR, WARNING, Finding


def read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None), or (None, the error) when the file cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace"), None
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def load_source(folder: Path) -> tuple[str | None, list[Finding]]:
    """A folder's train_gpt.py as UTF-8 text; None with an error finding when missing or unreadable."""
    script = folder / "train_gpt.py"
    if not script.is_file():
        return None, [
            Finding("missing_train_gpt", ERROR, "train_gpt.py is missing; the record must run from its folder")
        ]
    try:
        return script.read_bytes().decode("utf-8"), []
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Finding("unreadable_train_gpt", ERROR, f"cannot read train_gpt.py as UTF-8 ({exc})",
                              file="train_gpt.py")]  # fmt: skip


def load_json(path: Path, missing: Finding | None) -> tuple[object, list[Finding]]:
    """(value, findings) for an optional/required JSON file; value is None when absent or invalid."""
    if not path.is_file():
        return None, [missing] if missing else []
    text, err = read_text(path)
    code = path.stem + "_json_invalid"
    if text is None:
        return None, [Finding(code, ERROR if missing else WARNING, err or "unreadable", file=path.name)]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [Finding(code, ERROR if missing else WARNING, f"not valid JSON ({exc.msg})", file=path.name)]
