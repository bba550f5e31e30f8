"""Per-seed BC capabilities at their costs -> the imitation frontier and its inverse; the equivalents of BC+RL
points mapped through it and through its bootstrap refits, as gains with percentile CIs and censoring.

Arrays only (numpy, and scipy's isotonic regression): the tables that feed it and collect its rows are in
tables.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean (25% trimmed mean, cut as scipy.stats.trim_mean cuts), rliable's IQM, along `axis`."""
    x = np.asarray(x, dtype=np.float64)
    x = x if axis in (-1, x.ndim - 1) else np.moveaxis(x, axis, -1)
    cut = int(0.25 * x.shape[-1])
    return np.asarray(np.sort(x, axis=-1)[..., cut : x.shape[-1] - cut].mean(axis=-1))


@dataclass(frozen=True)
class Frontier:
    """A monotone fit of capability against cost, piecewise linear in log10(cost), defined on its range only."""

    log_cost: np.ndarray  # (n,) log10 of each distinct cost, strictly increasing
    score: np.ndarray  # (n,) fitted capability, nondecreasing
    measured: np.ndarray  # (n,) each cost's capability before the fit (`fit_frontier`'s step 1)

    def __call__(self, cost: np.ndarray | float) -> np.ndarray:
        """P_BC(cost); NaN outside the fitted range."""
        x = np.log10(np.asarray(cost, dtype=np.float64))
        y = np.interp(x, self.log_cost, self.score)
        return np.where((x < self.log_cost[0]) | (x > self.log_cost[-1]), np.nan, y)

    def inverse(self, score: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(cost, censor): the least cost whose fitted capability reaches `score`.

        1. Up to the fit's best: the fit's inverse (linear in log-cost; a plateau maps to its start).
        2. Above the fit's best, where some cost's `measured` capability reached `score` (the isotonic fit
           pools a dip at the top, so its best can lie below a capability that was measured): finite, the
           cheapest cost that measured at least `score`, or the cost where the fit reaches its best if that is
           larger. The second clause keeps the inverse nondecreasing in `score` (a cheap cost that measured
           high inside a pooled stretch would otherwise map a higher score below a lower one).
        3. Above every measured capability: censored, +1, and cost is a lower bound (the largest cost).
           Below the fit's lowest: censored, -1, an upper bound (the smallest cost). 0 otherwise.
        """
        p = np.atleast_1d(np.asarray(score, dtype=np.float64))
        return _inverse(self.log_cost, self.score, self.measured, p)


def _inverse(x: np.ndarray, y: np.ndarray, measured: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frontier.inverse for many fits at once: x (n,) log costs, y and measured (..., n) broadcast against p (...)."""
    y = np.broadcast_to(y, (*p.shape, len(x)))
    reached = np.broadcast_to(measured, y.shape) >= p[..., None] - _TOL
    over = p > y[..., -1] + _TOL  # above the fit's best
    above, below = over & ~reached.any(axis=-1), p < y[..., 0] - _TOL
    if len(x) == 1:
        out = np.full(p.shape, x[0])
    else:
        # 1. The first fitted point at or above p, and the one before it (so y[j-1] < p <= y[j]).
        j = np.clip(np.sum(y < p[..., None] - _TOL, axis=-1), 1, len(x) - 1)
        y0 = np.take_along_axis(y, j[..., None] - 1, axis=-1)[..., 0]
        y1 = np.take_along_axis(y, j[..., None], axis=-1)[..., 0]
        # 2. Linear interpolation in log-cost between them; a score at a plateau's height maps to its start.
        frac = np.divide(p - y0, y1 - y0, out=np.ones_like(p), where=y1 > y0)
        out = x[j - 1] + np.clip(frac, 0.0, 1.0) * (x[j] - x[j - 1])
        out = np.where(p <= y[..., 0] + _TOL, x[0], out)
    # 3. Above the fit but measured somewhere: the cheapest cost that measured p, not before the fit's best.
    fit_top = np.argmax(y >= y[..., -1:] - _TOL, axis=-1)
    out = np.where(over, x[np.maximum(np.argmax(reached, axis=-1), fit_top)], out)
    # 4. Outside what was measured: the bound, flagged.
    out = np.where(above, x[-1], np.where(below, x[0], out))
    return 10.0**out, np.where(above, 1, np.where(below, -1, 0))


_TOL = 1e-12


def fit_frontier(cost: np.ndarray, scores: Sequence[np.ndarray] | np.ndarray) -> Frontier:
    """Fit P_BC from the per-seed capabilities of BC configurations (`scores[i]`, in seed order) at `cost[i]`.

    A bare number in `scores` is a configuration with a single seed.

    1. At each distinct cost, the capability that cost buys: the best configuration there, chosen on some
       seeds and scored on the others (`_choose_and_score`), so that the seeds' luck that made a
       configuration look best does not also score it (which would bias the frontier up and CEG down).
       At a cost with a single configuration nothing is chosen: its IQM over all seeds.
    2. Weighted isotonic regression (pool adjacent violators) in order of increasing cost; the weight of a
       cost is the number of seeds that scored it.
    """
    samples = [np.atleast_1d(np.asarray(s, dtype=np.float64))[None, :] for s in scores]
    levels, value, weight = _cross_fitted(np.asarray(cost, dtype=np.float64), samples)
    return Frontier(log_cost=np.log10(levels), score=_isotonic(value, weight)[0], measured=value[0])


def _isotonic(value: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted isotonic regression of every row of `value` (rows x costs) over increasing cost."""
    return np.stack([isotonic_regression(v, weights=w, increasing=True).x for v, w in zip(value, weight, strict=True)])


def _cross_fitted(cost: np.ndarray, samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(levels, value, weight): distinct costs and, per row of the samples, each cost's capability and weight.

    `samples[i]` holds configuration i's scores, (rows, seeds) in seed order: rows are the data as measured
    and bootstrap resamples of it; value and weight are (rows, levels).
    """
    if np.any(cost <= 0) or not np.all(np.isfinite(cost)):
        raise ValueError(f"frontier costs must be positive and finite, got {cost}")
    levels, level_of = np.unique(cost, return_inverse=True)
    value = np.empty((samples[0].shape[0], len(levels)))
    weight = np.empty_like(value)
    for j in range(len(levels)):
        value[:, j], weight[:, j] = _choose_and_score([samples[i] for i in np.flatnonzero(level_of == j)])
    return levels, value, weight


def _choose_and_score(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(value, weight) per row: the capability one cost buys, from its configurations' (rows, seeds) scores.

    1. A single configuration: its IQM over all its seeds (weight: its seeds).
    2. Several (two-fold cross-fitting): the even-position seeds choose the configuration with the best IQM
       on them, and the odd ones do the same; the value is the IQM over the pooled seeds of the other half
       of each chosen configuration (weight: the pooled count). When both halves choose the same
       configuration, that is its IQM over all its seeds.
    3. A configuration with one seed cannot be scored on seeds that did not choose it: it is left out when
       another configuration at the cost has two seeds or more; when none has, the best IQM is taken as it is
       (the selection bias that cross-fitting removes stays there).
    """
    rows = samples[0].shape[0]
    if len(samples) == 1:
        return iqm(samples[0]), np.full(rows, samples[0].shape[1], dtype=np.float64)
    usable = [s for s in samples if s.shape[1] >= 2]
    if not usable:
        return np.max(np.stack([iqm(s) for s in samples]), axis=0), np.ones(rows)
    even, odd = [s[:, 0::2] for s in usable], [s[:, 1::2] for s in usable]
    # 1. Each half's choice, per row.
    chosen_even = np.argmax(np.stack([iqm(h) for h in even]), axis=0)
    chosen_odd = np.argmax(np.stack([iqm(h) for h in odd]), axis=0)
    # 2. Each row's two choices, scored on the halves that did not make them: all rows at once where every
    #    configuration has as many seeds, else per distinct pair of choices.
    if len({s.shape[1] for s in usable}) == 1:
        at = np.arange(rows)
        pooled = np.concatenate([np.stack(odd)[chosen_even, at], np.stack(even)[chosen_odd, at]], axis=1)
        return iqm(pooled), np.full(rows, pooled.shape[1], dtype=np.float64)
    value, weight = np.empty(rows), np.empty(rows)
    for a, b in set(zip(chosen_even.tolist(), chosen_odd.tolist(), strict=True)):
        at = (chosen_even == a) & (chosen_odd == b)
        value[at] = iqm(np.concatenate([odd[a][at], even[b][at]], axis=1))
        weight[at] = odd[a].shape[1] + even[b].shape[1]
    return value, weight


def _draws(n: int, n_resamples: int, rng: np.random.Generator, halves: bool) -> np.ndarray:
    """(1 + n_resamples, n) seed positions: row 0 the seeds as measured, then bootstrap resamples.

    With `halves`, seeds are resampled within each cross-fitting half (even and odd positions), so that a
    resample never puts one seed in both halves (which would let the seeds that choose a configuration score it).
    """
    draw = np.tile(np.arange(n), (n_resamples + 1, 1))
    for half in (draw[0, 0::2], draw[0, 1::2]) if halves else (draw[0],):
        if half.size:
            draw[1:, half] = half[rng.integers(0, half.size, size=(n_resamples, half.size))]
    return draw


# A BC snapshot's CEG row: its gain over itself is not a result.
_START = {f"{name}{end}": np.nan for name in ("ceg", "ceg_charged", "deg") for end in ("", "_ci_low", "_ci_high")}
_START |= {"flops_eq": np.nan, "transitions_eq": np.nan, "ceg_censor": 0, "deg_censor": 0}
_START |= {f"{name}_ci_{end}_censored": False for name in ("ceg", "deg") for end in ("low", "high")}


def _equivalents(cost: np.ndarray, samples: list[np.ndarray], p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eq, censor), each (points, 1 + resamples): the points `p` mapped through the fit (column 0) and its refits.

    `samples` are the configurations' (1 + resamples, seeds) scores, `p` the points' (points, 1 + resamples).
    """
    levels, value, weight = _cross_fitted(cost, samples)
    return _inverse(np.log10(levels), _isotonic(value, weight), value, p)


def _gain(name: str, eq: np.ndarray, cost: float, confidence: float) -> dict[str, Any]:
    """`name` = equivalent / cost (`eq[0]`: the data), with the percentile CI of its resamples `eq[1:]`."""
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(eq[1:] / cost, [alpha, 1.0 - alpha])
    return {name: eq[0] / cost, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _censoring(name: str, censor: np.ndarray, confidence: float) -> dict[str, Any]:
    """The point's censoring, and whether a CI end is a bound (over (1 - confidence) / 2 resamples censored)."""
    alpha = (1.0 - confidence) / 2
    return {
        f"{name}_censor": int(censor[0]),
        f"{name}_ci_low_censored": bool(np.mean(censor[1:] < 0) > alpha),
        f"{name}_ci_high_censored": bool(np.mean(censor[1:] > 0) > alpha),
    }
