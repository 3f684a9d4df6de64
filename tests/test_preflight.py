"""Pre-flight on the real baseline and catalog: what is refused before any training time."""

from __future__ import annotations

from harness.config import load_track
from harness.preflight import Preflight
from search_space.techniques import load_catalog, merged_cost
from trainer import BASELINE_PATH

BASELINE = BASELINE_PATH.read_text()


def test_a_techniques_declared_cost_reaches_the_size_check():
    """The estimator reads shapes from env knobs only: a patch's new table (bigram_hash adds 4096 x 128) is seen
    through the technique's declared cost, so on the 400 kB smoke track it is refused before any training."""
    smoke = load_track("cpu-smoke")
    technique = next(t for t in load_catalog() if t.name == "bigram_hash")
    preflight = Preflight(BASELINE, dict(smoke.env), smoke.byte_cap)
    blind = preflight.check(technique.patch, {})
    assert blind.ok
    seen = preflight.check(technique.patch, {}, merged_cost([technique]))
    assert not seen.ok and seen.stage == "size" and seen.estimated_bytes > smoke.byte_cap > blind.estimated_bytes
