"""Promotion statistics: Welch one-sided test, verdicts, false-promotion rate, rank correlations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.judge import Judgement, Verdict, judge, rank_correlation, welch_one_sided

BASE = 2.0727  # baseline-like val_loss in nats
SEED_NOISE = 0.0015  # typical seed-to-seed std of val_loss on the main track


def test_welch_matches_scipy_and_direction():
    cand = [2.060, 2.062, 2.061]
    ref = [2.072, 2.073, 2.071]
    w = welch_one_sided(cand, ref)
    assert w.mean_delta == pytest.approx(np.mean(ref) - np.mean(cand))
    assert w.mean_delta > 0  # candidate better
    expected = stats.ttest_ind(ref, cand, equal_var=False, alternative="greater")
    assert w.t == pytest.approx(expected.statistic)
    assert w.p == pytest.approx(expected.pvalue)
    assert w.df == pytest.approx(4.0)  # equal n and equal variance -> 2n - 2
    assert w.n_candidate == 3 and w.n_reference == 3
    assert w.std_candidate == pytest.approx(np.std(cand, ddof=1))
    # swapping roles makes the one-sided p large
    assert welch_one_sided(ref, cand).p > 0.99


def test_welch_margin_shifts_the_null():
    cand = [2.060, 2.062, 2.061]
    ref = [2.072, 2.073, 2.071]
    assert welch_one_sided(cand, ref, margin=0.0).p < welch_one_sided(cand, ref, margin=0.005).p
    # an 11 mnat improvement is not "better by more than 20 mnats"
    assert welch_one_sided(cand, ref, margin=0.02).p > 0.5


def test_welch_degenerate_inputs_give_nan_with_reason():
    w = welch_one_sided([2.0], [2.1, 2.2, 2.15])
    assert math.isnan(w.p) and math.isnan(w.t) and "n=1" in w.note
    w = welch_one_sided([2.0, 2.0, 2.0], [2.1, 2.1, 2.1])
    assert math.isnan(w.p) and "zero variance" in w.note
    assert w.mean_delta == pytest.approx(0.1)
    # zero variance on one side only is fine for Welch
    w = welch_one_sided([2.0, 2.0, 2.0], [2.1, 2.12, 2.08])
    assert 0 < w.p < 0.05
    with pytest.raises(ValueError):
        welch_one_sided([2.0, float("nan")], [2.1, 2.2])


def test_clear_win_is_kept():
    rng = np.random.default_rng(0)
    ref = BASE + rng.normal(0, SEED_NOISE, 3)
    cand = BASE - 0.02 + rng.normal(0, SEED_NOISE, 3)
    j = judge(cand, ref)
    assert isinstance(j, Judgement)
    assert j.verdict is Verdict.KEEP and j.promoted
    assert j.delta_nats < -0.005 and j.improvement_nats > 0.005
    assert j.welch is not None and j.welch.p < 0.01
    assert "margin" in j.reason and str(j.verdict) == "keep"


def test_margin_is_honoured():
    # a very consistent 3-mnat improvement is significant at margin 0 but not a record at 5 mnats
    ref = [2.0700, 2.0701, 2.0699, 2.0700]
    cand = [2.0670, 2.0671, 2.0669, 2.0670]
    assert judge(cand, ref, margin_nats=0.0).verdict is Verdict.KEEP
    j = judge(cand, ref, margin_nats=0.005)
    assert j.verdict is Verdict.DISCARD and "below the margin" in j.reason


def test_insignificant_improvement_is_discarded_not_sent_for_more_seeds():
    ref = [2.070, 2.080, 2.060]
    cand = [2.050, 2.075, 2.040]  # mean improvement 15 mnats but very noisy
    j = judge(cand, ref)
    assert j.verdict is Verdict.DISCARD and "not significant" in j.reason


def test_too_few_seeds_ask_for_more():
    j = judge([2.0, 2.01], [2.1, 2.1, 2.1])
    assert j.verdict is Verdict.MORE_SEEDS and j.welch is None and "candidate 2" in j.reason
    j = judge([2.0, 2.01, 2.0], [2.1, 2.1])
    assert j.verdict is Verdict.MORE_SEEDS and "reference 2" in j.reason
    assert judge([], [2.1, 2.1, 2.1]).verdict is Verdict.MORE_SEEDS
    assert judge([2.0], [2.1], min_seeds=1).verdict is Verdict.DISCARD  # p undefined never keeps


def test_crash_and_undefined_test_never_promote():
    j = judge([2.0, float("nan"), 2.0], [2.1, 2.1, 2.1])
    assert j.verdict is Verdict.CRASH and "1 of 3" in j.reason
    assert judge([2.0, None, 2.0], [2.1, 2.1, 2.1]).verdict is Verdict.CRASH
    j = judge([2.0, 2.0, 2.0], [2.1, 2.1, 2.1])  # a huge win but zero variance: p is nan
    assert j.verdict is Verdict.DISCARD and "undefined" in j.reason and math.isnan(j.p_value)
    with pytest.raises(ValueError):
        judge([2.0, 2.0, 2.0], [2.1, float("inf"), 2.1])


def test_delta_bpb_reported_with_leaderboard_sign():
    j = judge([2.05, 2.051, 2.049], [2.07, 2.071, 2.069], candidate_bpb=[1.21] * 3, reference_bpb=[1.22] * 3)
    assert j.delta_bpb == pytest.approx(-0.01)
    d = j.to_dict()
    assert d["verdict"] == "keep" and d["welch"]["n_candidate"] == 3


@pytest.mark.parametrize("margin", [0.0, 0.005])
def test_null_candidates_rarely_promote(margin):
    """1,000 candidates drawn from the reference's own distribution: false promotions <= alpha."""
    rng = np.random.default_rng(1234)
    alpha = 0.01
    kept = 0
    for _ in range(1000):
        ref = BASE + rng.normal(0, SEED_NOISE, 3)
        cand = BASE + rng.normal(0, SEED_NOISE, 3)
        kept += judge(cand, ref, margin_nats=margin, alpha=alpha).verdict is Verdict.KEEP
    assert kept / 1000 <= 0.02
    if margin:
        assert kept == 0  # a 5-mnat margin is > 3 seed stds: noise never clears it


def test_power_against_a_real_margin_sized_win():
    rng = np.random.default_rng(7)
    kept = 0
    for _ in range(200):
        ref = BASE + rng.normal(0, 0.0005, 5)
        cand = BASE - 0.010 + rng.normal(0, 0.0005, 5)
        kept += judge(cand, ref).verdict is Verdict.KEEP
    assert kept >= 190


def test_rank_correlation():
    xs = [1.30, 1.25, 1.28, 1.22, 1.40]
    ys = [1.21, 1.18, 1.20, 1.15, 1.30]
    rho, tau, n = rank_correlation(xs, ys)
    assert rho == pytest.approx(1.0) and tau == pytest.approx(1.0) and n == 5
    r = rank_correlation(xs, list(reversed(sorted(ys))))
    assert r.n == 5 and -1.0 <= r.rho <= 1.0
    rho, tau, n = rank_correlation([1.0, 2.0, None, 4.0, float("nan")], [2.0, 1.0, 3.0, 0.5, 1.0])
    assert n == 3 and rho == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1.0, 2.0], [1.0, 2.0]).rho)
    assert math.isnan(rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).tau)
    with pytest.raises(ValueError):
        rank_correlation([1.0], [1.0, 2.0])
