"""Checkpoint rows -> the memory study's table (issue 16): per task and learner (`policy`: mlp, framestack,
scratchpad, scratchpad_final, lstm), its size, its capability after BC and at every RL budget, the compute it took
to reach each capability level, and how readable its memory is.

- `policy` is the learner's kind, `scratchpad_final` for a scratchpad whose BC fitted the env's actions only
  (analysis.cells reads both from the job's config; results made before `policy=` existed are mlp).
- Capability: the normalized score's IQM over seeds with gap.py's percentile bootstrap 95% CI (`gap.iqm_ci`).
- Compute to a level: per seed, the total FLOPs (BC + RL) of the first checkpoint at or above the level, +inf
  (censored) where none is; over seeds the IQM with its CI, which stays finite while fewer than a quarter of the
  seeds are censored. Checkpoints are the budgets, so this is read at their granularity, not interpolated.
- Readability: `memory/probe_accuracy` (a binary hidden state: parity's running result) or `memory/probe_r2`
  (a continuous one: the velocity), testbed/probes.py, at BC and at the largest budget; for a scratchpad, the
  normalized score and the fraction of changed env actions when its notes are overwritten with the truth and with
  a wrong value (`memory/causal/...`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from testbed import stats
from testbed.analysis.gap import iqm_ci

METRIC = "eval/normalized_score"
LEVELS = (0.5, 0.9)
PROBES = ("memory/probe_accuracy", "memory/probe_r2")
CAUSAL = (
    "memory/causal/own_score",
    "memory/causal/true_score",
    "memory/causal/wrong_score",
    "memory/causal/true_action_change",
    "memory/causal/wrong_action_change",
)
POLICY_ORDER = ("mlp", "framestack", "scratchpad_final", "scratchpad", "lstm")


def study_points(points: pd.DataFrame) -> pd.DataFrame:
    """The memory study's rows: every row of the cells whose memory was probed (eval.memory_probe)."""
    probes = [c for c in PROBES if c in points.columns]
    if points.empty or not probes or "policy" not in points.columns:
        return points.iloc[0:0]
    probed = points[probes].notna().any(axis=1).groupby(points["cell"]).transform("any")
    return points[probed]


def studied(points: pd.DataFrame) -> bool:
    """Whether the folders hold a memory study: probed cells of more than one learner (the report's section)."""
    pts = study_points(points)
    return not pts.empty and pts["policy"].nunique() > 1


def _iqm_columns(values: pd.Series, name: str, n_resamples: int) -> dict[str, float]:
    point, low, high = iqm_ci(values.dropna().to_numpy(float), n_resamples)
    return {name: point, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _first_reach(seed_rows: pd.DataFrame, level: float, metric: str) -> float:
    reached = seed_rows[seed_rows[metric] >= level].sort_values("rl_steps")
    return float(reached["compute/total/flops"].iloc[0]) if not reached.empty else np.inf


def _probe(rows: pd.DataFrame) -> tuple[str | None, pd.Series]:
    for col in PROBES:
        if col in rows.columns and rows[col].notna().any():
            return col.removeprefix("memory/probe_"), rows[col]
    return None, pd.Series(dtype=float)


def _cell_row(g: pd.DataFrame, metric: str, budgets: list[float], n_resamples: int) -> dict[str, Any]:
    """One learner on one task: every column of `memory_table`."""
    first = g.iloc[0]
    row: dict[str, Any] = {"env": first["env"], "policy": first["policy"], "seeds": g["seed"].nunique()}
    row["demos"] = first["demos"]
    row["actor_params"] = first.get("policy/actor_params", np.nan)
    row["flops_per_step"] = first.get("policy/flops_per_step", np.nan)
    by_step = {float(s): rows for s, rows in g.groupby("rl_steps")}
    for budget in [0.0, *budgets]:
        rows = by_step.get(budget)
        name = "bc_score" if budget == 0 else f"score@{int(budget)}"
        row |= _iqm_columns(rows[metric] if rows is not None else pd.Series(dtype=float), name, n_resamples)
    for level in LEVELS:
        reach = pd.Series([_first_reach(s, level, metric) for _, s in g.groupby("seed")])
        row |= _iqm_columns(reach, f"flops_to_{level:g}", n_resamples)
        row[f"reached_{level:g}"] = int(np.isfinite(reach).sum())
    last = max(by_step) if by_step else 0.0
    for label, step in (("bc", 0.0), ("rl", last)):
        rows = by_step.get(step, g.iloc[0:0])
        kind, values = _probe(rows)
        row["probe"] = kind or row.get("probe")
        row |= _iqm_columns(values, f"probe_{label}", n_resamples)
        for col in CAUSAL:
            if col in rows.columns and rows[col].notna().any():
                row |= _iqm_columns(rows[col], f"{col.removeprefix('memory/causal/')}_{label}", n_resamples)
    return row


def memory_table(
    points: pd.DataFrame, metric: str = METRIC, n_resamples: int = stats.N_RESAMPLES
) -> tuple[pd.DataFrame, list[float]]:
    """One row per task (env) and learner from the study's rows (`study_points`), and the RL budgets of its
    columns (every budget some BC+RL row of the study has). Raises ValueError where one learner on one task has
    several cells (two settings under one name: report them apart)."""
    pts = study_points(points)
    if pts.empty:
        return pd.DataFrame(), []
    budgets = sorted(float(b) for b in pts["rl_steps"].unique() if b > 0)
    rows = []
    for (env, policy), g in pts.groupby(["env", "policy"], sort=True):
        if g["cell"].nunique() > 1:
            raise ValueError(
                f"{env}: learner '{policy}' has {g['cell'].nunique()} cells: {sorted(g['label'].unique())}"
            )
        g = g.drop_duplicates(["seed", "rl_steps"])
        rows.append(_cell_row(g, metric, budgets, n_resamples))
    table = pd.DataFrame(rows)
    order = {p: i for i, p in enumerate(POLICY_ORDER)}
    table = table.sort_values(["env", "policy"], key=lambda s: s.map(order) if s.name == "policy" else s)
    return table.reset_index(drop=True), budgets
