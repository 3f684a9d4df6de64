"""The fault matrix at the search level, part 3: the disk under runs/ fills up.

`pgolf search` runs with its store on a small tmpfs (a private mount namespace: `unshare -m` as
root, `unshare -rm` otherwise). Once a run has finished and others are in flight, a ballast file
fills the tmpfs. The driver must stop with ONE clear line naming the folder and what to do; after
the ballast is deleted, the same command finishes the search with nothing lost or run twice.
"""

from __future__ import annotations

import pytest
from faulty_trainers import scenarios


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    r = scenarios.disk_full(tmp_path_factory.mktemp("disk"))
    if r is None:
        pytest.skip("no private mount namespace here (unshare -m / -rm refused): cannot mount a small tmpfs")
    return r


def test_a_full_disk_stops_the_driver_with_one_clear_line(report):
    first = report["first"]
    assert report.get("ballast_bytes", 0) > 0, "the search never had a run finished and another in flight"
    assert first["rc"] == 2, first["stdout"][-3000:] + first["stderr"][-3000:]
    errors = [ln for ln in first["stderr"].splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, first["stderr"]
    assert "disk full under " in errors[0] and "free space or move --store" in errors[0]
    assert "/store/runs/disk" in errors[0]
    assert "Traceback" not in first["stderr"]


def test_after_freeing_space_the_same_command_resumes_and_loses_nothing(report):
    second = report["second"]
    assert second["rc"] == 0, second["stdout"][-3000:] + second["stderr"][-3000:]
    assert report["in_flight_after"] == 0
    before, after = report["after_first"], report["after_second"]
    for run_id, row in before.items():
        assert after[run_id] == row, f"{run_id} changed: {row} -> {after[run_id]}"
    assert len(after) == 3  # the baseline and two candidates
    assert all(row[0] == "ok" for row in after.values()), after
    assert all(n == 1 for *_, n in report["triples"])
    # the run that hit the full disk was not blamed on its candidate: it was requeued and ran again
    reasons = [r for _, r in report["requeued"]]
    assert all("disk full" in r for r in reasons)
