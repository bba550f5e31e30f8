"""Capability statistics across seeds: score arrays -> mean, IQM, probability of improvement, bootstrap CIs.

The statistics are rliable's (Agarwal et al. 2021). The resampling is scipy.stats.bootstrap rather than
`rliable.library.get_interval_estimates`: rliable resamples with numpy's global RNG whatever `random_state`
it is given, so its CIs are not reproducible, and it imports `arch`, whose 7.x releases break on pandas 3.
Passing each task's column as its own sample makes scipy resample runs within each task, which is
rliable's stratified bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.stats
from rliable import metrics

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
SEED = 0
"""Fixed bootstrap seed, so that rerunning an analysis gives identical CIs."""


def _as_runs_by_tasks(scores: np.ndarray) -> np.ndarray:
    """Scores as a float (n_runs, n_tasks) matrix; a 1-D array is one task."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be (n_runs,) or (n_runs, n_tasks), got shape {scores.shape}")
    return scores


def _columns(scores: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(scores[:, t] for t in range(scores.shape[1]))


def _bootstrap_ci(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    vectorized: bool,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI (rliable's default method), each sample resampled independently."""
    result = scipy.stats.bootstrap(
        samples,
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=vectorized,
        paired=False,
        batch=1000,  # bounds the memory of the pairwise comparisons in probability_of_improvement
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return np.asarray(ci.low), np.asarray(ci.high)


def _mean_and_iqm(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
    """[mean, IQM] over all runs and tasks; leading axes are bootstrap batches (scipy's vectorized form)."""
    pooled = np.stack(columns, axis=-1).reshape(*columns[0].shape[:-1], -1)
    return np.stack([pooled.mean(axis=-1), scipy.stats.trim_mean(pooled, 0.25, axis=-1)])


def _prob_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(x > y) + P(x = y) / 2 over all pairs of the last axes; leading axes are bootstrap batches."""
    diff = x[..., :, None] - y[..., None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0), axis=(-2, -1))


def aggregate(
    scores: np.ndarray,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, float]:
    """Mean and IQM of (n_runs,) or (n_runs, n_tasks) scores, each with a stratified bootstrap CI.

    Keys: mean, mean_ci_low, mean_ci_high, iqm, iqm_ci_low, iqm_ci_high, n_runs.
    """
    scores = _as_runs_by_tasks(scores)
    low, high = _bootstrap_ci(_columns(scores), _mean_and_iqm, True, n_resamples, confidence, seed)
    return {
        "mean": float(metrics.aggregate_mean(scores)),
        "mean_ci_low": float(low[0]),
        "mean_ci_high": float(high[0]),
        "iqm": float(metrics.aggregate_iqm(scores)),
        "iqm_ci_low": float(low[1]),
        "iqm_ci_high": float(high[1]),
        "n_runs": float(scores.shape[0]),
    }


def probability_of_improvement(
    x: np.ndarray,
    y: np.ndarray,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, float]:
    """P(X > Y) (ties count half, averaged over tasks) of runs x against runs y, with a bootstrap CI.

    x and y are (n_runs, n_tasks) or (n_runs,); the run counts may differ. Keys: prob, ci_low, ci_high.
    """
    x, y = _as_runs_by_tasks(x), _as_runs_by_tasks(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must cover the same tasks, got {x.shape[1]} and {y.shape[1]}")
    n_tasks = x.shape[1]

    def statistic(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
        # Vectorised twin of rliable's Mann-Whitney form (mannwhitneyu per resample is ~1 ms per task).
        pairs = zip(columns[:n_tasks], columns[n_tasks:], strict=True)
        return np.mean([_prob_greater(xc, yc) for xc, yc in pairs], axis=0)

    samples = _columns(x) + _columns(y)
    low, high = _bootstrap_ci(samples, statistic, True, n_resamples, confidence, seed)
    return {
        "prob": float(metrics.probability_of_improvement(x, y)),
        "ci_low": float(low),
        "ci_high": float(high),
    }
