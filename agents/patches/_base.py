"""What every patch module shares: the one file a patch may change, the errors, one-line reasons."""

from __future__ import annotations

TARGET = "train_gpt.py"  # the only file a patch may change


class PatchError(ValueError):
    """A patch or edit that cannot be used. The message is one line; `detail` may hold more."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(one_line(message))
        self.detail = detail


class PatchRejected(PatchError):
    """The patch does something no candidate may do (another path, a symlink, binary data, ...)."""


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace so a reason fits one line of a log or a table cell."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _target_ok(path: str) -> bool:
    path = path.replace("\\", "/").strip()
    return not path.startswith("/") and ".." not in path.split("/") and path.rsplit("/", 1)[-1] == TARGET
