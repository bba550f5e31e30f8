"""The gap study (testbed.analysis.gap) -> the report's cross-env section: its display tables (one row per env per
question, then the full gap-to-cover and imitation-share tables), its raw tables for CSV and summary.json, and its
terminal lines; its two figures are in gap_figures.py. Shown only when the report covers more than one env."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from testbed.analysis.gap import MIN_SHARE_DENOMINATOR, Gap
from testbed.report.tables import Table, _ci, _gain_text, _int, _nan, _num, _sci

INTRO = (
    "Per env, RL from imitation starts of graded quality and from scratch. For each start and target level of the "
    "normalized score: the RL env steps (and FLOPs) at which each seed first reaches the target, interpolated "
    "between checkpoints linearly in log(steps) (linearly in steps between RL step 0 and the first checkpoint; "
    "FLOPs linearly in steps at that moment); 0 where the start already reaches it; 'not within N' (N: the largest "
    "RL budget) where no checkpoint does. Over seeds: IQM with censored seeds as +inf (so with 5 seeds the IQM is "
    "censored when 2 or more are) and a percentile bootstrap 95% CI over seeds ('> N': an infinite end). Drift at "
    "the target (actor relative weight change, linear CKA to the start per hidden layer and KL(pi_start || pi), on "
    "demonstration states) is interpolated at the same moment the same way, IQM over the seeds that reached it "
    "(their count beside it). RL from scratch is measured against its random initial weights. Imitation share = "
    "IQM(BC) / IQM(BC+RL) over the same seeds (a ratio of IQMs, paired bootstrap CI), undefined where the BC+RL "
    f"IQM is below {MIN_SHARE_DENOMINATOR}."
)


def cross_env_tables(gap: Gap) -> list[Table]:
    """(title, note, table of strings) for the cross-env section, in order; empty tables left out."""
    x = gap.cross_env
    tables = [
        _gap_summary(x.get("gap", pd.DataFrame())),
        _drift_summary(x.get("drift", pd.DataFrame())),
        _share_summary(x.get("share", pd.DataFrame())),
        _ceg_summary(x.get("ceg", pd.DataFrame())),
        _frontier_summary(x.get("frontier", pd.DataFrame())),
        _gap_full(gap.gap),
        _share_full(gap.share),
    ]
    return [t for t in tables if t is not None]


def _steps(value: Any, n: Any, flops: bool = False) -> str:
    """A reaching cost: '12,345', '0', or 'not within N' when censored (+inf)."""
    if _nan(value):
        return "-"
    if math.isinf(float(value)):
        return f"not within {_int(n)} steps" if not flops else "not reached"
    return _sci(value) if flops else _int(value)


def _bound(value: Any, n: Any, flops: bool) -> str:
    if math.isinf(float(value)):
        return f"> {_int(n)}" if not flops else "> budget"
    return _sci(value) if flops else _int(value)


def _reach(r: pd.Series | dict[str, Any], prefix: str = "", col: str = "steps", n_col: str = "max_steps") -> str:
    """'IQM [low, high] (k/n reached)' for steps or FLOPs; the CI left out where there is none."""
    get = r.get
    value, low, high = get(f"{prefix}{col}"), get(f"{prefix}{col}_ci_low"), get(f"{prefix}{col}_ci_high")
    flops, n = col == "flops", get(n_col)
    if value is None or _nan(value):
        return "-"
    text = _steps(value, n, flops)
    if low is not None and not (_nan(low) or _nan(high) or math.isinf(float(low))):  # none if all are censored
        text += f" [{_bound(low, n, flops)}, {_bound(high, n, flops)}]"
    reached, seeds = get(f"{prefix}n_reached"), get(f"{prefix}n_seeds")
    if not flops and reached is not None and seeds is not None and not (_nan(reached) or _nan(seeds)):
        text += f" ({int(reached)}/{int(seeds)} reached)"
    return text


def _start(r: pd.Series, who: str) -> str:
    label = r.get(f"{who}_label")
    return "-" if label is None or _nan(label) else f"{label} ({_num(r.get(f'{who}_start_score'))})"


def _gap_summary(x: pd.DataFrame) -> Table | None:
    if x.empty:
        return None
    rows = [r for _, r in x.iterrows()]
    target = _num(x["target"].iloc[0])
    return (
        f"Cross-env: RL needed to reach {target}",
        "One row per env. Start capability: the BC starts' normalized score at RL step 0 (IQM over seeds); the best "
        "start is the one with the highest. RL env steps and FLOPs to first reach the target: IQM [95% CI].",
        pd.DataFrame(
            {
                "env": x["env"],
                "BC starts": x["n_starts"],
                "start capability (range)": [f"{_num(r['start_min'])} to {_num(r['start_max'])}" for r in rows],
                "best start (capability)": [_start(r, "best") for r in rows],
                "RL steps from the best start": [_reach(r, "best_", n_col="max_steps") for r in rows],
                "RL steps from scratch": [_reach(r, "scratch_", n_col="max_steps") for r in rows],
                "RL FLOPs, best start": [_reach(r, "best_", "flops") for r in rows],
                "RL FLOPs, scratch": [_reach(r, "scratch_", "flops") for r in rows],
            }
        ),
    )


def _drift_text(r: pd.Series, who: str) -> str:
    value = r.get(f"{who}_actor_rel_change")
    if value is None or _nan(value):
        return "-"
    return f"{_num(value)} ({int(r[f'{who}_n_reached'])}/{int(r[f'{who}_n_seeds'])} seeds)"


def _drift_summary(x: pd.DataFrame) -> Table | None:
    if x.empty:
        return None
    rows = [r for _, r in x.iterrows()]
    target = _num(x["target"].iloc[0])
    return (
        f"Cross-env: drift at the moment {target} is reached",
        "Actor relative weight change ||W - W_start|| / ||W_start|| (IQM over the seeds that reached the target), "
        "linear CKA to the start on demonstration states (first / last hidden layer) and KL(pi_start || pi) on "
        "demonstration states. From scratch: against the random initial weights.",
        pd.DataFrame(
            {
                "env": x["env"],
                "best start": [_start(r, "best") for r in rows],
                "actor change, best start": [_drift_text(r, "best") for r in rows],
                "CKA first / last layer, best start": [
                    f"{_num(r['best_cka_first'])} / {_num(r['best_cka_last'])}" for r in rows
                ],
                "KL, best start": x["best_kl_demo"].map(_num),
                "weakest start": [_start(r, "weakest") for r in rows],
                "actor change, weakest start": [_drift_text(r, "weakest") for r in rows],
                "actor change, scratch": [_drift_text(r, "scratch") for r in rows],
            }
        ),
    )


def _share_text(r: pd.Series, who: str) -> str:
    if _nan(r.get(f"{who}_rl_steps")):
        return "-"
    share = _ci(r[f"{who}_share"], r[f"{who}_share_ci_low"], r[f"{who}_share_ci_high"])
    return (
        f"{share} (BC {_num(r[f'{who}_bc'])} / BC+RL {_num(r[f'{who}_bc_rl'])} at {_int(r[f'{who}_rl_steps'])} steps)"
    )


def _share_summary(x: pd.DataFrame) -> Table | None:
    if x.empty:
        return None
    rows = [r for _, r in x.iterrows()]
    return (
        "Cross-env: how much of the capability is imitation",
        "Imitation share IQM(BC) / IQM(BC+RL) at each start's largest RL budget, 95% paired bootstrap CI.",
        pd.DataFrame(
            {
                "env": x["env"],
                "best start": x["best_label"].fillna("-"),
                "share, best start": [_share_text(r, "best") for r in rows],
                "weakest start": x["weakest_label"].fillna("-"),
                "share, weakest start": [_share_text(r, "weakest") for r in rows],
            }
        ),
    )


def _ceg_summary(x: pd.DataFrame) -> Table | None:
    if x.empty or "ceg" not in x.columns:
        return None
    rows = [r for _, r in x.iterrows()]
    ok = [not _nan(r.get("ceg_censor")) for r in rows]
    return (
        "Cross-env: compute-equivalent gain of the best start",
        "The CEG table's row (C_eq = P_BC^-1(P) on the env's imitation frontier) of each env's best BC start at its "
        "largest RL budget.",
        pd.DataFrame(
            {
                "env": x["env"],
                "best start": x["label"].fillna("-"),
                "RL steps": x["rl_steps"].map(_int),
                "P (IQM)": x["score"].map(_num),
                "CEG [95% CI]": [_gain_text(r, "ceg") if k else "-" for r, k in zip(rows, ok, strict=True)],
                "cost-charged [95% CI]": [
                    _gain_text(r, "ceg_charged", "ceg") if k else "-" for r, k in zip(rows, ok, strict=True)
                ],
            }
        ),
    )


def _frontier_summary(x: pd.DataFrame) -> Table | None:
    if x.empty:
        return None
    has_rl = "bc_rl_score" in x.columns
    return (
        "Cross-env: how far imitation alone goes",
        "The best BC configuration of each env (IQM over seeds; the BC-only jobs extend the frontier with more "
        "demonstrations and BC steps) against the best BC+RL point (any start, any budget). Where BC's best reaches "
        "BC+RL's, the frontier extends past every BC+RL point and no CEG is censored for want of BC.",
        pd.DataFrame(
            {
                "env": x["env"],
                "best BC (of N configurations)": [f"{r['bc_label']} ({int(r['bc_configs'])})" for _, r in x.iterrows()],
                "BC capability": x["bc_score"].map(_num),
                "BC FLOPs": x["bc_flops"].map(lambda v: f"{v:.3g}"),
                "best BC+RL": [
                    f"{r['bc_rl_label']} @ {_int(r['bc_rl_steps'])}"
                    if has_rl and isinstance(r["bc_rl_label"], str)
                    else "-"
                    for _, r in x.iterrows()
                ],
                "BC+RL capability": x["bc_rl_score"].map(_num) if has_rl else "-",
                "BC reaches it": x["bc_covers"].map(lambda v: "yes" if v is True else "no" if v is False else "-")
                if has_rl
                else "-",
            }
        ),
    )


def _start_name(r: pd.Series) -> str:
    if r["kind"] != "scratch":
        return str(r["label"])
    return "RL from scratch" if r["label"] == "scratch" else f"RL from scratch: {r['label']}"


def _cka_text(r: pd.Series) -> str:
    cols = [c for c in r.index if c.startswith("cka_demo/") and not _nan(r[c])]
    return ", ".join(f"{c.split('/', 1)[1]} {_num(r[c])}" for c in cols) or "-"


def _gap_full(g: pd.DataFrame) -> Table | None:
    if g.empty:
        return None
    rows = [r for _, r in g.iterrows()]
    return (
        "Gap to cover: RL steps and FLOPs to first reach each target, and the drift there",
        "Per env, start and target; IQM over seeds [95% CI]; drift: IQM over the seeds that reached the target.",
        pd.DataFrame(
            {
                "env": g["env"],
                "start": [_start_name(r) for r in rows],
                "start capability": g["start_score"].map(_num),
                "target": g["target"].map(_num),
                "RL steps": [_reach(r) for r in rows],
                "RL FLOPs": [_reach(r, col="flops") for r in rows],
                "actor change": g.get("actor_rel_change", pd.Series(np.nan, index=g.index)).map(_num),
                "CKA demo": [_cka_text(r) for r in rows],
                "KL demo": g.get("kl_demo", pd.Series(np.nan, index=g.index)).map(_num),
            }
        ),
    )


def _share_full(s: pd.DataFrame) -> Table | None:
    if s.empty:
        return None
    return (
        "Imitation share per start and RL budget",
        f"IQM(BC) / IQM(BC+RL) over the same seeds, paired bootstrap 95% CI; '-' where BC+RL's IQM is below "
        f"{MIN_SHARE_DENOMINATOR}.",
        pd.DataFrame(
            {
                "env": s["env"],
                "start": s["label"],
                "RL steps": s["rl_steps"].map(_int),
                "seeds": s["n_seeds"],
                "BC (IQM)": s["bc"].map(_num),
                "BC+RL (IQM)": s["bc_rl"].map(_num),
                "share [95% CI]": [_ci(r["share"], r["share_ci_low"], r["share_ci_high"]) for _, r in s.iterrows()],
            }
        ),
    )


def console_lines(gap: Gap) -> list[str]:
    """One line per env for the terminal: RL steps to the target from the best start and from scratch."""
    x = gap.cross_env.get("gap", pd.DataFrame())
    return [
        f"{r['env']}: RL steps to {_num(r['target'])} from the best start ({r['best_label']}): "
        f"{_reach(r, 'best_')}; from scratch: {_reach(r, 'scratch_')}"
        for _, r in x.iterrows()
    ]


# ------------------------------------------------------------------------------------------- raw tables


def raw_tables(gap: Gap) -> dict[str, pd.DataFrame]:
    """The gap study's numbers for tables/*.csv and wandb (+inf: censored)."""
    return {"gap_reach": gap.reach, "gap": gap.gap, "gap_share": gap.share} | {
        f"cross_env_{name}": t for name, t in gap.cross_env.items()
    }


def summary(gap: Gap) -> dict[str, Any]:
    """summary.json's `cross_env`: every table as records; NaN as null, +inf (censored) as the string "inf"."""
    return {name: _records(t) for name, t in raw_tables(gap).items() if name != "gap_reach"}


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    def plain(v: Any) -> Any:
        if isinstance(v, float | np.floating):
            return None if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else float(v)
        return v.item() if isinstance(v, np.generic) else v

    return [{k: plain(v) for k, v in row.items()} for row in df.to_dict("records")]
