"""Read-only views over the run store that the summary, CLI and dashboard print."""

from __future__ import annotations

import pytest

from harness import views
from harness.store import Store


def test_size_estimate_error_compares_each_candidates_estimate_with_its_real_export(tmp_path):
    store = Store(tmp_path / "s")
    for cid, est, real in (("a", 110_000, 100_000), ("b", 95_000, 100_000), ("c", None, 100_000)):
        store.add_candidate({"id": cid, "baseline_hash": "b0", "track": "t", "patch": "", "patch_hash": cid,
                             "proposer": "optuna", "estimated_bytes": est})
        for seed in (1337, 1):  # two runs of one candidate are one export size, counted once
            store.enqueue_run(f"{cid}-{seed}", cid, "full", 2, seed, 0)
            store.finish_run(f"{cid}-{seed}", {"status": "ok", "val_bpb": 2.0, "bytes_total": real})
    store.enqueue_run("a-screen", "a", "screen", 1, 1337, 0)
    store.finish_run("a-screen", {"status": "ok", "val_bpb": 2.0, "bytes_total": 50_000})  # another rung: ignored
    err = views.size_estimate_error(store, "full")
    assert err["n"] == 2
    assert err["mean_abs"] == pytest.approx(0.075) and err["max_abs"] == pytest.approx(0.10)
    assert err["mean"] == pytest.approx(0.025)
    assert views.size_estimate_error(store, "smoke") == {"n": 0, "mean_abs": None, "max_abs": None, "mean": None}
