"""Capability statistics against independent references: scipy's trim_mean and bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from rliable import metrics

from testbed import stats

SCORES = np.random.default_rng(0).gamma(2.0, 50.0, size=24)  # size divisible by 4: IQM is exact


def test_iqm_and_mean_match_references() -> None:
    out = stats.aggregate(SCORES, n_resamples=2000)
    assert out["iqm"] == pytest.approx(scipy.stats.trim_mean(SCORES, 0.25))
    assert out["iqm"] == pytest.approx(np.sort(SCORES)[6:18].mean())
    assert out["mean"] == pytest.approx(SCORES.mean())
    assert out["n_runs"] == 24


def test_ci_is_reproducible_contains_iqm_and_matches_scipy() -> None:
    first, second = stats.aggregate(SCORES, n_resamples=4000), stats.aggregate(SCORES, n_resamples=4000)
    assert first == second
    assert first["iqm_ci_low"] < first["iqm"] < first["iqm_ci_high"]
    assert first["mean_ci_low"] < first["mean"] < first["mean_ci_high"]
    ref = scipy.stats.bootstrap(
        (SCORES,),
        lambda x, axis: scipy.stats.trim_mean(x, 0.25, axis=axis),
        n_resamples=4000,
        method="percentile",
        rng=np.random.default_rng(123),  # a different stream: agreement is up to Monte Carlo error
    ).confidence_interval
    width = ref.high - ref.low
    assert first["iqm_ci_low"] == pytest.approx(ref.low, abs=0.1 * width)
    assert first["iqm_ci_high"] == pytest.approx(ref.high, abs=0.1 * width)


def test_multi_task_scores_are_pooled() -> None:
    scores = np.random.default_rng(1).normal(size=(8, 3))
    out = stats.aggregate(scores, n_resamples=1000)
    assert out["iqm"] == pytest.approx(scipy.stats.trim_mean(scores.ravel(), 0.25))
    assert out["iqm_ci_low"] < out["iqm"] < out["iqm_ci_high"]
    with pytest.raises(ValueError):
        stats.aggregate(np.zeros((2, 2, 2)))


def test_probability_of_improvement_extremes() -> None:
    better = stats.probability_of_improvement(SCORES + 1000.0, SCORES, n_resamples=1000)
    assert better["prob"] == 1.0 and better["ci_low"] == 1.0
    same = stats.probability_of_improvement(SCORES, SCORES, n_resamples=1000)
    assert same["prob"] == 0.5
    assert same["ci_low"] < 0.5 < same["ci_high"]
    assert same == stats.probability_of_improvement(SCORES, SCORES, n_resamples=1000)


def test_vectorised_improvement_matches_rliable() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 5, size=(7, 3)).astype(float), rng.integers(0, 5, size=(5, 3)).astype(float)
    manual = np.mean([stats._prob_greater(x[:, t], y[:, t]) for t in range(3)])  # ties count half
    assert manual == pytest.approx(metrics.probability_of_improvement(x, y))
    assert stats.probability_of_improvement(x, y, n_resamples=200)["prob"] == pytest.approx(manual)
