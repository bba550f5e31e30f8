"""Checkpoint rows -> the memory study's table (issue 16): per task and learner (`policy`: mlp, framestack,
scratchpad, scratchpad_final, lstm), its size, its capability after BC and at every RL budget, the compute it took
to reach each capability level, and how readable its memory is.

- `policy` is the learner's kind, `scratchpad_final` for a scratchpad whose BC fitted the env's actions only
  (analysis.cells reads both from the job's config; results made before `policy=` existed are mlp).
- The learner's BC+RL cell gives every column but `bc@<demos>x<steps>` (its BC-only cells, BC step checkpoints
  included: the other points of its own imitation frontier) and the CEG (cost-charged, at the largest budget,
  against the learner's own frontier: analysis.cells puts `policy` among FRONTIER_KEYS).
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

from dataclasses import dataclass
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
    """One learner's BC+RL cell on one task: every column of `memory_table` but the BC-only ones."""
    first = g.iloc[0]
    row: dict[str, Any] = {"env": first["env"], "policy": first["policy"], "cell": first["cell"]}
    row |= {"seeds": g["seed"].nunique(), "demos": first["demos"], "grad_steps": first["grad_steps"]}
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
    row["rl_steps"] = last = max(by_step)
    for label, step in (("bc", 0.0), ("rl", last)):
        rows = by_step[step]
        kind, values = _probe(rows)
        row["probe"] = kind or row.get("probe")
        row |= _iqm_columns(values, f"probe_{label}", n_resamples)
        for col in CAUSAL:
            if col in rows.columns and rows[col].notna().any():
                row |= _iqm_columns(rows[col], f"{col.removeprefix('memory/causal/')}_{label}", n_resamples)
    return row


def _bc_only(cells: pd.DataFrame, metric: str, n_resamples: int) -> dict[str, Any]:
    """The learner's BC-only cells (its imitation frontier's other points): `bc@<demos>x<steps>` IQM and CI."""
    row: dict[str, Any] = {}
    for (demos, steps), g in cells.groupby(["demos", "grad_steps"], sort=True):
        row |= _iqm_columns(g.drop_duplicates("seed")[metric], f"bc@{int(demos)}x{int(steps)}", n_resamples)
    return row


def memory_table(
    points: pd.DataFrame, ceg: pd.DataFrame | None = None, metric: str = METRIC, n_resamples: int = stats.N_RESAMPLES
) -> tuple[pd.DataFrame, list[float]]:
    """One row per task (env) and learner from the study's rows (`study_points`): its BC+RL cell, its BC-only
    cells (`bc@<demos>x<steps>`: other demonstration counts and BC step checkpoints) and, from the CEG table
    (`analysis.ceg_table`, each learner against its own frontier), the cost-charged CEG at the largest budget;
    and the RL budgets of the columns. Raises ValueError where a learner has several BC+RL cells on a task (two
    settings under one name: report them apart)."""
    pts = study_points(points)
    if pts.empty:
        return pd.DataFrame(), []
    budgets = sorted(float(b) for b in pts["rl_steps"].unique() if b > 0)
    rows = []
    for (env, policy), g in pts.groupby(["env", "policy"], sort=True):
        with_rl = g.groupby("cell")["rl_steps"].transform("max") > 0
        if g.loc[with_rl, "cell"].nunique() != 1:
            cells = sorted(g.loc[with_rl, "label"].unique())
            raise ValueError(f"{env}: learner '{policy}' needs one BC+RL cell, has {len(cells)}: {cells}")
        main = g[with_rl].drop_duplicates(["seed", "rl_steps"])
        rows.append(_cell_row(main, metric, budgets, n_resamples) | _bc_only(g[~with_rl], metric, n_resamples))
    table = pd.DataFrame(rows)
    if ceg is not None and not ceg.empty:
        gains = ceg[["cell", "rl_steps", *[c for c in ceg.columns if c.startswith("ceg")]]]
        table = table.merge(gains, on=["cell", "rl_steps"], how="left")
    order = {p: i for i, p in enumerate(POLICY_ORDER)}
    table = table.sort_values(["env", "policy"], key=lambda s: s.map(order) if s.name == "policy" else s)
    return table.reset_index(drop=True), budgets


@dataclass(frozen=True)
class Memory:
    """The memory study's table (`memory_table`) and the RL budgets of its columns."""

    table: pd.DataFrame
    budgets: list[float]


def memory_analysis(
    points: pd.DataFrame, ceg: pd.DataFrame | None = None, metric: str = METRIC, n_resamples: int = stats.N_RESAMPLES
) -> Memory:
    """The report's memory section: `memory_table` over the study's rows."""
    table, budgets = memory_table(points, ceg, metric, n_resamples)
    return Memory(table=table, budgets=budgets)
