"""Staging a node's data from the official source (a local Hub stand-in), without the driver's help."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_data_fetch import REPO, _fetch, hub, repo_files  # noqa: E402, F401  (fixtures used by name)

from harness.staging import DataNeed, missing, stage_here  # noqa: E402


class NoServer:
    """Streaming from the driver must not be needed when the node can fetch."""

    def __getattr__(self, name):
        raise AssertionError("the node fetched nothing and fell back to the driver's copy")


def test_a_node_fetches_the_official_dataset_itself(hub, tmp_path, monkeypatch):  # noqa: F811
    driver = _fetch(hub, tmp_path / "driver", 1)
    need = DataNeed.from_paths(str(driver.dataset_dir), str(driver.tokenizer_path))
    assert need.fetch_variant == "sp1024" and need.train_shards == 1
    node = tmp_path / "node"
    monkeypatch.setenv("PGOLF_DATA_ROOT", str(node))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", REPO)
    ans = stage_here(need, NoServer())
    assert ans["ok"], ans
    assert ans["how"] == "fetched from the official source"
    assert ans["data_path"] == str(node / "datasets" / "fineweb10B_sp1024") and missing(need, node) == []
    assert stage_here(need, NoServer())["how"] == "present"  # the second look costs a stat per file


def test_a_node_that_can_neither_fetch_nor_reach_the_driver_says_why(hub, tmp_path, monkeypatch):  # noqa: F811
    driver = _fetch(hub, tmp_path / "driver", 1)
    need = DataNeed.from_paths(str(driver.dataset_dir), str(driver.tokenizer_path))
    monkeypatch.setenv("PGOLF_DATA_ROOT", str(tmp_path / "node"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", REPO)
    ans = stage_here(need, NoServer())
    assert not ans["ok"] and ans["error"].startswith(f"data staging under {tmp_path / 'node'} failed")
    assert "(after: fetch failed (" in ans["error"]  # both ways were tried, and the reason says so
