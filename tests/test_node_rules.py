"""harness/node_rules.py: one GPU model per group of runs, and a cool-off for a node where a worker died.
(The same rules on a real multi-node Ray cluster: tests/test_cluster.py.)"""

from __future__ import annotations

import logging
import time

from harness.node_rules import NodeRules

MODELS = {"n1": "H100", "n2": "H100", "n3": "A100"}


def test_the_first_run_of_a_group_fixes_its_gpu_model():
    rules = NodeRules()
    holders = set(MODELS)
    assert rules.avoid("full", holders, MODELS) == set()  # nothing placed yet: anywhere
    rules.placed("full", "A100")
    assert rules.avoid("full", holders, MODELS) == {"n1", "n2"}
    rules.placed("full", "H100")  # a later run does not move the group
    assert rules.models == {"full": "A100"}
    assert rules.avoid("screen", holders, MODELS) == set()  # other groups, and runs in none, go anywhere
    assert rules.avoid(None, holders, MODELS) == set()


def test_a_node_whose_model_is_not_known_yet_is_not_avoided_and_keeps_the_group_waiting():
    rules = NodeRules()
    rules.hold("full", "H100")
    # n1 is still staging (model unknown), n3 is an A100: the group waits for n1 rather than take n3.
    assert rules.avoid("full", {"n1", "n3"}, {"n3": "A100"}) == {"n3"}
    assert rules.models == {"full": "H100"}


def test_a_group_whose_gpu_model_left_the_cluster_is_released_with_a_warning(caplog):
    rules = NodeRules()
    rules.hold("full", "H100")
    with caplog.at_level(logging.WARNING, logger="harness.node_rules"):
        assert rules.avoid("full", {"n3"}, MODELS) == set()  # only the A100 is left: it takes the run
    assert "no live node of GPU model H100" in caplog.text and "['A100']" in caplog.text
    assert rules.models == {} and rules.released == {"full": "H100"}
    rules.placed("full", "A100")  # and the group picks again
    assert rules.models == {"full": "A100"}
    assert rules.avoid("full", set(), MODELS) == set() and rules.models == {"full": "A100"}  # no holder: no release


def test_a_node_where_a_worker_died_cools_off_unless_no_other_node_can_hold_the_run():
    rules = NodeRules(cool_off_s=0.2)
    rules.worker_died("n1")
    assert rules.avoid(None, {"n1", "n2"}, MODELS) == {"n1"}
    assert rules.avoid(None, {"n1"}, MODELS) == set()  # the only node big enough: it still gets the run
    rules.hold("full", "H100")
    assert rules.avoid("full", {"n1", "n2", "n3"}, MODELS) == {"n1", "n3"}
    time.sleep(0.25)
    assert rules.avoid(None, {"n1", "n2"}, MODELS) == set()  # the cool-off is over
