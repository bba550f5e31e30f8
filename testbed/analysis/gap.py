"""Checkpoint rows -> the gap imitation leaves to RL: per start (cell) and capability target, the RL env steps and
FLOPs to first reach the target and the drift at that moment, per seed and as an IQM over seeds with a bootstrap CI;
the share of the capability that BC delivered; and one row per env for the cross-env comparison.

How the moment of first reaching a target T is found, per seed (`reach_point`):

1. The start (RL steps 0) already at or above T: reached at 0 steps, 0 RL FLOPs, the start's drift (none).
2. Else the first checkpoint k with a score at or above T, and the fraction f in (0, 1] of the way from checkpoint
   k - 1 (below T) to k at which the score, interpolated linearly, crosses T. The steps at the crossing are
   interpolated linearly in log(steps) between the two checkpoints, but on the first segment (from 0, where the
   log is undefined) linearly in steps: s = f s_1 there, s = s_(k-1) (s_k / s_(k-1))^f beyond. The score is thus
   taken as linear in log(steps) between checkpoints (linear in steps on the first segment).
3. No checkpoint at or above T: censored, "not within N" (N: the seed's largest RL budget); the steps and FLOPs are
   +inf, the drift undefined.

At the crossing, the drift (actor relative weight change, linear CKA per hidden layer and KL(pi_start || pi) on
demonstration states) is interpolated with the same fraction f as the score, i.e. also linearly in log(steps)
(linearly in steps on the first segment); the RL FLOPs and `compute/rl/env_steps` (which counts a critic warm-up)
linearly in steps at the crossing's steps, since PPO's compute grows in proportion to its env steps.

Over seeds: the IQM (25% trimmed mean, as scipy.stats.trim_mean(x, 0.25): of 5 seeds the middle 3) with censored
seeds as +inf, so the IQM of 5 seeds is censored when 2 or more are; a percentile bootstrap 95% CI over seeds
(percentiles as order statistics, numpy's "inverted_cdf", so an infinite resample never enters arithmetic; an
infinite end is "> N"). `stats.aggregate`'s scipy bootstrap interpolates between percentiles, which an infinite
resample turns into NaN, so the seeds are drawn here with the frontier's `_draws` and the IQM is `frontier.iqm`
(rliable's, with the cut of scipy.stats.trim_mean). The drift at the target is the IQM over the seeds that reached
it (their count beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from testbed import stats
from testbed.analysis.cells import cell_points, kinds, start_and_budgets
from testbed.analysis.frontier import _draws, iqm

METRIC = "eval/normalized_score"
TARGETS = (0.5, 0.8, 0.9, 0.95)  # capability levels (normalized score) to reach
HEADLINE_TARGET = 0.9  # the cross-env tables' target
MIN_SHARE_DENOMINATOR = 0.1  # the imitation share is undefined where BC+RL's IQM is below this
ACTOR = "drift/weights/actor/rel_change"
KL = "drift/kl/demo"
CKA = "drift/cka/demo/"  # + hidden layer, e.g. policy_net.1
DRIFT = {"actor_rel_change": ACTOR, "kl_demo": KL}  # gap column -> checkpoint column; CKA: cka_demo/<layer>
CENSORED = -1  # reach_point's k when no checkpoint reaches the target


# ------------------------------------------------------------------------------------------ one seed


def reach_point(steps: np.ndarray, scores: np.ndarray, target: float) -> tuple[int, float]:
    """(k, f): the first checkpoint k whose score reaches `target`, and the fraction f in (0, 1] of the way from
    checkpoint k - 1 to k where the linearly interpolated score crosses it. k = 0 (f = 1): the start reaches it;
    k = CENSORED: no checkpoint does. `steps` increasing, starting at 0; a NaN score reaches nothing."""
    if len(steps) == 0 or steps[0] != 0 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"checkpoint steps must start at 0 and increase, got {list(steps)}")
    hit = np.flatnonzero(np.asarray(scores, dtype=np.float64) >= target)
    if hit.size == 0:
        return CENSORED, np.nan
    k = int(hit[0])
    if k == 0:
        return 0, 1.0
    lo, hi = float(scores[k - 1]), float(scores[k])
    if np.isnan(lo):  # the checkpoint before is unknown: take the crossing at checkpoint k
        return k, 1.0
    return k, (target - lo) / (hi - lo)


def steps_at(steps: np.ndarray, k: int, f: float) -> float:
    """RL steps at fraction f from checkpoint k - 1 to k: linear in steps from 0, else linear in log(steps)."""
    if k == CENSORED:
        return np.inf
    if k == 0:
        return 0.0
    s0, s1 = float(steps[k - 1]), float(steps[k])
    if f >= 1.0:
        return s1  # at the checkpoint itself, exactly
    return f * s1 if s0 == 0 else s0 * (s1 / s0) ** f


def value_at(values: np.ndarray, k: int, f: float) -> float:
    """A checkpoint column at fraction f from checkpoint k - 1 to k (the score's own interpolation); NaN if censored."""
    if k == CENSORED:
        return np.nan
    if k == 0:
        return float(values[0])
    return float(values[k - 1] + f * (values[k] - values[k - 1]))


def compute_at(steps: np.ndarray, values: np.ndarray, s: float) -> float:
    """A compute column (FLOPs, env steps) at RL steps s, linear in steps between checkpoints; +inf past them."""
    if not np.isfinite(s):
        return np.inf
    return float(np.interp(s, steps, values))


# ------------------------------------------------------------------------------------- per-seed reach


def _drift_columns(points: pd.DataFrame) -> dict[str, str]:
    """{gap column: checkpoint column} of the drift read at the target: actor change, KL, CKA per hidden layer."""
    cols = {name: col for name, col in DRIFT.items() if col in points.columns}
    return cols | {f"cka_demo/{c[len(CKA) :]}": c for c in points.columns if c.startswith(CKA)}


def reach_table(points: pd.DataFrame, targets: Sequence[float] = TARGETS, metric: str = METRIC) -> pd.DataFrame:
    """One row per BC+RL or scratch cell, seed and target: whether and when the seed first reached the target.

    Columns: env, label, cell, kind, seed, target, start_score (the score at RL steps 0), max_steps (N, the
    largest budget), censored, steps (RL steps at the crossing; 0 at the start; +inf censored), env_steps and
    flops (`compute/rl/env_steps`, `compute/rl/flops` there), and the drift there: actor_rel_change, kl_demo,
    cka_demo/<layer> (NaN when censored).
    """
    pts = cell_points(points)
    pts = pts[pts["cell"].map(kinds(pts)).isin(["bc_rl", "scratch"])]
    drift = _drift_columns(pts)
    rows = []
    for (cell, seed), g in pts.groupby(["cell", "seed"], sort=False):
        g = g.sort_values("rl_steps")
        if g["rl_steps"].iloc[0] != 0:
            continue  # no start to measure from
        steps = g["rl_steps"].to_numpy(dtype=np.float64)
        scores = g[metric].to_numpy(dtype=np.float64)
        first = g.iloc[0]
        ident = {
            "env": first["env"],
            "label": first["label"],
            "cell": cell,
            "kind": "scratch" if first["rl_init"] == "scratch" else "bc_rl",
            "seed": seed,
        }
        for target in targets:
            k, f = reach_point(steps, scores, target)
            s = steps_at(steps, k, f)
            row = ident | {
                "target": target,
                "start_score": scores[0],
                "max_steps": steps[-1],
                "censored": k == CENSORED,
                "steps": s,
                "env_steps": compute_at(steps, _column(g, "compute/rl/env_steps"), s),
                "flops": compute_at(steps, _column(g, "compute/rl/flops"), s),
            }
            rows.append(row | {name: value_at(g[col].to_numpy(dtype=np.float64), k, f) for name, col in drift.items()})
    return pd.DataFrame(rows)


def _column(g: pd.DataFrame, col: str) -> np.ndarray:
    """A checkpoint column as floats; NaN where the results do not have it."""
    return g[col].to_numpy(dtype=np.float64) if col in g.columns else np.full(len(g), np.nan)


# ----------------------------------------------------------------------------------------- over seeds


def iqm_ci(
    values: np.ndarray,
    n_resamples: int = stats.N_RESAMPLES,
    confidence: float = stats.CONFIDENCE,
    seed: int = stats.SEED,
) -> tuple[float, float, float]:
    """(IQM, CI low, CI high) over seeds; values may be +inf (censored). Percentile bootstrap over seeds (fixed
    RNG seed), percentiles as order statistics ("inverted_cdf"); one seed: no CI (NaN)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return np.nan, np.nan, np.nan
    point = float(iqm(x))
    if x.size < 2:
        return point, np.nan, np.nan
    resampled = iqm(x[_draws(x.size, n_resamples, np.random.default_rng(seed), halves=False)[1:]])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha], method="inverted_cdf")
    return point, float(low), float(high)


def gap_table(
    reach: pd.DataFrame,
    n_resamples: int = stats.N_RESAMPLES,
    confidence: float = stats.CONFIDENCE,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """One row per env, cell and target: the start's capability and the steps and FLOPs to reach the target over
    seeds (IQM, censored seeds +inf, with CI), and the drift there (IQM over the seeds that reached).

    Columns: env, label, cell, kind, target, n_seeds, n_reached, start_score (IQM at RL steps 0), max_steps (N),
    steps / steps_ci_low / steps_ci_high, flops / flops_ci_low / flops_ci_high (+inf: censored), censored (the
    IQM is), and each drift column of `reach_table`.
    """
    if reach.empty:
        return pd.DataFrame()
    drift = [c for c in reach.columns if c in DRIFT or c.startswith("cka_demo/")]
    rows = []
    for (_, target), g in reach.groupby(["cell", "target"], sort=False):
        first = g.iloc[0]
        row: dict[str, Any] = {k: first[k] for k in ("env", "label", "cell", "kind")}
        row |= {
            "target": target,
            "n_seeds": len(g),
            "n_reached": int((~g["censored"]).sum()),
            "start_score": float(iqm(g["start_score"].to_numpy(dtype=np.float64))),
            "max_steps": g["max_steps"].max(),
        }
        for col in ("steps", "flops"):
            value, low, high = iqm_ci(g[col].to_numpy(dtype=np.float64), n_resamples, confidence, seed)
            row |= {col: value, f"{col}_ci_low": low, f"{col}_ci_high": high}
        row["censored"] = bool(np.isinf(row["steps"]))
        for col in drift:
            reached = g.loc[~g["censored"], col].dropna().to_numpy(dtype=np.float64)
            row[col] = float(iqm(reached)) if reached.size else np.nan
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["env", "kind", "start_score", "target"], ignore_index=True)


# ------------------------------------------------------------------------------------- imitation share


def share_table(
    points: pd.DataFrame,
    metric: str = METRIC,
    n_resamples: int = stats.N_RESAMPLES,
    confidence: float = stats.CONFIDENCE,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """Per BC+RL cell and RL budget > 0: the share of BC+RL's capability (its gain over random) that BC delivered.

    share = IQM(BC) / IQM(BC+RL), a ratio of IQMs over the same seeds (each seed's start at RL steps 0 and its
    score at the budget), not a per-seed ratio, which explodes wherever one seed's BC+RL score is near 0. Undefined
    (NaN) where IQM(BC+RL) < MIN_SHARE_DENOMINATOR. CI: paired percentile bootstrap over seeds (a seed's BC and
    BC+RL scores drawn together); resamples whose denominator falls below MIN_SHARE_DENOMINATOR are undefined, and
    a CI with more than (1 - confidence) / 2 of its resamples undefined is NaN.
    """
    alpha = (1.0 - confidence) / 2
    rows = []
    for cell, rl_steps, start, b in start_and_budgets(points, metric):
        both = pd.concat([start, b.set_index("seed")[metric]], axis=1, join="inner").dropna()
        bc, rl = (both.iloc[:, i].to_numpy(dtype=np.float64) for i in (0, 1))
        row = {
            "env": b["env"].iloc[0],
            "label": b["label"].iloc[0],
            "cell": cell,
            "rl_steps": rl_steps,
            "n_seeds": len(both),
            "bc": float(iqm(bc)) if len(bc) else np.nan,
            "bc_rl": float(iqm(rl)) if len(rl) else np.nan,
            "share": np.nan,
            "share_ci_low": np.nan,
            "share_ci_high": np.nan,
        }
        if len(bc) and row["bc_rl"] >= MIN_SHARE_DENOMINATOR:
            row["share"] = row["bc"] / row["bc_rl"]
            if len(bc) >= 2:
                draw = _draws(len(bc), n_resamples, np.random.default_rng(seed), halves=False)[1:]
                num, den = iqm(bc[draw]), iqm(rl[draw])
                ok = den >= MIN_SHARE_DENOMINATOR
                if np.mean(~ok) <= alpha:
                    low, high = np.quantile(num[ok] / den[ok], [alpha, 1.0 - alpha], method="inverted_cdf")
                    row |= {"share_ci_low": float(low), "share_ci_high": float(high)}
        rows.append(row)
    return (
        pd.DataFrame(rows).sort_values(["env", "bc", "label", "rl_steps"], ignore_index=True)
        if rows
        else pd.DataFrame()
    )


# ------------------------------------------------------------------------------------------ cross-env


@dataclass(frozen=True)
class Gap:
    """The gap study's tables: per seed (`reach`), per cell and target (`gap`), the imitation share (`share`) and
    the cross-env tables, one row per env (`cross_env`: name -> table)."""

    reach: pd.DataFrame
    gap: pd.DataFrame
    share: pd.DataFrame
    cross_env: dict[str, pd.DataFrame] = field(default_factory=dict)


def gap_analysis(
    points: pd.DataFrame,
    ceg: pd.DataFrame,
    metric: str = METRIC,
    targets: Sequence[float] = TARGETS,
    target: float = HEADLINE_TARGET,
    n_resamples: int = stats.N_RESAMPLES,
    frontier_cells: pd.DataFrame | None = None,
) -> Gap:
    """Every gap table from the tidy checkpoint rows, the existing CEG table (`analysis.ceg_table`'s rows) and,
    for how far imitation alone goes, the frontier's BC configurations (`analysis.frontier_cells`)."""
    reach = reach_table(points, targets, metric)
    gap = gap_table(reach, n_resamples)
    share = share_table(points, metric, n_resamples)
    cross_env = cross_env_tables(gap, share, ceg, target)
    if frontier_cells is not None and cross_env:
        cross_env["frontier"] = frontier_reach_table(points, frontier_cells, metric)
    return Gap(reach=reach, gap=gap, share=share, cross_env=cross_env)


def frontier_reach_table(points: pd.DataFrame, frontier_cells: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per env, how far imitation alone goes against the best BC+RL point: the best BC configuration (highest IQM
    over seeds, `frontier_cells`' `score_iqm`), and the best BC+RL cell and budget (highest IQM of `metric` over
    seeds). `bc_covers`: BC's best reaches BC+RL's, so the frontier extends past every BC+RL point and CEG is
    censored nowhere (where it does not, BC+RL's best lies above anything BC reached)."""
    pts = cell_points(points)
    pts = pts[pts["cell"].map(kinds(pts)).eq("bc_rl") & (pts["rl_steps"] > 0)]
    by_budget = pts.groupby(["env", "cell", "label", "rl_steps"])[metric].agg(lambda v: iqm(v.to_numpy())).reset_index()
    rows = []
    for env, f in frontier_cells.groupby("env", sort=True):
        bc = f.loc[f["score_iqm"].idxmax()]
        row = {"env": env, "bc_label": bc["label"], "bc_score": bc["score_iqm"], "bc_demos": bc["demos"]}
        row |= {"bc_grad_steps": bc["grad_steps"], "bc_flops": bc["bc_flops"], "bc_configs": len(f)}
        rl = by_budget[by_budget["env"] == env]
        if not rl.empty:
            top = rl.loc[rl[metric].idxmax()]
            row |= {"bc_rl_label": top["label"], "bc_rl_steps": top["rl_steps"], "bc_rl_score": top[metric]}
            row["bc_covers"] = bool(bc["score_iqm"] >= top[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def _pick(gap: pd.DataFrame, env: str, target: float) -> dict[str, pd.Series | None]:
    """The env's rows at `target`: its best BC start (highest start capability), weakest BC start and scratch."""
    g = gap[(gap["env"] == env) & np.isclose(gap["target"], target)]
    bc = g[g["kind"] == "bc_rl"].sort_values("start_score")
    scratch = g[g["kind"] == "scratch"]
    return {
        "best": bc.iloc[-1] if not bc.empty else None,
        "weakest": bc.iloc[0] if not bc.empty else None,
        "scratch": scratch.iloc[0] if not scratch.empty else None,
    }


def cross_env_tables(
    gap: pd.DataFrame, share: pd.DataFrame, ceg: pd.DataFrame, target: float = HEADLINE_TARGET
) -> dict[str, pd.DataFrame]:
    """One row per env for each question, at `target`: `gap` (start capability range, RL steps and FLOPs to the
    target from the best BC start and from scratch), `drift` (at the target from the best and weakest BC starts and
    from scratch), `share` (the imitation share at the largest budget, best and weakest start) and `ceg` (the best
    start's CEG at its largest budget, the existing analysis's row). Cells are referred to by label."""
    if gap.empty:
        return {}
    out: dict[str, list[dict[str, Any]]] = {"gap": [], "drift": [], "share": [], "ceg": []}
    for env in sorted(gap["env"].unique()):
        pick = _pick(gap, env, target)
        starts = gap[(gap["env"] == env) & (gap["kind"] == "bc_rl")].drop_duplicates("cell")["start_score"]
        row: dict[str, Any] = {"env": env, "target": target, "n_starts": len(starts)}
        row |= {"start_min": starts.min(), "start_max": starts.max()}
        row |= {"max_steps": gap.loc[gap["env"] == env, "max_steps"].max()}
        drift: dict[str, Any] = {"env": env, "target": target}
        for who, r in pick.items():
            if who != "weakest":
                row |= _fields(who, r, ("label", "start_score", "n_seeds", "n_reached", *_REACH))
            drift |= _fields(who, r, ("label", "start_score", "n_seeds", "n_reached", "actor_rel_change", "kl_demo"))
            cka = [] if r is None else [r[c] for c in r.index if c.startswith("cka_demo/") and pd.notna(r[c])]
            drift |= {f"{who}_cka_first": cka[0] if cka else np.nan, f"{who}_cka_last": cka[-1] if cka else np.nan}
        out["gap"].append(row)
        out["drift"].append(drift)
        out["share"].append(_share_row(env, share, pick))
        out["ceg"].append(_ceg_row(env, ceg, pick["best"]))
    return {name: pd.DataFrame(rows) for name, rows in out.items()}


_REACH = ("steps", "steps_ci_low", "steps_ci_high", "flops", "flops_ci_low", "flops_ci_high")


def _fields(who: str, r: pd.Series | None, cols: Sequence[str]) -> dict[str, Any]:
    """{who_col: r[col]} (None / NaN where there is no such row or column)."""
    return {f"{who}_{c}": (None if c == "label" else np.nan) if r is None else r.get(c, np.nan) for c in cols}


def _share_row(env: str, share: pd.DataFrame, pick: dict[str, pd.Series | None]) -> dict[str, Any]:
    """The imitation share of the best and the weakest BC start at each one's largest budget."""
    row: dict[str, Any] = {"env": env}
    for who in ("best", "weakest"):
        r = pick[who]
        s = share[share["cell"] == r["cell"]] if r is not None and not share.empty else pd.DataFrame()
        top = s.loc[s["rl_steps"].idxmax()] if not s.empty else None
        row[f"{who}_label"] = None if r is None else r["label"]
        for c in ("rl_steps", "bc", "bc_rl", "share", "share_ci_low", "share_ci_high"):
            row[f"{who}_{c}"] = np.nan if top is None else top[c]
    return row


def _ceg_row(env: str, ceg: pd.DataFrame, best: pd.Series | None) -> dict[str, Any]:
    """The best BC start's row of the existing CEG table at its largest RL budget (NaN where there is none)."""
    row: dict[str, Any] = {"env": env, "label": None if best is None else best["label"]}
    c = ceg[(ceg["cell"] == best["cell"]) & ~ceg["start"]] if best is not None and not ceg.empty else pd.DataFrame()
    if c.empty:
        return row
    return row | c.loc[c["rl_steps"].idxmax()].drop(["env", "label", "cell", "frontier", "start"]).to_dict()
