"""Drive `pgolf dash` in a real terminal (tmux) as a person would: start it, watch it update, resize, quit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rich.cells import cell_len

from harness.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from test_dash import CAT, OPT, fill_fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux); "
                                                      "the in-process render tests still cover the dashboard")


class Pane:
    """A tmux server of our own (its own socket), one window running a command."""

    def __init__(self, command: str, width: int, height: int):
        self.sock = f"pgolf-test-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
        self.tmux("new-session", "-d", "-s", "dash", "-x", str(width), "-y", str(height), command, env=env)

    def tmux(self, *args: str, env: dict | None = None) -> str:
        return subprocess.run([TMUX, "-L", self.sock, *args], capture_output=True, text=True, check=True,
                              env=env, timeout=20).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "dash")

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.screen()
            if needle in text:
                return text
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} never appeared on screen; last screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.sock, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture()
def store_dir(tmp_path):
    w = Store(tmp_path / "search")
    fill_fixture(w)
    w.close()
    return tmp_path / "search"


def test_dash_in_tmux_updates_resizes_and_quits(store_dir):
    cmd = f"{sys.executable} -m harness.dash {store_dir} --interval 0.5; echo DASH-EXITED-$?; sleep 60"
    pane = Pane(cmd, 100, 30)
    try:
        text = pane.wait_for("leaderboard")
        text = pane.wait_for("20/40")  # the whole first frame is drawn
        lines = text.splitlines()
        assert max(cell_len(x) for x in lines) <= 100 and len(lines) <= 30
        assert "pgolf dash" in lines[0] and "fixture" in lines[0]
        for needle in ("ccat0000", "1.5500", "running 1", "30s/5m00s", "recent failures", "shape mismatch"):
            assert needle in text, needle

        writer = Store(store_dir)
        writer.update_progress(f"{OPT}-full-s1337", {"step": 35, "total": 40, "val_bpb": 1.6543, "elapsed_s": 52.0})
        text = pane.wait_for("35/40")  # a progress report shows up on the next refresh
        assert "1.6543" in text
        writer.finish_run(f"{OPT}-full-s1337", {"status": "ok", "val_bpb": 1.5012, "val_loss": 2.55,
                                                "bytes_total": 250_000})
        text = pane.wait_for("no runs in flight")  # a finished run leaves the running panel ...
        board = [x for x in text.splitlines() if "copt0000" in x and "1.5012" in x]
        assert board and board[0].split("│")[1].split()[0] == "1"  # ... and tops the leaderboard
        assert CAT[:8] in text
        writer.close()

        pane.tmux("resize-window", "-t", "dash", "-x", "80", "-y", "24")
        end = time.monotonic() + 20
        while time.monotonic() < end:
            lines = pane.screen().splitlines()
            if "n@rung" in "\n".join(lines):  # the compact leaderboard of a narrow terminal
                break
            time.sleep(0.2)
        assert "n@rung" in "\n".join(lines) and max(cell_len(x) for x in lines) <= 80

        pane.tmux("send-keys", "-t", "dash", "q")
        text = pane.wait_for("DASH-EXITED-0")
        assert "leaderboard" not in text  # the alternate screen is gone: the shell is back as it was
    finally:
        pane.close()
