"""Checkpoint rows -> the scale study's tables: per env and learner size (width, depth, learning-rate rule), BC's
capability, the capability and drift at a fixed RL budget and at a capability target, each drift beside its control
(BC continued from the same start for as many optimizer steps), and the slope of drift against width with a CI.

Why the control: wide networks move less relative to their start under any gradient training (lazy training), so a
fall of RL's drift with width says something about RL only beside the same fall for more imitation. The per-seed
ratio RL / control, whose slope against width `size_trend` also gives, is the number that speaks about RL.

The drift values (`DRIFT_NAMES`), each read for the RL run and, prefixed `control/`, for its control:

- `rel_change`: the actor's ||W - W_bc|| / ||W_bc||; `moved@<rtol>`: the fraction of actor parameters that moved
  beyond rtol times their layer's RMS at the start (drift.weight_drift); `kl_demo`: KL(pi_bc || pi) on demonstration
  states;
- `eff_rank`: the mean over the actor's layers of the effective rank of each layer's update, the head
  (`action_net`, whose update's rank is at most the action dimension) included;
- `cka_last`: linear CKA of the last hidden activation on demonstration states, `policy_net.<2 depth - 1>` (SB3's
  actor body alternates Linear and activation, and drift.hidden_activations names activations by their index).

`ratio/<name>` is the seed's RL value over its control's, NaN where the control's is 0 or either is missing.
Over seeds every value is the IQM (`frontier.iqm`) with gap.py's percentile bootstrap 95% CI over seeds
(`gap.iqm_ci`: `frontier._draws`, percentiles as order statistics), NaN seeds left out.

`scale_analysis` makes the report's scale section (testbed.report.scale): the study's rows (cells whose control was
measured), each env's sizes at the largest RL budget all of them have and at a capability target, the trends of
`TRENDS` at that budget, and each size's row of the CEG table there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from testbed import stats
from testbed.analysis.cells import cell_points, kinds
from testbed.analysis.frontier import _draws, iqm
from testbed.analysis.gap import CENSORED, compute_at, iqm_ci, reach_point, steps_at, value_at
from testbed.config import LR_REFERENCE_WIDTH

METRIC = "eval/normalized_score"
SIZE = ("width", "depth", "lr_rule")  # the learner's size identity: widest hidden layer, hidden layers, lr rule
KEYS = ("env", *SIZE)
CONTROL = "control/"  # prefix of the control's columns in the checkpoint rows and in these tables
RATIO = "ratio/"  # prefix of the per-seed RL / control ratio in these tables
MOVED_TOLERANCES = ("1e-03", "1e-02", "1e-01")  # drift.RELATIVE_TOLERANCES as drift formats them (no torch here)
ACTOR = "drift/weights/actor/"
CKA = "drift/cka/demo/"
DRIFT = {
    "rel_change": ACTOR + "rel_change",
    **{f"moved@{tol}": f"{ACTOR}moved@{tol}" for tol in MOVED_TOLERANCES},
    "kl_demo": "drift/kl/demo",
}
DRIFT_NAMES = (*DRIFT, "eff_rank", "cka_last")
GRAD_STEPS = {"grad_steps": "compute/rl/grad_steps", f"{CONTROL}grad_steps": f"{CONTROL}grad_steps"}


# ----------------------------------------------------------------------------------------- drift values


def _column(rows: pd.DataFrame, col: str) -> np.ndarray:
    """A checkpoint column as floats; NaN where the results do not have it."""
    return rows[col].to_numpy(dtype=np.float64) if col in rows.columns else np.full(len(rows), np.nan)


def _drift_values(rows: pd.DataFrame, depth: int, prefix: str = "") -> pd.DataFrame:
    """The DRIFT_NAMES values of each checkpoint row, of the RL run (prefix "") or of its control ("control/")."""
    out = {name: _column(rows, prefix + col) for name, col in DRIFT.items()}
    ranks = [c for c in rows.columns if c.startswith(prefix + ACTOR) and c.endswith("/eff_rank")]
    out["eff_rank"] = rows[ranks].astype(np.float64).mean(axis=1).to_numpy() if ranks else np.full(len(rows), np.nan)
    out["cka_last"] = _column(rows, f"{prefix}{CKA}policy_net.{2 * depth - 1}")
    return pd.DataFrame(out, columns=list(DRIFT_NAMES))


def _ratio(rl: pd.DataFrame, control: pd.DataFrame) -> pd.DataFrame:
    """RL / control per value; NaN where the control's value is 0 (the ratio is undefined) or missing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (rl / control.where(control != 0)).add_prefix(RATIO)


def _paired(rl: pd.DataFrame, control: pd.DataFrame) -> pd.DataFrame:
    """The RL run's values, the control's (`control/`) and their ratio (`ratio/`), side by side."""
    return pd.concat([rl, control.add_prefix(CONTROL), _ratio(rl, control)], axis=1)


# ------------------------------------------------------------------------------------------- per seed


def _size_cells(points: pd.DataFrame) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """Per env and size, its one BC+RL cell: (identity, the cell's rows). BC-only and scratch cells are left out.

    Raises ValueError where points lack the size columns, or where one size has several BC+RL cells (other
    settings vary too: filter the points to one study first, or the rows would mix them).
    """
    missing = [c for c in SIZE if c not in points.columns]
    if missing:
        raise ValueError(f"points lack the size columns {missing}")
    pts = cell_points(points[points["rl_init"] == "bc"])
    pts = pts[pts["cell"].map(kinds(pts)).eq("bc_rl")]
    for keys, g in pts.groupby(list(KEYS), sort=True):
        ident = dict(zip(KEYS, keys, strict=True))
        if g["cell"].nunique() > 1:
            raise ValueError(f"several BC+RL cells at {ident}: {sorted(g['label'].unique())}")
        ident |= {"cell": g["cell"].iloc[0], "label": g["label"].iloc[0]}
        yield ident, g


def _checkpoint_at(steps: pd.Series, budget: float) -> float | None:
    """The cell's checkpoint nearest `budget` at or above it; None if every checkpoint is below it."""
    above = steps[steps >= budget]
    return float(above.min()) if len(above) else None


def seeds_at_budget(points: pd.DataFrame, budget: float) -> pd.DataFrame:
    """One row per env, size and seed of the BC+RL cells: capability and drift at the RL checkpoint `budget`.

    The checkpoint is the cell's nearest at or above `budget` (`rl_steps`); a cell with none is left out. Columns:
    KEYS, cell, label, budget, rl_steps, seed, bc_score (RL steps 0), score, grad_steps (`compute/rl/grad_steps`),
    control/grad_steps, and DRIFT_NAMES with their `control/` and `ratio/` twins.
    """
    frames = []
    for ident, g in _size_cells(points):
        at = _checkpoint_at(g["rl_steps"], budget)
        if at is None:
            continue
        start = g[g["rl_steps"] == 0].set_index("seed")[METRIC]
        b = g[g["rl_steps"] == at].reset_index(drop=True)
        depth = int(ident["depth"])
        head = pd.DataFrame(
            ident | {"budget": budget, "rl_steps": at, "seed": b["seed"], "bc_score": b["seed"].map(start)}
        )
        head["score"] = _column(b, METRIC)
        for name, col in GRAD_STEPS.items():
            head[name] = _column(b, col)
        drift = _paired(_drift_values(b, depth), _drift_values(b, depth, CONTROL))
        frames.append(pd.concat([head, drift], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _start_filled(rl: pd.DataFrame, control: pd.DataFrame) -> pd.DataFrame:
    """The control's values with its RL-steps-0 row completed from the RL run's: at step 0 both are the BC start
    itself, so a control that is not measured there has the start's drift (none)."""
    control = control.copy()
    control.iloc[0] = control.iloc[0].fillna(rl.iloc[0])
    return control


def _interpolated(frame: pd.DataFrame, k: int, f: float) -> pd.DataFrame:
    """One row: each column at fraction f of the way from checkpoint k - 1 to k (gap.value_at); NaN if censored."""
    return pd.DataFrame({c: [value_at(frame[c].to_numpy(), k, f)] for c in frame.columns})


def _reach_row(g: pd.DataFrame, depth: int, target: float) -> dict[str, Any]:
    """One seed's first reach of `target` (gap.reach_point, gap.steps_at) and the paired drift at that moment,
    interpolated with the score's own fraction (gap.value_at); the ratio is that of the interpolated values."""
    steps = g["rl_steps"].to_numpy(dtype=np.float64)
    scores = _column(g, METRIC)
    k, f = reach_point(steps, scores, target)
    s = steps_at(steps, k, f)
    rl = _drift_values(g, depth)
    control = _start_filled(rl, _drift_values(g, depth, CONTROL))
    row = {
        "seed": g["seed"].iloc[0],
        "bc_score": scores[0],
        "max_steps": steps[-1],
        "censored": k == CENSORED,
        "steps": s,
        "grad_steps": compute_at(steps, _column(g, GRAD_STEPS["grad_steps"]), s),
    }
    return row | _paired(_interpolated(rl, k, f), _interpolated(control, k, f)).iloc[0].to_dict()


def seeds_at_target(points: pd.DataFrame, target: float) -> pd.DataFrame:
    """One row per env, size and seed of the BC+RL cells: when the seed first reached normalized score `target`
    and the drift at that moment, as gap.reach_table finds them (its module docstring has the interpolation).

    A seed that never reaches it is censored: steps +inf ("not within max_steps"), drift NaN. A seed whose start
    already reaches it has steps 0 and the start's drift (none; ratios NaN). Seeds without an RL-steps-0 row are
    left out (nothing to measure from). Columns: KEYS, cell, label, target, seed, bc_score, max_steps, censored,
    steps, grad_steps (`compute/rl/grad_steps` there), and DRIFT_NAMES with their `control/` and `ratio/` twins.
    """
    rows = []
    for ident, g in _size_cells(points):
        for _, seed_rows in g.groupby("seed", sort=True):
            seed_rows = seed_rows.sort_values("rl_steps")
            if seed_rows["rl_steps"].iloc[0] == 0:
                rows.append(ident | {"target": target} | _reach_row(seed_rows, int(ident["depth"]), target))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- over seeds


def _iqm_columns(g: pd.DataFrame, columns: Sequence[str], n_resamples: int) -> dict[str, float]:
    """{col, col_ci_low, col_ci_high}: the IQM over the seeds where `col` is not NaN, with gap.iqm_ci's CI."""
    out: dict[str, float] = {}
    for col in columns:
        values = g[col].dropna().to_numpy(dtype=np.float64) if col in g.columns else np.array([])
        point, low, high = iqm_ci(values, n_resamples)
        out |= {col: point, f"{col}_ci_low": low, f"{col}_ci_high": high}
    return out


def _iqm(values: pd.Series) -> float:
    """The IQM over the values that are not NaN; NaN if none are."""
    x = values.dropna().to_numpy(dtype=np.float64)
    return float(iqm(x)) if x.size else np.nan


def _drift_columns() -> list[str]:
    """DRIFT_NAMES, then their control/ and ratio/ twins: the order of the tables' drift columns."""
    return [f"{prefix}{name}" for prefix in ("", CONTROL, RATIO) for name in DRIFT_NAMES]


def _ident(g: pd.DataFrame, columns: Sequence[str]) -> dict[str, Any]:
    """The identity of a group of per-seed rows that share it."""
    return {c: g[c].iloc[0] for c in columns}


def scale_table(points: pd.DataFrame, budget: float, n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """One row per env and size (width, depth, lr_rule) of the BC-started cells, at RL budget `budget`.

    Columns: KEYS, cell, label, budget, rl_steps (the checkpoint used: the nearest at or above `budget`), n_seeds
    (seeds at that checkpoint), bc_score and score (normalized capability at RL steps 0 and at the checkpoint),
    grad_steps and control/grad_steps (IQM: the two should match, the control's steps being the RL run's actor
    steps), and every drift column (DRIFT_NAMES, `control/`, `ratio/`): each as IQM over seeds with `_ci_low`,
    `_ci_high`.
    """
    return _budget_table(seeds_at_budget(points, budget), n_resamples)


def _budget_table(seeds: pd.DataFrame, n_resamples: int) -> pd.DataFrame:
    """`scale_table` from its per-seed rows (`seeds_at_budget`)."""
    if seeds.empty:
        return pd.DataFrame()
    rows = []
    for _, g in seeds.groupby(list(KEYS), sort=True):
        row = _ident(g, (*KEYS, "cell", "label", "budget", "rl_steps")) | {"n_seeds": len(g)}
        row |= {name: _iqm(g[name]) for name in GRAD_STEPS}
        rows.append(row | _iqm_columns(g, ("bc_score", "score", *_drift_columns()), n_resamples))
    return pd.DataFrame(rows)


def scale_at_target(points: pd.DataFrame, target: float, n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """One row per env and size of the BC-started cells: the RL steps to first reach `target` and the drift then.

    As gap.gap_table reports a target: n_seeds, n_reached, max_steps, steps (IQM over seeds with censored seeds as
    +inf, so the IQM of 5 seeds is censored when 2 or more are; CI ends may be +inf, "> max_steps"), censored (the
    IQM is), and the drift columns (DRIFT_NAMES, `control/`, `ratio/`) as IQM and CI over the seeds that reached.
    """
    seeds = seeds_at_target(points, target)
    if seeds.empty:
        return pd.DataFrame()
    rows = []
    for _, g in seeds.groupby(list(KEYS), sort=True):
        row = _ident(g, (*KEYS, "cell", "label", "target")) | {"n_seeds": len(g)}
        row |= {"n_reached": int((~g["censored"]).sum()), "max_steps": g["max_steps"].max()}
        row |= _iqm_columns(g, ("bc_score", "steps"), n_resamples)
        row["censored"] = bool(np.isinf(row["steps"]))
        rows.append(row | _iqm_columns(g[~g["censored"]], _drift_columns(), n_resamples))
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------- trend with width


def _log_iqm_slopes(values: Sequence[np.ndarray], widths: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(1 + n_resamples,) least-squares slopes of log(IQM over seeds) against log(width): row 0 the seeds as
    measured, then resamples of the seeds within each width (frontier._draws). NaN where an IQM is not > 0."""
    rng = np.random.default_rng(seed)
    y = np.stack([iqm(x[_draws(x.size, n_resamples, rng, halves=False)]) for x in values], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_y = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan)
    x = np.log(widths) - np.log(widths).mean()
    return ((log_y - log_y.mean(axis=1, keepdims=True)) * x).sum(axis=1) / (x * x).sum()


def _slope_ci(slopes: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile CI of the resampled slopes (order statistics); NaN when over (1 - confidence) / 2 are undefined."""
    alpha = (1.0 - confidence) / 2
    ok = np.isfinite(slopes)
    if not ok.any() or np.mean(~ok) > alpha:
        return np.nan, np.nan
    low, high = np.quantile(slopes[ok], [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(low), float(high)


def size_trend(
    seeds: pd.DataFrame,
    column: str,
    n_resamples: int = stats.N_RESAMPLES,
    confidence: float = stats.CONFIDENCE,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """Per env, depth and lr_rule: the slope of log(IQM over seeds of `column`) against log(width), with a CI.

    `seeds` is a per-seed table (`seeds_at_budget` or `seeds_at_target`), so that the CI can resample seeds:
    within each width (the widths are the design, the seeds the noise), the IQM and the least-squares slope
    recomputed per resample, percentile interval. A slope of -0.5 says the column falls as 1/sqrt(width); for
    `ratio/<name>` it says how much faster RL's drift falls with width than the control's. Non-finite values
    (a censored seed's NaN drift or +inf steps) are left out, so at a target the trend is over the seeds that
    reached it; fewer than two widths give NaN. Columns: env, depth, lr_rule, column,
    widths (those fitted), n_seeds (the fewest at any width), slope, slope_ci_low, slope_ci_high.
    """
    if seeds.empty:
        return pd.DataFrame()
    rows = []
    for keys, g in seeds.groupby(["env", "depth", "lr_rule"], sort=True):
        by_width = {w: gw[column].to_numpy(dtype=np.float64) for w, gw in g.groupby("width", sort=True)}
        by_width = {w: x[np.isfinite(x)] for w, x in by_width.items() if np.isfinite(x).any()}
        row = dict(zip(("env", "depth", "lr_rule"), keys, strict=True)) | {"column": column}
        row |= {"widths": [int(w) for w in by_width], "n_seeds": min((x.size for x in by_width.values()), default=0)}
        slope, low, high = np.nan, np.nan, np.nan
        if len(by_width) >= 2:
            widths = np.array(list(by_width), dtype=np.float64)
            slopes = _log_iqm_slopes(list(by_width.values()), widths, n_resamples, seed)
            slope, (low, high) = float(slopes[0]), _slope_ci(slopes[1:], confidence)
        rows.append(row | {"slope": slope, "slope_ci_low": low, "slope_ci_high": high})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- the study

ORDER = ("env", "depth", "lr_rule", "width")  # the study's tables' row order: widths together, per depth and rule
TARGET = 0.8  # the capability target of the report's scale section (normalized score)
# The size trends the report shows (at the budget): how relative change and the fraction of moving weights fall with
# width for RL, for the control and as their ratio (RL faster than the control: a negative ratio slope), and KL.
TRENDS = (
    "rel_change",
    f"{CONTROL}rel_change",
    f"{RATIO}rel_change",
    "moved@1e-02",
    f"{CONTROL}moved@1e-02",
    f"{RATIO}moved@1e-02",
    "kl_demo",
)


@dataclass(frozen=True)
class Scale:
    """The scale study's tables, each one row per env and size (width, depth, lr_rule) unless said otherwise."""

    budgets: dict[str, float]  # env -> the RL budget its sizes are compared at (the largest every size has)
    target: float  # the capability target of `at_target`
    budget: pd.DataFrame  # scale_table at the env's budget
    at_target: pd.DataFrame  # scale_at_target at `target`
    trend: pd.DataFrame  # size_trend of every TRENDS column at the budget: one row per env, depth, lr_rule, column
    ceg: pd.DataFrame  # the CEG table's row (ceg_table) of each size's cell at the budget's checkpoint
    seeds: pd.DataFrame  # seeds_at_budget at the env's budget: one row per env, size and seed


def study_points(points: pd.DataFrame) -> pd.DataFrame:
    """The scale study's rows: every row of the BC-started cells whose control was measured (eval.bc_control: a
    `control/` actor relative change at some checkpoint). Other studies' cells in the same folders are left out."""
    col = CONTROL + DRIFT["rel_change"]
    if points.empty or col not in points.columns or any(c not in points.columns for c in SIZE):
        return points.iloc[0:0]
    measured = points[col].notna().groupby(points["cell"]).transform("any")
    return points[measured & (points["rl_init"] == "bc")]


def sizes_vary(points: pd.DataFrame) -> bool:
    """Whether the study's BC+RL cells (`study_points`) span more than one width: the report's scale section."""
    pts = study_points(points)
    return not pts.empty and pts.loc[pts["cell"].map(kinds(pts)).eq("bc_rl"), "width"].nunique() > 1


def _reference_rows(points: pd.DataFrame) -> pd.DataFrame:
    """The lr_rule=fixed cells at LR_REFERENCE_WIDTH filed under lr_rule=width too, per env and depth that has
    lr_rule=width cells but none at that width: there the width rule's rates are the env's own, so the fixed job
    is the width rule's job as well (the scale preset runs it once). Their cells keep their ids, so the rows are
    analysed apart from the others (`cell_points` would take them for duplicates)."""
    frames = []
    for _, g in points.groupby(["env", "depth"], sort=True):
        widths = {rule: set(gr["width"]) for rule, gr in g.groupby("lr_rule")}
        if "width" in widths and LR_REFERENCE_WIDTH not in widths["width"]:
            frames.append(g[(g["lr_rule"] == "fixed") & (g["width"] == LR_REFERENCE_WIDTH)].assign(lr_rule="width"))
    return pd.concat(frames, ignore_index=True) if frames else points.iloc[0:0]


def study_budgets(points: pd.DataFrame) -> dict[str, float]:
    """Per env, the largest RL budget every BC+RL size of it has: the smallest of its cells' largest checkpoints."""
    pts = points[points["cell"].map(kinds(points)).eq("bc_rl")] if not points.empty else points
    if pts.empty:
        return {}
    largest = pts.groupby(["env", "cell"])["rl_steps"].max().groupby("env").min()
    return {str(env): float(steps) for env, steps in largest.items()}


def _ceg_at(table: pd.DataFrame, ceg: pd.DataFrame) -> pd.DataFrame:
    """The CEG table's row of each size's cell at the checkpoint `table` read; NaN where the CEG table has none."""
    if table.empty:
        return pd.DataFrame()
    sizes = table[[*KEYS, "cell", "label", "rl_steps"]]
    if ceg.empty:
        return sizes
    gains = ceg.drop(columns=["env", "label", "frontier", "start"], errors="ignore")
    return sizes.merge(gains, on=["cell", "rl_steps"], how="left")


def _concat(frames: Sequence[pd.DataFrame], keys: Sequence[str]) -> pd.DataFrame:
    """The non-empty frames as one, sorted by `keys`."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).sort_values(list(keys), kind="stable", ignore_index=True)


def scale_analysis(
    points: pd.DataFrame,
    ceg: pd.DataFrame,
    metric: str = METRIC,
    target: float = TARGET,
    n_resamples: int = stats.N_RESAMPLES,
) -> Scale:
    """Every table of the report's scale section from the tidy checkpoint rows and the CEG table (`ceg_table`).

    Per env, every size is read at the largest RL budget all of them have (`study_budgets`), and when it first
    reaches `target`; the trends are at the budget. `metric` is the capability column (the tables' bc_score and
    score, the scale of `target`). Only the rows of `study_points` count; the lr_rule=fixed cell at
    LR_REFERENCE_WIDTH also counts for lr_rule=width where that rule has no cell of its own there
    (`_reference_rows`). Raises ValueError where one size has several BC+RL cells (`seeds_at_budget`).
    """
    pts = study_points(points)
    if metric != METRIC and not pts.empty:
        pts = pts.assign(**{METRIC: pts[metric]})
    parts = [pts, _reference_rows(pts)]  # analysed apart: the reference rows repeat cells of the first
    budgets = study_budgets(pts)
    seeds, budget, at_target = [], [], []
    for part in parts:
        for env, g in part.groupby("env", sort=True):
            if str(env) not in budgets:  # no BC+RL cell of the env: nothing to read at a budget
                continue
            seeds.append(seeds_at_budget(g, budgets[str(env)]))
            budget.append(_budget_table(seeds[-1], n_resamples))
        at_target.append(scale_at_target(part, target, n_resamples) if not part.empty else pd.DataFrame())
    per_seed = _concat(seeds, (*ORDER, "seed"))
    table = _concat(budget, ORDER)
    trends = [size_trend(per_seed, col, n_resamples) for col in TRENDS]
    return Scale(
        budgets=budgets,
        target=target,
        budget=table,
        at_target=_concat(at_target, ORDER),
        trend=_concat(trends, ("env", "depth", "lr_rule")),
        ceg=_ceg_at(table, ceg),
        seeds=per_seed,
    )
