"""Start a command in its own process group, tail its log, and kill the whole group at a deadline.

The child is watched with waitid(WNOWAIT), so it is not reaped before the last killpg: its group
id cannot be recycled and handed to an unrelated process while we may still signal it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_POLL_S = 0.1


@dataclass
class Exec:
    returncode: int | None
    killed: str | None  # None, "timeout", "cancel", "log_limit"
    wall_s: float
    spawn_error: str | None = None


class _Tail:
    """Incremental reader of a growing log file that yields complete lines."""

    def __init__(self, path: Path, chunk: int = 1 << 20):
        self.path, self.chunk, self.offset, self.buf = path, chunk, 0, b""

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self, final: bool = False) -> list[str]:
        lines: list[str] = []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while True:
                    data = f.read(self.chunk)
                    if not data:
                        break
                    self.offset += len(data)
                    parts = (self.buf + data).split(b"\n")
                    self.buf = parts.pop()
                    lines.extend(p.decode("utf-8", "replace") for p in parts)
                    if not final and len(lines) > 100_000:
                        break  # keep a poll short; the rest comes next time
        except OSError:
            return lines
        if final and self.buf:
            lines.append(self.buf.decode("utf-8", "replace"))
            self.buf = b""
        return lines


def _exited(pid: int) -> bool:
    """Has the child exited? Does not reap it (WNOWAIT), so its pgid stays reserved for killpg."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _terminate(pid: int, term_grace_s: float) -> None:
    """Ask the shim to terminate its tree; SIGKILL the whole group if it has not exited in time."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + term_grace_s + 3.0
    while time.monotonic() < deadline:
        if _exited(pid):
            return
        time.sleep(0.02)
    _killpg(pid)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def execute(cmd: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, kill_after_s: float,
             term_grace_s: float, max_log_bytes: int, cancel: threading.Event | None,
             on_line: Callable[[str], None]) -> Exec:
    start = time.monotonic()
    try:
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    except OSError as e:
        return Exec(None, None, time.monotonic() - start, spawn_error=f"{type(e).__name__}: {e}")
    tail = _Tail(log_path)
    killed = None
    try:
        while True:
            done = _exited(proc.pid)
            for line in tail.read():
                on_line(line)
            if done:
                break
            if cancel is not None and cancel.is_set():
                killed = "cancel"
            elif time.monotonic() - start > kill_after_s:
                killed = "timeout"
            elif tail.size() > max_log_bytes:
                killed = "log_limit"
            if killed:
                _terminate(proc.pid, term_grace_s)
                break
            time.sleep(_POLL_S)
    except BaseException:
        _terminate(proc.pid, term_grace_s)
        raise
    finally:
        _killpg(proc.pid)  # the leader is at most a zombie here: its pgid cannot have been reused
        proc.wait()
        wall = time.monotonic() - start
        for line in tail.read(final=True):
            on_line(line)
    return Exec(proc.returncode, killed, wall)
