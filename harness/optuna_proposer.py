"""Optuna as a proposer: ask/tell from the single driver, studies stored in the run store's database.

One trial per Optuna candidate. In-run validation reports land at step `rung_index * RUNG_STEP +
training step` and the rung's final score at the last step of the rung's range, so
TPE ranks a candidate stopped at a low rung by how far it got, and the pruner can stop a run whose
validation curve trails the median. The byte cap is a constraint (Trial.set_constraint), or, in
Pareto mode, bytes are a second objective.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna

from harness.proposals import Proposal, SearchView

RUNG_STEP = 10_000_000  # step offset per rung: rung r's reports live in [r*RUNG_STEP, (r+1)*RUNG_STEP)
optuna.logging.set_verbosity(logging.WARNING)


def open_study(db_path: Path, name: str, seed: int, pareto: bool = False) -> optuna.Study:
    """The search's study in the run store's SQLite file (optuna-dashboard sqlite:///<db> opens it)."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{db_path}", engine_kwargs={"connect_args": {"timeout": 30}})
    if pareto:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                   directions=["minimize", "minimize"], load_if_exists=True)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=4)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                               direction="minimize", load_if_exists=True)


class OptunaProposer:
    """Samples numeric knobs; builds on the best structural patch so far (agents propose structure)."""

    name = "optuna"

    def __init__(self, study: optuna.Study, space, byte_cap: int):
        self.study = study
        self.space = space  # search_space.SearchSpace: sample(trial) -> env overrides
        self.byte_cap = byte_cap
        self.pareto = len(study.directions) > 1
        self._trials: dict[int, optuna.trial.Trial] = {}
        self._reported: set[tuple[int, int]] = set()  # progress arrives every tick; Optuna takes a step once

    # --- Proposer protocol ----------------------------------------------------------------
    def propose(self, view: SearchView, n: int) -> list[Proposal]:
        base = next((c for c in view.leaderboard if c.patch), None)
        out = []
        for _ in range(n):
            trial = self.study.ask()
            self._trials[trial.number] = trial
            env = self.space.sample(trial)
            if base is not None:
                trial.set_user_attr("base_candidate", base.candidate_id)
            out.append(Proposal(
                patch=base.patch if base else "", env=env, proposer=self.name, trial_number=trial.number,
                parents=(base.candidate_id,) if base else (), techniques=base.techniques if base else (),
                rationale="Optuna TPE sample of the numeric knobs"
                + (f" on top of {base.candidate_id}" if base else " on the baseline"),
            ))
        return out

    def observe(self, candidate_id: str, proposal: Proposal, val_bpb: float | None, status: str) -> None:
        """Not used: the loop calls report()/finish() with the rung structure Optuna needs."""

    # --- multi-fidelity reports -----------------------------------------------------------
    def _trial(self, number: int) -> optuna.trial.Trial | None:
        if number in self._trials:
            return self._trials[number]
        frozen = next((t for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                       if t.number == number), None)
        if frozen is None:
            return None
        # A restarted driver re-attaches to the trial it asked for before it died.
        self._trials[number] = optuna.trial.Trial(self.study, frozen._trial_id)
        return self._trials[number]

    def report(self, number: int, rung_index: int, step: int | None, val_bpb: float) -> bool:
        """Report an in-run value at a training step, or the rung's final score (step None); True when the
        pruner says this run should stop. A step-0 value is the untrained model's: every trial has the same
        one, so it is not reported (a pruner comparing them would stop runs on float noise)."""
        trial = self._trial(number)
        if step == 0:
            return False
        key = (number, rung_index * RUNG_STEP + (RUNG_STEP - 1 if step is None else step))
        if trial is None or self.pareto or not math.isfinite(val_bpb) or key in self._reported:
            return False
        self._reported.add(key)
        trial.report(val_bpb, key[1])
        return bool(trial.should_prune())

    def finish(self, number: int, val_bpb: float | None, bytes_total: int | None, completed: bool) -> None:
        """Tell the outcome: COMPLETE at the top rung, PRUNED when stopped lower, FAIL when it never scored."""
        if self._trial(number) is None:
            return
        trial = self._trials.pop(number)
        if bytes_total is not None:
            trial.set_constraint("bytes_over_cap", float(bytes_total - self.byte_cap))
        state = optuna.trial.TrialState
        if completed and val_bpb is not None and math.isfinite(val_bpb):
            values = [val_bpb, float(bytes_total or 0)] if self.pareto else val_bpb
            self.study.tell(trial, values)
        elif val_bpb is not None or bytes_total is not None:
            self.study.tell(trial, state=state.PRUNED)
        else:
            self.study.tell(trial, state=state.FAIL)

    def fail_orphans(self, known_numbers: set[int]) -> int:
        """Trials asked by a driver that died before storing their candidate: close them as FAIL."""
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.number not in known_numbers:
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                n += 1
        return n
