"""Tidy checkpoint table -> the report's tables: capability, the frontier's BC configurations and fits, CEG,
matched compute, RL from scratch, gain vs drift and per-layer drift; `analyse()` makes all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from testbed import stats
from testbed.analysis.cells import cell_points, kinds, start_and_budgets
from testbed.analysis.frontier import _START, Frontier, _censoring, _draws, _equivalents, _gain, fit_frontier, iqm
from testbed.analysis.load import Sweep

METRIC = "eval/normalized_score"  # capability: 0 random, 1 expert
CONFIDENCE = stats.CONFIDENCE
N_RESAMPLES = stats.N_RESAMPLES


# ------------------------------------------------------------------------------------------ capability


def aggregate(scores: np.ndarray) -> dict[str, float]:
    """`stats.aggregate`, or for a single seed its value with an undefined (NaN) CI."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) >= 2:
        return stats.aggregate(scores)
    value = float(scores[0]) if len(scores) else np.nan
    return {
        "mean": value,
        "mean_ci_low": np.nan,
        "mean_ci_high": np.nan,
        "iqm": value,
        "iqm_ci_low": np.nan,
        "iqm_ci_high": np.nan,
        "n_runs": float(len(scores)),
    }


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """`stats.probability_of_improvement`; the CI is NaN when either side has a single seed."""
    if len(x) >= 2 and len(y) >= 2:
        return stats.probability_of_improvement(x, y)
    return {
        "prob": float(np.mean((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :]))),
        "ci_low": np.nan,
        "ci_high": np.nan,
    }


def capability_table(points: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per cell and RL budget: seeds, IQM and mean of `metric` with bootstrap CIs, compute, raw return."""
    rows = []
    pts = cell_points(points)
    kind = kinds(pts)
    for (cell, rl_steps), g in pts.groupby(["cell", "rl_steps"], sort=False):
        first = g.iloc[0]
        rows.append(
            {
                "env": first["env"],
                "frontier": first["frontier"],
                "label": first["label"],
                "cell": cell,
                "kind": kind[cell],
                "rl_steps": rl_steps,
                "demos": first["demos"],
                "grad_steps": first["grad_steps"],
                "bc_flops": g["compute/bc/flops"].mean(),
                "rl_flops": g["compute/rl/flops"].mean(),
                "total_flops": g["compute/total/flops"].mean(),
                "demo_transitions": g["compute/bc/demo_transitions"].mean(),
                "return_mean": g["eval/return_mean"].mean(),
                "success_rate": pd.to_numeric(
                    g["eval/success_rate"], errors="coerce"
                ).mean(),  # NaN: no success defined
                **aggregate(g[metric].to_numpy()),
                "seeds": sorted(g["seed"].tolist()),
            }
        )
    return pd.DataFrame(rows).sort_values(["env", "kind", "label", "rl_steps"], ignore_index=True)


# --------------------------------------------------------------------------------------------- frontier


_CELL_COLUMNS = [
    "env",
    "frontier",
    "bc_hash",
    "label",
    "demos",
    "grad_steps",
    "bc_flops",
    "demo_transitions",
    "n_seeds",
    "score_iqm",
    "seeds",
    "scores",
]


def frontier_cells(points: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """The BC snapshots behind the frontier: one row per BC configuration (IQM over its seeds, scores in seed order)."""
    snaps = points[(points["rl_init"] == "bc") & (points["rl_steps"] == 0)].drop_duplicates(["bc_hash", "seed"])
    if snaps.empty:
        return pd.DataFrame(columns=_CELL_COLUMNS)
    snaps = snaps.assign(_config=pd.factorize(snaps["bc_hash"])[0]).sort_values(["_config", "seed"], kind="stable")
    # Each configuration is one run of rows of `snaps`, in seed order: split there (a groupby is slow on big sweeps).
    starts = np.flatnonzero(np.diff(snaps["_config"].to_numpy(), prepend=-1))
    scores = np.split(snaps[metric].to_numpy(dtype=np.float64), starts[1:])
    means = snaps.groupby("_config")[["compute/bc/flops", "compute/bc/demo_transitions"]].mean()
    cells = (
        snaps.iloc[starts][_CELL_COLUMNS[:6]]
        .reset_index(drop=True)
        .assign(
            bc_flops=means["compute/bc/flops"].to_numpy(),
            demo_transitions=means["compute/bc/demo_transitions"].to_numpy(),
            n_seeds=np.diff([*starts, len(snaps)]),
            score_iqm=[float(iqm(s)) for s in scores],
            seeds=np.split(snaps["seed"].to_numpy(), starts[1:]),
            scores=scores,
        )
    )
    return cells.sort_values(["frontier", "bc_flops", "demos"], ignore_index=True)


AXES = {"flops": "bc_flops", "transitions": "demo_transitions"}  # frontier axis -> cost column


def fit_frontiers(cells: pd.DataFrame) -> dict[tuple[str, str], Frontier]:
    """{(frontier, axis): Frontier} for every frontier group, on both axes."""
    return {
        (name, axis): fit_frontier(g[col].to_numpy(), g["scores"].to_list())
        for name, g in cells.groupby("frontier")
        for axis, col in AXES.items()
    }


# ------------------------------------------------------------------------------ compute-equivalent gain


def ceg_table(
    points: pd.DataFrame,
    metric: str = METRIC,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """Compute- and demonstration-equivalent gain of every BC+RL cell at every budget, with bootstrap CIs.

    Columns per (cell, rl_steps): capability IQM `score`; `bc_flops` C_BC, `rl_flops` C_RL, `flops_eq` C_eq;
    `ceg` = C_eq / C_BC and `ceg_charged` = C_eq / (C_BC + C_RL), each with `_ci_low`/`_ci_high`;
    `ceg_censor` +1 (C_eq is a lower bound), -1 (an upper bound) or 0, shared by both; `ceg_ci_high_censored`
    / `ceg_ci_low_censored` when more than (1 - confidence) / 2 of the resamples were censored that way, so
    that end of the CI is a bound too. The same for demonstrations: `transitions_eq`, `deg` (D_eq / D), ... .
    `start` marks the cell's BC snapshot (rl_steps = 0): a BC configuration of the frontier itself, whose
    gain would be 1 by construction, so it has its `score` and no equivalents or gains (NaN).
    """
    pts = cell_points(points)
    bc_rl = pts["cell"].map(kinds(pts)).eq("bc_rl")
    fcells = frontier_cells(pts, metric)
    rng = np.random.default_rng(seed)
    rows = []
    for name, fc in fcells.groupby("frontier", sort=False):
        targets = pts[bc_rl & (pts["frontier"] == name)]
        if not targets.empty:
            rows += _group_ceg(fc.reset_index(drop=True), targets, metric, n_resamples, confidence, rng)
    return pd.DataFrame(rows)


def _group_ceg(
    fc: pd.DataFrame, targets: pd.DataFrame, metric: str, n_resamples: int, confidence: float, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """CEG rows for the BC+RL points of one frontier group, all mapped through the same resampled fits.

    Row 0 of every array below is the data as measured, rows 1... its bootstrap resamples.
    """
    # 1. One draw of seed positions per BC configuration (resampled within its cross-fitting halves).
    draws = {h: _draws(n, n_resamples, rng, halves=True) for h, n in zip(fc["bc_hash"], fc["n_seeds"], strict=True)}
    samples = [s[draws[h]] for h, s in zip(fc["bc_hash"], fc["scores"], strict=True)]
    # 2. Each BC+RL point past its start: its seeds' IQM, resampled with its BC configuration's draw where the
    #    seeds match (which keeps each seed's BC start paired with its RL result).
    groups = list(targets.groupby(["cell", "rl_steps"], sort=False))
    gained = {i: k for k, i in enumerate(i for i, ((_, rl_steps), _) in enumerate(groups) if rl_steps > 0)}
    p = np.zeros((len(gained), n_resamples + 1))
    for i, k in gained.items():
        g = groups[i][1].sort_values("seed")
        scores, h = g[metric].to_numpy(dtype=np.float64), g["bc_hash"].iloc[0]
        shared = h in draws and np.array_equal(g["seed"].to_numpy(), fc.loc[fc["bc_hash"] == h, "seeds"].iloc[0])
        p[k] = iqm(scores[draws[h] if shared else _draws(len(scores), n_resamples, rng, halves=False)])
    # 3. Per axis: map every point through the fitted frontier and through each resample's refit.
    equivalents = {axis: _equivalents(fc[col].to_numpy(), samples, p) for axis, col in AXES.items()}
    rows = []
    for i, ((cell, rl_steps), g) in enumerate(groups):
        first = g.iloc[0]
        bc, rl = g["compute/bc/flops"].mean(), g["compute/rl/flops"].mean()
        trans = g["compute/bc/demo_transitions"].mean()
        row = {
            "env": first["env"],
            "frontier": first["frontier"],
            "label": first["label"],
            "cell": cell,
            "rl_steps": rl_steps,
            "start": rl_steps == 0,
            "n_seeds": len(g),
            "score": float(iqm(g[metric])),
            "bc_flops": bc,
            "rl_flops": rl,
            "total_flops": bc + rl,
            "demo_transitions": trans,
        }
        if rl_steps == 0:
            rows.append(row | _START)
            continue
        (flops, flops_censor), (trans_eq, trans_censor) = (
            (eq[gained[i]], censor[gained[i]]) for eq, censor in equivalents.values()
        )
        row |= {"flops_eq": flops[0], "transitions_eq": trans_eq[0]}
        row |= _gain("ceg", flops, bc, confidence) | _gain("ceg_charged", flops, bc + rl, confidence)
        row |= _censoring("ceg", flops_censor, confidence)
        row |= _gain("deg", trans_eq, trans, confidence) | _censoring("deg", trans_censor, confidence)
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------- comparisons


def matched_compute_table(points: pd.DataFrame, capability: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """At equal total FLOPs: each BC+RL point against the best BC-only policy of each demonstration count.

    For a BC+RL point that cost C_BC + C_RL, the BC side is, per demonstration count, the BC configuration
    with the highest IQM among those whose BC FLOPs do not exceed C_BC + C_RL. `prob_improvement` is
    P(BC+RL > BC) over seeds (ties half), with its bootstrap CI.
    """
    pts = cell_points(points)
    fcells = frontier_cells(pts, metric)
    rows = []
    for _, t in capability[(capability["kind"] == "bc_rl") & (capability["rl_steps"] > 0)].iterrows():
        rl_scores = _scores(pts, t["cell"], t["rl_steps"], metric)
        pool = fcells[(fcells["frontier"] == t["frontier"]) & (fcells["bc_flops"] <= t["total_flops"] * (1 + 1e-9))]
        for demos, g in pool.groupby("demos"):
            bc = g.loc[g["score_iqm"].idxmax()]
            poi = probability_of_improvement(rl_scores, bc["scores"])
            rows.append(
                {
                    "env": t["env"],
                    "label": t["label"],
                    "rl_steps": t["rl_steps"],
                    "total_flops": t["total_flops"],
                    "score": t["iqm"],
                    "score_ci_low": t["iqm_ci_low"],
                    "score_ci_high": t["iqm_ci_high"],
                    "bc_demos": demos,
                    "bc_grad_steps": bc["grad_steps"],
                    "bc_flops": bc["bc_flops"],
                    "bc_label": bc["label"],
                    "bc_score": bc["score_iqm"],
                    "difference": t["iqm"] - bc["score_iqm"],
                    "prob_improvement": poi["prob"],
                    "prob_ci_low": poi["ci_low"],
                    "prob_ci_high": poi["ci_high"],
                }
            )
    return pd.DataFrame(rows)


def _scores(pts: pd.DataFrame, cell: str, rl_steps: int, metric: str) -> np.ndarray:
    return pts.loc[(pts["cell"] == cell) & (pts["rl_steps"] == rl_steps), metric].to_numpy(dtype=np.float64)


def scratch_table(capability: pd.DataFrame) -> pd.DataFrame:
    """RL from scratch: the first budget whose IQM reaches each BC and BC+RL point of the same env.

    The budgets are the scratch runs' checkpoints, so the need lies in (previous budget, budget]; a target
    that no checkpoint reaches is "not reached within" the largest scratch budget.
    """
    rows = []
    for env, cap in capability.groupby("env", sort=False):
        scratch = cap[cap["kind"] == "scratch"]
        for _, t in cap[cap["kind"] == "bc_rl"].iterrows():
            for label, s in scratch.groupby("label", sort=False):
                s = s.sort_values("rl_steps")
                hit = s[s["iqm"] >= t["iqm"]]
                reached = not hit.empty
                first = hit.iloc[0] if reached else s.iloc[-1]
                before = s[s["rl_steps"] < first["rl_steps"]]["rl_steps"]
                rows.append(
                    {
                        "env": env,
                        "label": t["label"],
                        "rl_steps": t["rl_steps"],
                        "score": t["iqm"],
                        "total_flops": t["total_flops"],
                        "scratch_label": label,
                        "reached": reached,
                        "scratch_steps": first["rl_steps"] if reached else np.nan,
                        "scratch_steps_after": before.max() if reached and not before.empty else 0,
                        "scratch_max_steps": s["rl_steps"].max(),
                        "scratch_best_score": s["iqm"].max(),
                        "scratch_flops": first["total_flops"] if reached else np.nan,
                        "flops_ratio": first["total_flops"] / t["total_flops"] if reached else np.nan,
                    }
                )
    return pd.DataFrame(rows)


DRIFT_SUMMARY = {  # trade-off column -> checkpoint column(s) averaged over layers
    "actor_rel_change": "drift/weights/actor/rel_change",
    "all_rel_change": "drift/weights/all/rel_change",
    "cka_demo": "drift/cka/demo/",
    "cka_visited": "drift/cka/visited/",
    "kl_demo": "drift/kl/demo",
    "agreement_demo": "drift/agreement/demo",
}


def tradeoff_table(points: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per BC+RL cell and budget: capability gain over its own BC snapshot (per seed, IQM with CI) and drift.

    Drift columns are IQMs over seeds; `cka_*` first average the hidden layers; `expert_loglik_change` is the
    forgetting probe (log-likelihood of the expert's actions, now minus at the BC snapshot).
    """
    rows = []
    for cell, rl_steps, start, b in start_and_budgets(points, metric):
        b = b.set_index("seed")
        gain = (b[metric] - start.reindex(b.index)).dropna().to_numpy()
        row = {
            "env": b["env"].iloc[0],
            "label": b["label"].iloc[0],
            "cell": cell,
            "rl_steps": rl_steps,
            "n_seeds": len(b),
        }
        if len(gain):
            agg = aggregate(gain)
            row |= {"gain": agg["iqm"], "gain_ci_low": agg["iqm_ci_low"], "gain_ci_high": agg["iqm_ci_high"]}
        for name, key in DRIFT_SUMMARY.items():
            cols = [c for c in b.columns if c == key or (key.endswith("/") and c.startswith(key))]
            values = b[cols].mean(axis=1).dropna().to_numpy() if cols else np.array([])
            row[name] = float(iqm(values)) if len(values) else np.nan
        if {"drift/expert_loglik", "drift/expert_loglik_bc"} <= set(b.columns):
            row["expert_loglik_change"] = float(
                iqm((b["drift/expert_loglik"] - b["drift/expert_loglik_bc"]).dropna().to_numpy())
            )
        rows.append(row)
    return pd.DataFrame(rows)


def layer_table(layers: pd.DataFrame) -> pd.DataFrame:
    """Per cell, budget and layer: the IQM over seeds of every drift_table column."""
    if layers.empty:
        return layers
    layers = layers.drop_duplicates(["cell", "seed", "rl_steps", "layer"])
    numeric = [c for c in layers.columns if c not in ("env", "seed", "cell", "label", "rl_init", "rl_steps", "layer")]
    keys = ["env", "label", "cell", "rl_init", "rl_steps", "layer"]
    out = layers.groupby(keys, sort=False)[numeric].agg(
        lambda s: float(iqm(s.dropna().to_numpy())) if s.notna().any() else np.nan
    )
    return out.reset_index()


# ----------------------------------------------------------------------------------------------- all of it


@dataclass(frozen=True)
class Analysis:
    """Every table of a report; the frontiers keyed by (frontier group, axis)."""

    sweep: Sweep
    metric: str
    capability: pd.DataFrame
    frontier_cells: pd.DataFrame
    frontiers: dict[tuple[str, str], Frontier]
    ceg: pd.DataFrame
    matched: pd.DataFrame
    scratch: pd.DataFrame
    tradeoff: pd.DataFrame
    layers: pd.DataFrame
    n_resamples: int = N_RESAMPLES  # bootstrap resamples behind the gains' CIs


def analyse(sweep: Sweep, metric: str = METRIC, n_resamples: int = N_RESAMPLES) -> Analysis:
    """Every table the report shows, from a loaded sweep."""
    pts = sweep.points
    if pts.empty:
        empty = pd.DataFrame()
        return Analysis(sweep, metric, empty, empty, {}, empty, empty, empty, empty, empty, n_resamples)
    capability = capability_table(pts, metric)
    fcells = frontier_cells(cell_points(pts), metric)
    return Analysis(
        sweep=sweep,
        metric=metric,
        capability=capability,
        frontier_cells=fcells,
        frontiers=fit_frontiers(fcells),
        ceg=ceg_table(pts, metric, n_resamples),
        matched=matched_compute_table(pts, capability, metric),
        scratch=scratch_table(capability),
        tradeoff=tradeoff_table(pts, metric),
        layers=layer_table(sweep.layers),
        n_resamples=n_resamples,
    )
