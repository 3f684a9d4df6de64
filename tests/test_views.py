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


def test_rung_agreement_is_undefined_when_one_rung_ties_every_candidate(tmp_path, recwarn):
    store = Store(tmp_path / "s")
    scores = {"a": (2.1, 1.9), "b": (2.2, 1.9), "c": (2.3, 1.9), "d": (2.4, 1.8)}
    for cid, (screen, full) in scores.items():
        store.add_candidate({"id": cid, "baseline_hash": "b0", "track": "t", "patch": "", "patch_hash": cid,
                             "proposer": "optuna"})
        for rung, i, bpb in (("screen", 0, screen), ("full", 1, full)):
            store.enqueue_run(f"{cid}-{rung}", cid, rung, i, 1337, 0)
            store.finish_run(f"{cid}-{rung}", {"status": "ok", "val_bpb": bpb})
    [agree] = views.rung_agreement(store, ["screen", "full"])
    assert agree["n"] == 4 and agree["spearman"] == pytest.approx(-0.7746, abs=1e-4)  # d: worst screen, best full
    store.finish_run("d-full", {"status": "ok", "val_bpb": 1.9})  # now the full rung ties them all
    [agree] = views.rung_agreement(store, ["screen", "full"])
    assert agree["n"] == 4 and agree["spearman"] != agree["spearman"]  # NaN: no ranking to agree on
    assert not recwarn.list  # and no scipy warning about a constant input
