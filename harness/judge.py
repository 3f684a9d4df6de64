"""Statistics for promotion: one-sided Welch t-test, the keep/discard verdict, rank correlations.

Conventions (every caller relies on them):

* Losses are per-seed final ``val_loss`` values in nats (the challenge's margin is in nats);
  lower is better.
* ``WelchResult.mean_delta`` is the tested *improvement*: ``mean(reference) - mean(candidate)``
  (positive = candidate better). H1 is ``mean_delta > margin``.
* ``Judgement.delta_nats`` / ``delta_bpb`` follow the leaderboard's sign:
  ``mean(candidate) - mean(reference)`` (negative = candidate better), like
  ``delta_vs_leaderboard_nats`` in record submissions. ``Judgement.improvement_nats`` is its negation.
* A p-value of NaN (too few seeds, no variance at all) never promotes; ``note``/``reason`` say why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "Judgement",
    "RankCorrelation",
    "Verdict",
    "WelchResult",
    "judge",
    "rank_correlation",
    "welch_one_sided",
]


@dataclass(frozen=True)
class WelchResult:
    """One-sided Welch test of H1: mean(reference) - mean(candidate) > margin."""

    t: float
    df: float
    p: float
    mean_delta: float  # mean(reference) - mean(candidate); positive = candidate better
    std_candidate: float  # sample std (ddof=1); nan when n < 2
    std_reference: float
    n_candidate: int
    n_reference: int
    margin: float = 0.0
    note: str = ""  # why p is nan, or other caveats; "" when the test ran normally

    @property
    def mean_candidate_minus_reference(self) -> float:
        return -self.mean_delta

    def to_dict(self) -> dict:
        return asdict(self)


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of numbers")
    return arr


def _sample_std(arr: np.ndarray) -> float:
    return float(np.std(arr, ddof=1)) if arr.size >= 2 else math.nan


def welch_one_sided(candidate: Sequence[float], reference: Sequence[float], margin: float = 0.0) -> WelchResult:
    """Welch's unequal-variance t-test, one-sided, that the candidate beats the reference by > margin.

    Equivalent to ``ttest_ind(reference - margin, candidate, equal_var=False, alternative="greater")``.
    With n < 2 on either side, or no variance on both sides, the test is undefined: t, df and p are
    NaN and ``note`` explains. Non-finite inputs raise ``ValueError`` (a crashed seed is the caller's
    verdict to make, see ``judge``).
    """
    cand = _as_array(candidate, "candidate")
    ref = _as_array(reference, "reference")
    if not (np.all(np.isfinite(cand)) and np.all(np.isfinite(ref))):
        raise ValueError("welch_one_sided: losses must be finite (filter crashed seeds first)")
    n_c, n_r = int(cand.size), int(ref.size)
    mean_delta = float(ref.mean() - cand.mean()) if n_c and n_r else math.nan
    std_c, std_r = _sample_std(cand), _sample_std(ref)

    def undefined(note: str) -> WelchResult:
        return WelchResult(math.nan, math.nan, math.nan, mean_delta, std_c, std_r, n_c, n_r, margin, note)

    if n_c < 2 or n_r < 2:
        return undefined(f"need >= 2 values per side for a variance estimate (candidate n={n_c}, reference n={n_r})")
    if std_c == 0.0 and std_r == 0.0:
        return undefined("both samples have zero variance: the t statistic is undefined")

    # ttest_ind_from_stats is the same Welch test as ttest_ind(ref - margin, cand, equal_var=False,
    # alternative="greater") at ~1/50 of the cost (the null-rate simulation calls this thousands of times).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind_from_stats(
            float(ref.mean()) - margin,
            std_r,
            n_r,
            float(cand.mean()),
            std_c,
            n_c,
            equal_var=False,
            alternative="greater",
        )
    t = float(res.statistic)
    p = float(res.pvalue)
    vc, vr = std_c**2 / n_c, std_r**2 / n_r  # Welch-Satterthwaite degrees of freedom
    df = (vc + vr) ** 2 / (vc**2 / (n_c - 1) + vr**2 / (n_r - 1))
    return WelchResult(t, df, p, mean_delta, std_c, std_r, n_c, n_r, margin, "")


class Verdict(StrEnum):
    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"
    MORE_SEEDS = "more_seeds"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str  # one line, for logs and the dashboard
    welch: WelchResult | None  # None when the test was not run (crash, too few seeds)
    delta_nats: float  # mean(candidate) - mean(reference) val_loss; negative = better; nan if unknown
    delta_bpb: float | None = None  # same sign convention, when bpb values were given
    margin_nats: float = 0.005
    alpha: float = 0.01

    @property
    def promoted(self) -> bool:
        return self.verdict is Verdict.KEEP

    @property
    def improvement_nats(self) -> float:
        return -self.delta_nats

    @property
    def p_value(self) -> float:
        return self.welch.p if self.welch is not None else math.nan

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "delta_nats": self.delta_nats,
            "delta_bpb": self.delta_bpb,
            "margin_nats": self.margin_nats,
            "alpha": self.alpha,
            "welch": self.welch.to_dict() if self.welch is not None else None,
        }


def _mean_diff(candidate: Sequence[float] | None, reference: Sequence[float] | None) -> float | None:
    if candidate is None or reference is None:
        return None
    c = _as_array(candidate, "candidate_bpb")
    r = _as_array(reference, "reference_bpb")
    if not c.size or not r.size or not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        return None
    return float(c.mean() - r.mean())


def judge(
    candidate_losses: Sequence[float | None],
    reference_losses: Sequence[float],
    margin_nats: float = 0.005,
    alpha: float = 0.01,
    min_seeds: int = 3,
    *,
    candidate_bpb: Sequence[float] | None = None,
    reference_bpb: Sequence[float] | None = None,
) -> Judgement:
    """Decide a candidate from its seeds' val_loss (nats) against the reference seeds.

    * ``crash``: some candidate seed has no finite loss (None, NaN or inf).
    * ``more_seeds``: fewer than ``min_seeds`` candidate or reference seeds.
    * ``keep``: mean improvement >= ``margin_nats`` AND one-sided Welch p < ``alpha`` for
      improvement > ``margin_nats``.
    * ``discard``: everything else, including an undefined test (p is NaN).

    A promising but insignificant candidate is discarded, not sent back for more seeds: adding
    seeds until p dips under alpha is optional stopping and inflates false promotions.
    """
    cand_raw = list(candidate_losses)
    bad = [v for v in cand_raw if v is None or not math.isfinite(float(v))]
    if bad:
        return Judgement(
            Verdict.CRASH,
            f"{len(bad)} of {len(cand_raw)} candidate seed(s) produced no finite val_loss",
            None,
            math.nan,
            None,
            margin_nats,
            alpha,
        )
    cand = [float(v) for v in cand_raw]
    ref = [float(v) for v in reference_losses]
    if any(not math.isfinite(v) for v in ref):
        raise ValueError("judge: reference losses must be finite; rerun the reference seeds")
    delta = float(np.mean(cand) - np.mean(ref)) if cand and ref else math.nan
    delta_bpb = _mean_diff(candidate_bpb, reference_bpb)

    def verdict(v: Verdict, reason: str, welch: WelchResult | None) -> Judgement:
        return Judgement(v, reason, welch, delta, delta_bpb, margin_nats, alpha)

    if len(cand) < min_seeds or len(ref) < min_seeds:
        return verdict(
            Verdict.MORE_SEEDS,
            f"need >= {min_seeds} seeds per side (candidate {len(cand)}, reference {len(ref)})",
            None,
        )
    welch = welch_one_sided(cand, ref, margin_nats)
    improvement = -delta
    if math.isnan(welch.p):
        return verdict(Verdict.DISCARD, f"test undefined: {welch.note}", welch)
    if improvement >= margin_nats and welch.p < alpha:
        return verdict(
            Verdict.KEEP,
            f"improves val_loss by {improvement:.5f} nats >= margin {margin_nats:g} "
            f"(Welch t={welch.t:.3f}, df={welch.df:.2f}, p={welch.p:.2e} < {alpha:g})",
            welch,
        )
    if improvement < margin_nats:
        why = f"mean improvement {improvement:.5f} nats is below the margin {margin_nats:g}"
    else:
        why = f"improvement {improvement:.5f} nats is not significant (p={welch.p:.3g} >= {alpha:g})"
    return verdict(Verdict.DISCARD, why + f" (n={len(cand)} vs {len(ref)})", welch)


class RankCorrelation(NamedTuple):
    rho: float  # Spearman
    tau: float  # Kendall tau-b
    n: int  # pairs used (pairs with a missing or non-finite value are dropped)


def rank_correlation(xs: Sequence[float | None], ys: Sequence[float | None]) -> RankCorrelation:
    """Spearman rho and Kendall tau between two rungs' scores of the same candidates.

    ``xs[i]`` and ``ys[i]`` are the same candidate's scores at two rungs. Pairs where either side is
    missing or non-finite are dropped. Fewer than 3 pairs, or a constant side, give NaN (no ranking
    information), never an exception.
    """
    xs, ys = list(xs), list(ys)
    if len(xs) != len(ys):
        raise ValueError(f"rank_correlation: {len(xs)} xs vs {len(ys)} ys")
    pairs = [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=True)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
    ]
    n = len(pairs)
    if n < 3:
        return RankCorrelation(math.nan, math.nan, n)
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    if np.all(a == a[0]) or np.all(b == b[0]):
        return RankCorrelation(math.nan, math.nan, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(stats.spearmanr(a, b).statistic)
        tau = float(stats.kendalltau(a, b).statistic)
    return RankCorrelation(rho, tau, n)
