"""The scale study (testbed.analysis.scale) -> the report's scale section: its display tables (the size trends, the
headline answer; drift at a fixed RL budget and at a capability target, each beside the control's; CEG against
size), its raw tables for CSV and summary.json; its figures are in scale_figures.py. Shown only when the study's
BC+RL cells span more than one width (`scale.sizes_vary`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from testbed.analysis.scale import CONTROL, RATIO, Scale
from testbed.config import LR_REFERENCE_WIDTH
from testbed.report.gap import _reach, _records
from testbed.report.tables import Table, _ci, _gain_text, _int, _nan, _num, _sci

TITLE = "Scale: does a bigger network move less?"
INTRO = (
    "Per env, the learner's size (width: its widest hidden layer; depth: hidden layers; learning-rate rule: 'fixed', "
    f"the env's rates, or 'width', both rates times {LR_REFERENCE_WIDTH} / width) on the same expert and "
    "demonstrations. Beside every drift of the RL run stands its control's: BC continued from the same start for "
    "as many optimizer steps as PPO took, because wide networks move less relative to their start under any "
    "gradient training; RL / control is each seed's ratio, so a size trend in it is RL's own. Actor change: "
    "||W - W_bc|| / ||W_bc|| over the actor; moved@1e-02: the fraction of actor parameters that moved by more than "
    "1% of their layer's RMS at the start; KL demo: KL(pi_bc || pi) on demonstration states. Over seeds: IQM with a "
    "percentile bootstrap 95% CI. Sizes are compared at the largest RL budget every size of the env has, and when "
    "the normalized score first reaches the target (interpolated between checkpoints as in the cross-env section). "
    f"The lr_rule=fixed cell at width {LR_REFERENCE_WIDTH} counts for the width rule too, where that rule has no "
    "cell there: its rates are the same."
)
TREND_NAMES = {
    "rel_change": "actor change: RL",
    f"{CONTROL}rel_change": "actor change: control",
    f"{RATIO}rel_change": "actor change: RL / control",
    "moved@1e-02": "moved@1e-02: RL",
    f"{CONTROL}moved@1e-02": "moved@1e-02: control",
    f"{RATIO}moved@1e-02": "moved@1e-02: RL / control",
    "kl_demo": "KL demo: RL",
}


def scale_tables(s: Scale) -> list[Table]:
    """(title, note, table of strings) for the scale section, in order (the trends first: the headline answer);
    empty tables left out."""
    tables = [_trend_table(s), _budget_table(s), _target_table(s), _ceg_table(s)]
    return [t for t in tables if t is not None]


def _size(t: pd.DataFrame) -> dict[str, Any]:
    """The identity columns every per-size table starts with."""
    return {"env": t["env"], "depth": t["depth"], "lr rule": t["lr_rule"], "width": t["width"], "cell": t["label"]}


def _with_ci(r: pd.Series, col: str) -> str:
    """'value [low, high]' of column `col` (its `_ci_low`, `_ci_high` beside it); '-' where there is none."""
    return _ci(r.get(col), r.get(f"{col}_ci_low"), r.get(f"{col}_ci_high"))


def _drift(t: pd.DataFrame, name: str, label: str) -> dict[str, list[str]]:
    """Three columns: the RL run's `name`, the control's and their per-seed ratio, each IQM [95% CI]."""
    rows = [r for _, r in t.iterrows()]
    return {
        f"{label}: RL": [_with_ci(r, name) for r in rows],
        f"{label}: control": [_with_ci(r, f"{CONTROL}{name}") for r in rows],
        f"{label}: RL / control": [_with_ci(r, f"{RATIO}{name}") for r in rows],
    }


def _budgets_text(s: Scale) -> str:
    return ", ".join(f"{env} {_int(b)}" for env, b in s.budgets.items())


def _trend_table(s: Scale) -> Table | None:
    t = s.trend
    if t.empty:
        return None
    wide = t.pivot(
        index=["env", "depth", "lr_rule"], columns="column", values=["slope", "slope_ci_low", "slope_ci_high"]
    )
    keys = wide.index.to_frame(index=False)
    first = t.drop_duplicates(["env", "depth", "lr_rule"]).set_index(["env", "depth", "lr_rule"]).loc[wide.index]
    slopes = {
        name: [
            _ci(wide.loc[k, ("slope", col)], wide.loc[k, ("slope_ci_low", col)], wide.loc[k, ("slope_ci_high", col)])
            if col in wide["slope"].columns
            else "-"
            for k in wide.index
        ]
        for col, name in TREND_NAMES.items()
    }
    return (
        "Scale: does drift fall with width? (log-log slope against width)",
        f"Per env, depth and learning-rate rule, at the RL budget ({_budgets_text(s)} steps): the least-squares slope "
        "of log(IQM over seeds) against log(width), 95% CI from resampling seeds within each width. -0.5: falls as "
        "1 / sqrt(width); 0: flat. RL / control below 0: RL's drift falls faster with width than the control's, "
        "i.e. a bigger network moves less under RL than under as much imitation; a CI that spans 0 says no such "
        "difference is resolved. '-': fewer than two widths, or a value that is 0 somewhere.",
        pd.DataFrame(
            {
                "env": keys["env"],
                "depth": keys["depth"],
                "lr rule": keys["lr_rule"],
                "widths": [", ".join(map(str, w)) for w in first["widths"]],
                "seeds (fewest)": first["n_seeds"].to_numpy(),
                **slopes,
            }
        ),
    )


def _budget_table(s: Scale) -> Table | None:
    t = s.budget
    if t.empty:
        return None
    rows = [r for _, r in t.iterrows()]
    return (
        "Scale: drift at a fixed RL budget",
        f"Per env and size at the largest RL budget every size of the env has ({_budgets_text(s)} steps; the "
        "checkpoint read is the nearest at or above it). Optimizer steps: PPO's and the control's (they should "
        "match). IQM over seeds [95% CI]; RL / control is the IQM of each seed's ratio.",
        pd.DataFrame(
            _size(t)
            | {
                "RL steps": t["rl_steps"].map(_int),
                "seeds": t["n_seeds"],
                "optimizer steps RL / control": [
                    f"{_int(r['grad_steps'])} / {_int(r[f'{CONTROL}grad_steps'])}" for r in rows
                ],
                "BC capability": [_with_ci(r, "bc_score") for r in rows],
                "capability": [_with_ci(r, "score") for r in rows],
            }
            | _drift(t, "rel_change", "actor change")
            | _drift(t, "moved@1e-02", "moved@1e-02")
            | {"KL demo: RL / control": [f"{_num(r['kl_demo'])} / {_num(r[f'{CONTROL}kl_demo'])}" for r in rows]}
        ),
    )


def _target_table(s: Scale) -> Table | None:
    t = s.at_target
    if t.empty:
        return None
    rows = [r for _, r in t.iterrows()]
    return (
        f"Scale: drift when capability {_num(s.target)} is first reached",
        f"Per env and size: the RL env steps at which each seed's normalized score first reaches {_num(s.target)} "
        "(IQM over seeds with censored seeds as +inf, 95% CI; 'not within N': the IQM is censored, N the largest RL "
        "budget; 0 where the BC start is already there, with no drift) and the drift at that moment, IQM [95% CI] "
        "over the seeds that reached it; the control's at the same moment, RL / control per seed.",
        pd.DataFrame(
            _size(t)
            | {
                "BC capability": [_with_ci(r, "bc_score") for r in rows],
                f"RL steps to {_num(s.target)}": [_reach(r) for r in rows],
            }
            | _drift(t, "rel_change", "actor change")
            | _drift(t, "moved@1e-02", "moved@1e-02")
        ),
    )


def _ceg_table(s: Scale) -> Table | None:
    c = s.ceg
    if c.empty or "ceg" not in c.columns:
        return None
    rows = [r for _, r in c.iterrows()]
    ok = [not _nan(r.get("ceg_censor")) for r in rows]
    return (
        "Scale: compute-equivalent gain against size",
        "The CEG table's row of each size at the budget above (C_eq = P_BC^-1(P) on the env's imitation frontier, "
        "whose BC snapshots span every size: BC FLOPs grow with size). Is RL worth more or less compute for bigger "
        "imitators?",
        pd.DataFrame(
            _size(c)
            | {
                "RL steps": c["rl_steps"].map(_int),
                "P (IQM)": c["score"].map(_num),
                "C_BC": c["bc_flops"].map(_sci),
                "C_RL": c["rl_flops"].map(_sci),
                "CEG [95% CI]": [_gain_text(r, "ceg") if k else "-" for r, k in zip(rows, ok, strict=True)],
                "cost-charged [95% CI]": [
                    _gain_text(r, "ceg_charged", "ceg") if k else "-" for r, k in zip(rows, ok, strict=True)
                ],
            }
        ),
    )


# ------------------------------------------------------------------------------------------- raw tables


def raw_tables(s: Scale) -> dict[str, pd.DataFrame]:
    """The scale study's numbers for tables/*.csv and wandb (+inf: censored)."""
    return {
        "scale_budget": s.budget,
        "scale_target": s.at_target,
        "scale_trend": s.trend,
        "scale_ceg": s.ceg,
        "scale_seeds": s.seeds,
    }


def summary(s: Scale) -> dict[str, Any]:
    """summary.json's `scale`: the budgets and target, every table but the per-seed one as records (NaN as null,
    +inf as the string "inf")."""
    tables = {name: _records(t) for name, t in raw_tables(s).items() if name != "scale_seeds"}
    return {"rl_budgets": s.budgets, "target": s.target} | tables
