"""Optuna as a proposer on a real SQLite storage: samples, multi-fidelity reports, pruning, constraints."""

from __future__ import annotations

import optuna
import pytest

from harness.config import Knobs, load_track
from harness.optuna_proposer import RUNG_STEP, OptunaProposer, open_study
from harness.proposals import SearchView
from search_space.knobs import SearchSpace
from trainer import BASELINE_PATH

BASELINE = BASELINE_PATH.read_text()
TRACK = load_track("cpu-smoke")


@pytest.fixture()
def proposer(tmp_path) -> OptunaProposer:
    study = open_study(tmp_path / "pgolf.db", "s", seed=0)
    knobs = Knobs(include=("MATRIX_LR",), ranges={"MATRIX_LR": {"low": 0.03, "high": 0.16, "log": True}})
    space = SearchSpace.from_config(BASELINE, knobs, base_env=TRACK.env)
    return OptunaProposer(study, space, TRACK.byte_cap)


def view() -> SearchView:
    return SearchView(BASELINE, "b0", TRACK.name, TRACK.byte_cap, None, (), (), frozenset())


def intermediate(p: OptunaProposer, number: int) -> dict[int, float]:
    return p.study.get_trials(deepcopy=False)[number].intermediate_values


def test_samples_live_in_the_run_store_file(proposer, tmp_path):
    props = proposer.propose(view(), 3)
    assert [p.trial_number for p in props] == [0, 1, 2]
    assert all(set(p.env) == {"MATRIX_LR"} and 0.03 <= float(p.env["MATRIX_LR"]) <= 0.16 for p in props)
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'pgolf.db'}")
    assert len(stored.trials) == 3


def test_the_untrained_step_is_not_reported_and_the_final_score_ends_the_rungs_range(proposer):
    (p,) = proposer.propose(view(), 1)
    assert proposer.report(p.trial_number, 2, 0, 3.81) is False  # step 0: nothing trained yet
    proposer.report(p.trial_number, 2, 20, 2.6)
    proposer.report(p.trial_number, 2, None, 2.4)  # the rung's final score does not collide with any step
    proposer.report(p.trial_number, 2, 20, 9.9)  # progress arrives every tick: a step is taken once
    assert intermediate(proposer, p.trial_number) == {2 * RUNG_STEP + 20: 2.6, 3 * RUNG_STEP - 1: 2.4}


def test_a_curve_trailing_the_median_is_pruned(proposer):
    good = proposer.propose(view(), 3)
    for i, p in enumerate(good):  # three finished trials: the pruner's startup
        proposer.report(p.trial_number, 2, 20, 2.5 + 0.01 * i)
        proposer.finish(p.trial_number, 2.4 + 0.01 * i, 100_000, completed=True)
    (late,) = proposer.propose(view(), 1)
    assert proposer.report(late.trial_number, 2, 20, 2.9) is True
    (fine,) = proposer.propose(view(), 1)
    assert proposer.report(fine.trial_number, 2, 20, 2.45) is False


def test_finish_tells_the_state_and_the_byte_constraint(proposer):
    over, stopped, failed = proposer.propose(view(), 3)
    proposer.finish(over.trial_number, 2.3, TRACK.byte_cap + 5, completed=True)
    proposer.finish(stopped.trial_number, 2.7, 100_000, completed=False)
    proposer.finish(failed.trial_number, None, None, completed=False)
    trials = proposer.study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]
    assert trials[0].value == 2.3
    constraints = {k: v for k, v in trials[0].system_attrs.items() if k.endswith("bytes_over_cap")}
    assert list(constraints.values()) == [5.0]  # > 0: infeasible for the sampler


def test_trials_of_a_dead_driver_are_closed(proposer):
    kept, orphan = proposer.propose(view(), 2)
    assert proposer.fail_orphans({kept.trial_number}) == 1
    states = {t.number: t.state for t in proposer.study.get_trials(deepcopy=False)}
    running, failed = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
    assert states == {kept.trial_number: running, orphan.trial_number: failed}
