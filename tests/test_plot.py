"""pgolf plot: three PNGs from a filled store, an empty one, and the Pareto front."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from harness import plot
from harness.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from test_dash import fill_fixture  # noqa: E402

NAMES = ["best_over_time.png", "bpb_vs_bytes.png", "rung_agreement.png"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture()
def filled(tmp_path) -> Path:
    w = Store(tmp_path / "runs" / "fixture")
    fill_fixture(w)
    w.close()
    return tmp_path / "runs" / "fixture"


def test_writes_three_pngs(filled, tmp_path):
    store = Store(filled, readonly=True)
    paths = plot.write_plots(store, tmp_path / "out")
    assert [p.name for p in paths] == NAMES
    for p in paths:
        w, h = png_size(p)
        assert w > 400 and h > 300 and p.stat().st_size > 10_000


def test_cli_defaults_to_the_search_folder(filled, capsys):
    from harness.cli import main

    assert main(["plot", str(filled.parent)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(filled / "plots" / n) for n in NAMES]
    assert all((filled / "plots" / n).is_file() for n in NAMES)


def test_empty_store_still_plots(tmp_path):
    s = Store(tmp_path / "empty")
    paths = plot.write_plots(s, tmp_path / "out")
    assert all(png_size(p)[0] > 0 for p in paths)


def test_gpu_store_uses_gpu_hours(tmp_path):
    from harness.dash import fill_demo

    s = Store(tmp_path / "demo")
    fill_demo(s, n_candidates=25)
    paths = plot.write_plots(s, tmp_path / "out")
    assert len(paths) == 3 and all(p.stat().st_size > 10_000 for p in paths)


def test_pareto_front():
    pts = [(300, 1.5), (200, 1.6), (250, 1.55), (260, 1.7), (400, 1.4), (100, 2.0), (150, 2.1)]
    assert plot.pareto_front(pts) == [(100, 2.0), (200, 1.6), (250, 1.55), (300, 1.5), (400, 1.4)]
    assert plot.pareto_front([]) == []
