"""Analysis -> tables: the headline rows, which demonstrations each env's seeds cloned, the raw tables (CSV and
wandb), and the page's display tables as strings, with the number formatting they share."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from testbed import analysis
from testbed.analysis import METRIC, Analysis

if TYPE_CHECKING:
    from testbed.report import Report

KIND_NAMES = {"bc_rl": "BC+RL", "scratch": "RL from scratch", "bc_only": "BC only"}


def _gains(a: Analysis) -> pd.DataFrame:
    """The CEG rows that are results: every BC+RL point past its start (the start's gain is 1 by construction)."""
    return a.ceg[~a.ceg["start"]] if not a.ceg.empty else a.ceg


def _metric_label(metric: str) -> str:
    return "normalized score (0 random, 1 expert)" if metric == METRIC else metric


def headline(a: Analysis) -> list[dict[str, Any]]:
    """Per BC+RL cell at its largest budget: capability, gain, CEG with CIs and drift."""
    gains = _gains(a)
    if gains.empty:
        return []
    top = gains.loc[gains.groupby("cell")["rl_steps"].idxmax()]
    rows = []
    for _, r in top.iterrows():
        cap = a.capability[(a.capability["cell"] == r["cell"])].set_index("rl_steps")
        trade = a.tradeoff[(a.tradeoff["cell"] == r["cell"]) & (a.tradeoff["rl_steps"] == r["rl_steps"])]
        t = trade.iloc[0] if not trade.empty else pd.Series(dtype=float)
        rows.append(
            {
                "env": r["env"],
                "cell": r["label"],
                "rl_steps": int(r["rl_steps"]),
                "seeds": int(r["n_seeds"]),
                "BC": _ci(cap.loc[0, "iqm"], cap.loc[0, "iqm_ci_low"], cap.loc[0, "iqm_ci_high"])
                if 0 in cap.index
                else "-",
                "BC+RL": _ci(
                    cap.loc[r["rl_steps"], "iqm"],
                    cap.loc[r["rl_steps"], "iqm_ci_low"],
                    cap.loc[r["rl_steps"], "iqm_ci_high"],
                ),
                "gain": _ci(t.get("gain"), t.get("gain_ci_low"), t.get("gain_ci_high")),
                "CEG": _gain_text(r, "ceg"),
                "CEG cost-charged": _gain_text(r, "ceg_charged", "ceg"),
                "demo-equivalent gain": _gain_text(r, "deg"),
                "actor weight change": _num(t.get("actor_rel_change")),
                "CKA demo": _num(t.get("cka_demo")),
                "RL / BC FLOPs": _num(r["rl_flops"] / r["bc_flops"]),
            }
        )
    return rows


def demonstrations(a: Analysis) -> dict[str, dict[str, Any]]:
    """Per env: which demonstrations its BC-started cells cloned (analysis.demonstration_sets), and in words."""
    if a.sweep.points.empty:
        return {}
    return {
        r["env"]: {"mode": r["mode"], "fixed_seeds": r["fixed_seeds"], "statement": _demonstrations_text(r)}
        for _, r in analysis.demonstration_sets(a.sweep.points).iterrows()
    }


def _demonstrations_text(r: pd.Series) -> str:
    fixed = ", ".join(map(str, r["fixed_seeds"]))
    parts = {
        "per_seed": "each seed its own set (demos.seed = seed)",
        "fixed": f"one fixed set (demos.seed = {fixed}) for all seeds",
        "unknown": "not recorded (results.json without demos.seed)",
        "mixed": f"mixed: each seed its own set in {r['cells_per_seed']} cell(s), a fixed set "
        f"(demos.seed = {fixed or '-'}) in {r['cells_fixed']}; the cell labels show demos.seed",
    }
    return "demonstrations: " + parts[r["mode"]]


def _raw_tables(a: Analysis) -> dict[str, pd.DataFrame]:
    tables = {
        "points": a.sweep.points,
        "jobs": a.sweep.jobs,
        "capability": a.capability,
        "frontier_cells": a.frontier_cells.drop(columns=["scores"], errors="ignore"),
        "ceg": a.ceg,
        "matched_compute": a.matched,
        "scratch": a.scratch,
        "tradeoff": a.tradeoff,
        "layers": a.layers,
    }
    if not a.frontier_cells.empty:
        tables["frontier_cells"] = tables["frontier_cells"].assign(
            fitted=[float(a.frontiers[(r["frontier"], "flops")](r["bc_flops"])) for _, r in a.frontier_cells.iterrows()]
        )
    return tables


Table = tuple[str, str, pd.DataFrame]  # title, note, cells as strings


def display_tables(a: Analysis, report: Report) -> list[Table]:
    """(title, note, table of strings) for the page, in order; a table with nothing to show is left out."""
    tables = [
        _headline_table(report),
        _jobs_table(a),
        _problems_table(a),
        _capability_table(a),
        _frontier_table(a, report),
        _ceg_table(a),
        _matched_table(a),
        _scratch_table(a),
        _tradeoff_table(a),
        _layers_table(a),
    ]
    return [t for t in tables if t is not None]


def _headline_table(report: Report) -> Table:
    return (
        "Headline: each BC+RL cell at its largest RL budget",
        "IQM over seeds with 95% bootstrap CIs. CEG = C_eq / C_BC; cost-charged = C_eq / (C_BC + C_RL); "
        ">= is a lower bound (above every capability BC measured), <= an upper bound.",
        pd.DataFrame(report.headline),
    )


def _jobs_table(a: Analysis) -> Table:
    counts = a.sweep.jobs.fillna({"env": "?", "variant": "?"}).groupby(["env", "variant", "status"]).size()
    return (
        "Jobs",
        "Every results.json and job folder found; complete duplicates count once.",
        counts.rename("jobs").reset_index(),
    )


def _problems_table(a: Analysis) -> Table:
    problems = a.sweep.problems[["folder", "run_name", "status", "problem"]]
    return (
        "Jobs not in the analysis",
        "Failed, incomplete, unreadable, missing or duplicate jobs."
        if not problems.empty
        else "None: every job found is complete and included.",
        problems,
    )


def _capability_table(a: Analysis) -> Table | None:
    cap = a.capability
    if cap.empty:
        return None
    return (
        "Capability per cell and RL budget",
        _metric_label(a.metric),
        pd.DataFrame(
            {
                "env": cap["env"],
                "kind": cap["kind"].map(KIND_NAMES),
                "cell": cap["label"],
                "RL steps": cap["rl_steps"],
                "seeds": cap["n_runs"].astype(int),
                "IQM [95% CI]": _cis(cap, "iqm"),
                "mean [95% CI]": _cis(cap, "mean"),
                "return": cap["return_mean"].map(_num),
                "success": cap["success_rate"].map(_num),
                "BC FLOPs": cap["bc_flops"].map(_sci),
                "RL FLOPs": cap["rl_flops"].map(_sci),
            }
        ),
    )


def _frontier_table(a: Analysis, report: Report) -> Table | None:
    if a.frontier_cells.empty:
        return None
    f = report.tables["frontier_cells"]
    return (
        "Imitation frontier: BC snapshots",
        "One row per BC configuration; `fitted` is P_BC at its FLOPs (isotonic fit, linear in log-compute).",
        pd.DataFrame(
            {
                "frontier": f["frontier"],
                "demo episodes": f["demos"],
                "BC grad steps": f["grad_steps"],
                "BC FLOPs": f["bc_flops"].map(_sci),
                "demo transitions": f["demo_transitions"].map(_int),
                "seeds": f["n_seeds"],
                "IQM": f["score_iqm"].map(_num),
                "fitted": f["fitted"].map(_num),
            }
        ),
    )


def _ceg_table(a: Analysis) -> Table | None:
    c = a.ceg
    if c.empty:
        return None
    rows = [r for _, r in c.iterrows()]
    return (
        "Compute-equivalent gain",
        "C_eq = P_BC^-1(P) on the frontier of the same env and demonstration "
        "source; DEG is the same on the demonstration-transitions axis. `start`: the cell's BC snapshot (RL "
        "steps 0), a point of the frontier itself, whose gain is 1 by construction.",
        pd.DataFrame(
            {
                "env": c["env"],
                "cell": c["label"],
                "RL steps": c["rl_steps"],
                "seeds": c["n_seeds"],
                "P (IQM)": c["score"].map(_num),
                "C_BC": c["bc_flops"].map(_sci),
                "C_RL": c["rl_flops"].map(_sci),
                "C_eq": [_bound_sci(r) for r in rows],
                "CEG [95% CI]": [_gain_text(r, "ceg") for r in rows],
                "cost-charged [95% CI]": [_gain_text(r, "ceg_charged", "ceg") for r in rows],
                "DEG [95% CI]": [_gain_text(r, "deg") for r in rows],
            }
        ),
    )


def _matched_table(a: Analysis) -> Table | None:
    m = a.matched
    if m.empty:
        return None
    rows = [r for _, r in m.iterrows()]
    return (
        "Matched total compute: more demonstrations vs BC+RL",
        "Per demonstration count, the best BC-only configuration whose BC FLOPs do not exceed the BC+RL point's total.",
        pd.DataFrame(
            {
                "env": m["env"],
                "BC+RL cell": m["label"],
                "RL steps": m["rl_steps"],
                "total FLOPs": m["total_flops"].map(_sci),
                "BC+RL [95% CI]": [_ci(r["score"], r["score_ci_low"], r["score_ci_high"]) for r in rows],
                "BC demos": m["bc_demos"],
                "BC grad steps": m["bc_grad_steps"],
                "BC FLOPs": m["bc_flops"].map(_sci),
                "BC (IQM)": m["bc_score"].map(_num),
                "difference": m["difference"].map(_num),
                "P(BC+RL > BC) [95% CI]": [
                    _ci(r["prob_improvement"], r["prob_ci_low"], r["prob_ci_high"]) for r in rows
                ],
            }
        ),
    )


def _scratch_table(a: Analysis) -> Table | None:
    s = a.scratch
    if s.empty:
        return None
    return (
        "RL from scratch: budget to reach each BC / BC+RL capability",
        "The first scratch checkpoint whose "
        "IQM reaches the target; the need lies between the previous checkpoint and it.",
        pd.DataFrame(
            {
                "env": s["env"],
                "target cell": s["label"],
                "target RL steps": s["rl_steps"],
                "target (IQM)": s["score"].map(_num),
                "scratch cell": s["scratch_label"],
                "scratch env steps needed": [_scratch_text(r) for _, r in s.iterrows()],
                "scratch / target total FLOPs": s["flops_ratio"].map(_num),
            }
        ),
    )


def _tradeoff_table(a: Analysis) -> Table | None:
    t = a.tradeoff
    if t.empty or "gain" not in t.columns:
        return None
    drift = [k for k in (*analysis.DRIFT_SUMMARY, "expert_loglik_change") if k in t.columns]
    return (
        "Capability gain vs drift",
        "Gain over each seed's own BC start; drift IQM over seeds.",
        pd.DataFrame(
            {
                "env": t["env"],
                "cell": t["label"],
                "RL steps": t["rl_steps"],
                "gain [95% CI]": _cis(t, "gain"),
                **{k: t[k].map(_num) for k in drift},
            }
        ),
    )


def _layers_table(a: Analysis) -> Table | None:
    if a.layers.empty:
        return None
    lay = a.layers[(a.layers["rl_init"] == "bc") & (a.layers["rl_steps"] > 0)]
    if lay.empty:
        return None
    top = lay[lay["rl_steps"] == lay.groupby("cell")["rl_steps"].transform("max")]
    num = [c for c in top.columns if c not in ("env", "label", "cell", "rl_init", "rl_steps", "layer")]
    return (
        "Per-layer drift at the largest RL budget",
        "IQM over seeds; sparsity@tol is the fraction of parameters with |delta| <= tol (absolute).",
        pd.DataFrame(
            {
                "env": top["env"],
                "cell": top["label"],
                "RL steps": top["rl_steps"],
                "layer": top["layer"],
                **{c: top[c].map(_num) for c in num},
            }
        ),
    )


def _ci(value: Any, low: Any, high: Any) -> str:
    if value is None or _nan(value):
        return "-"
    return _num(value) if _nan(low) or _nan(high) else f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _cis(df: pd.DataFrame, col: str) -> list[str]:
    return [_ci(r[col], r[f"{col}_ci_low"], r[f"{col}_ci_high"]) for _, r in df.iterrows()]


def _gain_text(r: pd.Series, col: str, censor_col: str | None = None) -> str:
    """'4.02 [3.1, 5.3]', '>= 12.3 [3.1, >= 12.3]' for a lower bound, '<= 0.5 [...]' for an upper one; 'start'
    for a cell's BC snapshot."""
    if r.get("start", False):
        return "start"
    c = censor_col or col
    mark = {1: ">= ", -1: "<= "}.get(int(r[f"{c}_censor"]), "")
    low = ("<= " if r[f"{c}_ci_low_censored"] else "") + _num(r[f"{col}_ci_low"])
    high = (">= " if r[f"{c}_ci_high_censored"] else "") + _num(r[f"{col}_ci_high"])
    return f"{mark}{_num(r[col])} [{low}, {high}]"


def _bound_sci(r: pd.Series) -> str:
    return {1: ">= ", -1: "<= "}.get(int(r["ceg_censor"]), "") + _sci(r["flops_eq"])


def _scratch_text(r: pd.Series) -> str:
    if r["reached"] and r["scratch_steps"] == 0:
        return "0 (the initial policy already reaches it)"
    if r["reached"]:
        return f"{int(r['scratch_steps_after']):,} < steps <= {int(r['scratch_steps']):,}"
    return f"not reached within {int(r['scratch_max_steps']):,} (best {_num(r['scratch_best_score'])})"


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float | np.floating) and math.isnan(x))


def _num(x: Any) -> str:
    if _nan(x):
        return "-"
    x = float(x)
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def _sci(x: Any) -> str:
    return "-" if _nan(x) else f"{float(x):.3g}" if float(x) < 1e4 else f"{float(x):.2e}"


def _int(x: Any) -> str:
    return "-" if _nan(x) else f"{int(round(float(x))):,}"


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Lists and arrays as JSON strings, so a table writes to CSV (and to wandb) cleanly."""
    df = df.copy()
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, list | tuple | np.ndarray)).any():
            df[col] = df[col].map(
                lambda v: json.dumps(np.asarray(v).tolist()) if isinstance(v, list | tuple | np.ndarray) else v
            )
    return df
