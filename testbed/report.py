"""Sweep folders -> analysis -> figures (PNG), tables (CSV) and one self-contained HTML page plus Markdown.

    python -m testbed.report SWEEP_FOLDER [SWEEP_FOLDER ...] [--out DIR] [--no-wandb]

Writes into `<first folder>/report/` (or --out): index.html (figures embedded as base64 PNG), report.md
(the same tables, figures linked), one PNG per figure, tables/*.csv (the tidy checkpoint table included)
and summary.json (the headline numbers). The figures and tables also go to a wandb run of job type `report`
(offline unless WANDB_MODE or --wandb-mode says otherwise; --no-wandb skips it).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from testbed import analysis  # noqa: E402
from testbed.analysis import AXES, METRIC, Analysis  # noqa: E402

log = logging.getLogger(__name__)

DPI = 110
KIND_NAMES = {"bc_rl": "BC+RL", "scratch": "RL from scratch", "bc_only": "BC only"}
AXIS_LABELS = {"flops": "BC compute (FLOPs)", "transitions": "demonstration transitions"}


@dataclass
class Report:
    """What a report wrote: its folder, pages, figure files and tables."""

    out: Path
    figures: dict[str, Path] = field(default_factory=dict)  # figure name -> PNG
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # table name -> the numbers (raw)
    headline: list[dict[str, Any]] = field(default_factory=list)  # one row per BC+RL cell at its largest budget
    demonstrations: dict[str, dict[str, Any]] = field(default_factory=dict)  # env -> which sets seeds cloned

    @property
    def html(self) -> Path:
        return self.out / "index.html"

    @property
    def markdown(self) -> Path:
        return self.out / "report.md"


class NothingToReport(Exception):
    """The folders hold no job at all (a wrong path?)."""


def build(folders: Sequence[str | Path], out: str | Path | None = None, metric: str = METRIC,
          n_resamples: int = analysis.N_RESAMPLES, figures: Sequence[str] | None = None) -> Report:
    """Load the sweep folders, analyse them and write the report (`figures`: names in FIGURES, default all)."""
    roots = [Path(f) for f in folders]
    sweep = analysis.load(roots)
    if sweep.jobs.empty:
        raise NothingToReport(f"no results.json and no job folders under {', '.join(map(str, roots))}")
    result = analysis.analyse(sweep, metric, n_resamples)
    report = Report(out=Path(out) if out else roots[0] / "report")
    (report.out / "tables").mkdir(parents=True, exist_ok=True)
    report.tables = _raw_tables(result)
    report.headline = headline(result)
    report.demonstrations = demonstrations(result)
    for env in sorted(result.capability["env"].unique()) if not result.capability.empty else []:
        for name, draw in FIGURES.items():
            if figures is not None and name not in figures:
                continue
            fig = draw(result, env)
            if fig is not None:
                report.figures[f"{env}_{name}"] = _save(fig, report.out / f"{env}_{name}.png")
    for name, table in report.tables.items():
        _plain(table).to_csv(report.out / "tables" / f"{name}.csv", index=False)
    (report.out / "summary.json").write_text(json.dumps(_summary(roots, result, report), indent=2, default=str))
    report.html.write_text(render_html(roots, result, report))
    report.markdown.write_text(render_markdown(roots, result, report))
    return report


# ------------------------------------------------------------------------------------------------ figures


def capability_figure(a: Analysis, env: str) -> Figure | None:
    """Capability IQM with its 95% CI band against RL budget, BC levels and the expert level marked."""
    cap = a.capability[(a.capability["env"] == env) & a.capability["kind"].isin(["bc_rl", "scratch"])]
    if cap.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _colors(a, env)
    for label, g in cap.groupby("label", sort=False):
        g = g.sort_values("rl_steps")
        color = colors[label]
        name = f"{KIND_NAMES[g['kind'].iloc[0]]}: {label} (n={int(g['n_runs'].max())})"
        ax.plot(g["rl_steps"], g["iqm"], "o-", color=color, label=name)
        ax.fill_between(g["rl_steps"], g["iqm_ci_low"], g["iqm_ci_high"], color=color, alpha=0.2, lw=0)
        if g["kind"].iloc[0] == "bc_rl":
            ax.axhline(g["iqm"].iloc[0], color=color, ls=":", lw=1)
    _reference_levels(ax, a.metric)
    _budget_axis(ax, cap["rl_steps"], include_zero=True)
    ax.set_ylabel(_metric_label(a.metric) + " (IQM, 95% CI)")
    ax.set_title(f"{env}: capability vs RL budget (dotted: each BC start)")
    ax.legend(fontsize=7, loc="best")
    return fig


def frontier_figure(a: Analysis, env: str) -> Figure | None:
    """The imitation frontier on both axes, its BC snapshots, and every BC+RL point mapped onto it."""
    cells = a.frontier_cells[a.frontier_cells["env"] == env]
    if cells.empty:
        return None
    groups = list(cells.groupby("frontier", sort=False))
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.5 * len(groups)), squeeze=False)
    demos = sorted(cells["demos"].unique())
    cmap = plt.get_cmap("viridis", max(len(demos), 2))
    for row, (name, fc) in zip(axes, groups, strict=True):
        ceg = _gains(a)
        ceg = ceg[ceg["frontier"] == name] if not ceg.empty else ceg
        for ax, (axis, col) in zip(row, AXES.items(), strict=True):
            for i, d in enumerate(demos):
                g = fc[fc["demos"] == d]
                if g.empty:
                    continue
                seed_x = np.repeat(g[col].to_numpy(), g["n_seeds"].to_numpy())
                ax.scatter(seed_x, np.concatenate(g["scores"].to_list()), s=10, color=cmap(i), alpha=0.35)
                ax.scatter(g[col], g["score_iqm"], s=45, color=cmap(i), edgecolor="k", lw=0.5,
                           label=f"BC, {d} demo episodes (IQM)")
            frontier = a.frontiers[(name, axis)]
            ax.scatter(10**frontier.log_cost, frontier.measured, s=70, color="k", marker="x", lw=1,
                       label="best per cost, cross-fitted")
            ax.plot(10**frontier.log_cost, frontier.score, "k.-", lw=1.5, label="frontier fit (isotonic)")
            _mapped_points(ax, ceg, axis)
            ax.set_xscale("log")
            ax.set_xlabel(AXIS_LABELS[axis] + ", log scale")
            ax.set_ylabel(_metric_label(a.metric))
            ax.set_title(f"{name}: capability vs {AXIS_LABELS[axis]}")
            _reference_levels(ax, a.metric)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _mapped_points(ax: Axes, ceg: pd.DataFrame, axis: str) -> None:
    """BC+RL points at their own cost, an arrow to their equivalent cost on the frontier."""
    own, eq = {"flops": ("bc_flops", "flops_eq"), "transitions": ("demo_transitions", "transitions_eq")}[axis]
    censor = "ceg_censor" if axis == "flops" else "deg_censor"
    for i, (_, r) in enumerate(ceg.iterrows()):
        marker = {1: ">", -1: "<"}.get(int(r[censor]), "*")
        ax.annotate("", xy=(r[eq], r["score"]), xytext=(r[own], r["score"]),
                    arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 0.8})
        ax.scatter([r[own]], [r["score"]], s=25, color="tab:red", marker="s",
                   label="BC+RL at its own cost" if i == 0 else None)
        ax.scatter([r[eq]], [r["score"]], s=60, color="tab:red", marker=marker,
                   label="equivalent on the frontier (> / <: bound)" if i == 0 else None)


def ceg_figure(a: Analysis, env: str) -> Figure | None:
    """CEG (RL compute free) and cost-charged CEG against RL budget, with 95% CIs; triangles are bounds."""
    ceg = _gains(a)
    ceg = ceg[ceg["env"] == env] if not ceg.empty else ceg
    if ceg.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _colors(a, env)
    for label, g in ceg.groupby("label", sort=False):
        g = g.sort_values("rl_steps")
        for col, style, what in (("ceg", "-", "C_eq / C_BC"), ("ceg_charged", "--", "C_eq / (C_BC + C_RL)")):
            err = [g[col] - g[f"{col}_ci_low"], g[f"{col}_ci_high"] - g[col]]
            ax.errorbar(g["rl_steps"], g[col], yerr=np.clip(err, 0, None), ls=style, color=colors[label],
                        marker="o" if col == "ceg" else "s", mfc="none" if col != "ceg" else colors[label],
                        capsize=3, label=f"{label}: {what}")
            for sign, marker in ((1, "^"), (-1, "v")):
                bounds = g[g["ceg_censor"] == sign]
                ax.scatter(bounds["rl_steps"], bounds[col], s=90, color=colors[label], marker=marker)
    ax.axhline(1.0, color="grey", ls=":", lw=1, label="no gain")
    _log_y(ax)
    _budget_axis(ax, ceg["rl_steps"], include_zero=False)
    ax.set_ylabel("compute-equivalent gain (x, log scale)")
    ax.set_title(f"{env}: CEG vs RL budget (^: lower bound, v: upper bound)")
    ax.legend(fontsize=7)
    return fig


def matched_compute_figure(a: Analysis, env: str) -> Figure | None:
    """Capability against total FLOPs: BC per demonstration count, BC+RL and RL from scratch."""
    cap = a.capability[a.capability["env"] == env]
    if cap.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cells = a.frontier_cells[a.frontier_cells["env"] == env]
    demos = sorted(cells["demos"].unique())
    cmap = plt.get_cmap("viridis", max(len(demos), 2))
    for i, d in enumerate(demos):
        g = cells[cells["demos"] == d].sort_values("bc_flops")
        ax.plot(g["bc_flops"], g["score_iqm"], "o:", color=cmap(i), label=f"BC only, {d} demo episodes")
    colors = _colors(a, env)
    for label, g in cap[cap["kind"].isin(["bc_rl", "scratch"])].groupby("label", sort=False):
        g = g[g["total_flops"] > 0].sort_values("total_flops")
        err = np.clip([g["iqm"] - g["iqm_ci_low"], g["iqm_ci_high"] - g["iqm"]], 0, None)
        kind = g["kind"].iloc[0] if not g.empty else "bc_rl"
        ax.errorbar(g["total_flops"], g["iqm"], yerr=np.nan_to_num(err), fmt="s-" if kind == "bc_rl" else "^-",
                    color=colors[label], capsize=3, label=f"{KIND_NAMES[kind]}: {label}")
    _reference_levels(ax, a.metric)
    ax.set_xscale("log")
    ax.set_xlabel("total compute, BC + RL (FLOPs, log scale)")
    ax.set_ylabel(_metric_label(a.metric) + " (IQM)")
    ax.set_title(f"{env}: capability at matched total compute")
    ax.legend(fontsize=7)
    return fig


def drift_layers_figure(a: Analysis, env: str) -> Figure | None:
    """Relative weight change per layer against RL budget, one panel per BC+RL cell."""
    return _layer_panels(a, env, "rel_change", "relative weight change", log_y=True)


def cka_layers_figure(a: Analysis, env: str) -> Figure | None:
    """Linear CKA to the BC snapshot per hidden layer (solid: demonstration states, dashed: visited states)."""
    return _layer_panels(a, env, "cka", "linear CKA to the BC snapshot", log_y=False)


def _layer_panels(a: Analysis, env: str, what: str, ylabel: str, log_y: bool) -> Figure | None:
    layers = a.layers
    if layers.empty:
        return None
    layers = layers[(layers["env"] == env) & (layers["rl_init"] == "bc") & (layers["rl_steps"] > 0)]
    columns = [c for c in layers.columns if c.startswith("cka/")] if what == "cka" else [what]
    layers = layers.dropna(subset=[c for c in columns if c in layers.columns], how="all")
    if layers.empty or not set(columns) <= set(layers.columns):
        return None
    labels = list(dict.fromkeys(layers["label"]))
    fig, axes = plt.subplots(1, len(labels), figsize=(max(5.5 * len(labels), 7), 4.5), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels, strict=True):
        g = layers[layers["label"] == label]
        for j, (layer, lg) in enumerate(g.groupby("layer", sort=False)):
            lg = lg.sort_values("rl_steps")
            for col in columns:
                if lg[col].notna().any():
                    probe = col.split("/", 1)[1] if "/" in col else ""
                    ls = "--" if probe == "visited" or layer.startswith("critic/") else "-"
                    ax.plot(lg["rl_steps"], lg[col], ls, marker="o", ms=3, color=plt.get_cmap("tab10")(j % 10),
                            label=f"{layer} {probe}".strip())
        _budget_axis(ax, g["rl_steps"], include_zero=False)
        if log_y:
            _log_y(ax)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel(ylabel + (" (log scale)" if log_y else "") + ", IQM over seeds")
    title = ("relative weight change ||W - W_bc|| / ||W_bc|| per layer (dashed: critic)" if what == "rel_change"
             else "linear CKA to the BC snapshot per hidden layer (solid: demo states, dashed: visited states)")
    fig.suptitle(f"{env}: {title}", fontsize=10)
    fig.tight_layout()
    return fig


def gain_vs_drift_figure(a: Analysis, env: str) -> Figure | None:
    """Capability gain over the BC start against actor weight change and representation change."""
    t = a.tradeoff[a.tradeoff["env"] == env] if not a.tradeoff.empty else a.tradeoff
    if t.empty or "gain" not in t.columns:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = _colors(a, env)
    for ax, (col, xlabel, log_x) in zip(axes, (
            ("actor_rel_change", "actor relative weight change (log scale)", True),
            ("cka_demo", "mean linear CKA to BC, demonstration states", False)), strict=True):
        for label, g in t.groupby("label", sort=False):
            g = g.sort_values("rl_steps")
            err = np.clip([g["gain"] - g["gain_ci_low"], g["gain_ci_high"] - g["gain"]], 0, None)
            ax.errorbar(g[col], g["gain"], yerr=np.nan_to_num(err), fmt="o-", color=colors[label], capsize=3,
                        label=label)
            for _, r in g.iterrows():
                ax.annotate(f"{int(r['rl_steps']):,}", (r[col], r["gain"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        if log_x and (t[col] > 0).all():
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.axhline(0.0, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("capability gain over the BC start (IQM, 95% CI)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{env}: capability gain vs drift (labels: RL env steps)")
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[[Analysis, str], Figure | None]] = {
    "capability": capability_figure,
    "frontier": frontier_figure,
    "ceg": ceg_figure,
    "matched_compute": matched_compute_figure,
    "drift_layers": drift_layers_figure,
    "cka_layers": cka_layers_figure,
    "gain_vs_drift": gain_vs_drift_figure,
}


def _gains(a: Analysis) -> pd.DataFrame:
    """The CEG rows that are results: every BC+RL point past its start (the start's gain is 1 by construction)."""
    return a.ceg[~a.ceg["start"]] if not a.ceg.empty else a.ceg


def _colors(a: Analysis, env: str) -> dict[str, Any]:
    """One colour per cell of the env, the BC+RL and scratch cells first (BC-only cells are coloured by demos)."""
    cap = a.capability[a.capability["env"] == env]
    labels = dict.fromkeys([*cap.loc[cap["kind"] != "bc_only", "label"], *cap["label"]])
    return {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}


def _budget_axis(ax: Axes, steps: pd.Series, include_zero: bool) -> None:
    """RL budgets on a log axis (symlog, linear below the smallest budget, when 0 is shown), ticked at each."""
    positive = np.sort(steps[steps > 0].unique())
    if positive.size == 0:
        ax.set_xlabel("RL budget (env steps)")
        return
    if include_zero:
        ax.set_xscale("symlog", linthresh=float(positive[0]), linscale=0.5)
        ax.set_xlabel("RL budget (env steps; log scale, linear from 0 to the smallest budget)")
    else:
        ax.set_xscale("log")
        ax.set_xlabel("RL budget (env steps, log scale)")
    ticks = np.concatenate([[0] if include_zero else [], positive])
    ax.set_xticks(ticks, [_steps(t) for t in ticks])
    ax.minorticks_off()


def _log_y(ax: Axes) -> None:
    """Log y axis with plain-number tick labels (0.02, 0.5, 4, 30) rather than powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _steps(n: float) -> str:
    """Env steps for a tick: 0, 512, 10k, 1.5M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if n >= div and n % (div / 10) == 0:
            return f"{n / div:g}{unit}"
    return f"{int(n):,}"


def _reference_levels(ax: Axes, metric: str) -> None:
    if metric == METRIC:
        ax.axhline(1.0, color="goldenrod", ls="--", lw=1, label="expert")
        ax.axhline(0.0, color="grey", ls="--", lw=0.8, label="random")


def _metric_label(metric: str) -> str:
    return "normalized score (0 random, 1 expert)" if metric == METRIC else metric


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------- tables


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
        rows.append({
            "env": r["env"], "cell": r["label"], "rl_steps": int(r["rl_steps"]), "seeds": int(r["n_seeds"]),
            "BC": _ci(cap.loc[0, "iqm"], cap.loc[0, "iqm_ci_low"], cap.loc[0, "iqm_ci_high"]) if 0 in cap.index
            else "-",
            "BC+RL": _ci(cap.loc[r["rl_steps"], "iqm"], cap.loc[r["rl_steps"], "iqm_ci_low"],
                         cap.loc[r["rl_steps"], "iqm_ci_high"]),
            "gain": _ci(t.get("gain"), t.get("gain_ci_low"), t.get("gain_ci_high")),
            "CEG": _gain_text(r, "ceg"), "CEG cost-charged": _gain_text(r, "ceg_charged", "ceg"),
            "demo-equivalent gain": _gain_text(r, "deg"),
            "actor weight change": _num(t.get("actor_rel_change")), "CKA demo": _num(t.get("cka_demo")),
            "RL / BC FLOPs": _num(r["rl_flops"] / r["bc_flops"]),
        })
    return rows


def demonstrations(a: Analysis) -> dict[str, dict[str, Any]]:
    """Per env: which demonstrations its BC-started cells cloned (analysis.demonstration_sets), and in words."""
    if a.sweep.points.empty:
        return {}
    return {r["env"]: {"mode": r["mode"], "fixed_seeds": r["fixed_seeds"], "statement": _demonstrations_text(r)}
            for _, r in analysis.demonstration_sets(a.sweep.points).iterrows()}


def _demonstrations_text(r: pd.Series) -> str:
    fixed = ", ".join(map(str, r["fixed_seeds"]))
    parts = {"per_seed": "each seed its own set (demos.seed = seed)",
             "fixed": f"one fixed set (demos.seed = {fixed}) for all seeds",
             "unknown": "not recorded (results.json without demos.seed)",
             "mixed": f"mixed: each seed its own set in {r['cells_per_seed']} cell(s), a fixed set "
                      f"(demos.seed = {fixed or '-'}) in {r['cells_fixed']}; the cell labels show demos.seed"}
    return "demonstrations: " + parts[r["mode"]]


def _raw_tables(a: Analysis) -> dict[str, pd.DataFrame]:
    tables = {"points": a.sweep.points, "jobs": a.sweep.jobs, "capability": a.capability,
              "frontier_cells": a.frontier_cells.drop(columns=["scores"], errors="ignore"), "ceg": a.ceg,
              "matched_compute": a.matched, "scratch": a.scratch, "tradeoff": a.tradeoff, "layers": a.layers}
    if not a.frontier_cells.empty:
        tables["frontier_cells"] = tables["frontier_cells"].assign(fitted=[
            float(a.frontiers[(r["frontier"], "flops")](r["bc_flops"])) for _, r in a.frontier_cells.iterrows()])
    return tables


Table = tuple[str, str, pd.DataFrame]  # title, note, cells as strings


def display_tables(a: Analysis, report: Report) -> list[Table]:
    """(title, note, table of strings) for the page, in order; a table with nothing to show is left out."""
    tables = [_headline_table(report), _jobs_table(a), _problems_table(a), _capability_table(a),
              _frontier_table(a, report), _ceg_table(a), _matched_table(a), _scratch_table(a), _tradeoff_table(a),
              _layers_table(a)]
    return [t for t in tables if t is not None]


def _headline_table(report: Report) -> Table:
    return ("Headline: each BC+RL cell at its largest RL budget",
            "IQM over seeds with 95% bootstrap CIs. CEG = C_eq / C_BC; cost-charged = C_eq / (C_BC + C_RL); "
            ">= is a lower bound (above every capability BC measured), <= an upper bound.",
            pd.DataFrame(report.headline))


def _jobs_table(a: Analysis) -> Table:
    counts = a.sweep.jobs.fillna({"env": "?", "variant": "?"}).groupby(["env", "variant", "status"]).size()
    return ("Jobs", "Every results.json and job folder found; complete duplicates count once.",
            counts.rename("jobs").reset_index())


def _problems_table(a: Analysis) -> Table:
    problems = a.sweep.problems[["folder", "run_name", "status", "problem"]]
    return ("Jobs not in the analysis", "Failed, incomplete, unreadable, missing or duplicate jobs."
            if not problems.empty else "None: every job found is complete and included.", problems)


def _capability_table(a: Analysis) -> Table | None:
    cap = a.capability
    if cap.empty:
        return None
    return ("Capability per cell and RL budget", _metric_label(a.metric), pd.DataFrame({
        "env": cap["env"], "kind": cap["kind"].map(KIND_NAMES), "cell": cap["label"], "RL steps": cap["rl_steps"],
        "seeds": cap["n_runs"].astype(int), "IQM [95% CI]": _cis(cap, "iqm"), "mean [95% CI]": _cis(cap, "mean"),
        "return": cap["return_mean"].map(_num), "success": cap["success_rate"].map(_num),
        "BC FLOPs": cap["bc_flops"].map(_sci), "RL FLOPs": cap["rl_flops"].map(_sci)}))


def _frontier_table(a: Analysis, report: Report) -> Table | None:
    if a.frontier_cells.empty:
        return None
    f = report.tables["frontier_cells"]
    return ("Imitation frontier: BC snapshots", "One row per BC configuration; `fitted` is P_BC at its FLOPs "
            "(isotonic fit, linear in log-compute).", pd.DataFrame({
                "frontier": f["frontier"], "demo episodes": f["demos"], "BC grad steps": f["grad_steps"],
                "BC FLOPs": f["bc_flops"].map(_sci), "demo transitions": f["demo_transitions"].map(_int),
                "seeds": f["n_seeds"], "IQM": f["score_iqm"].map(_num), "fitted": f["fitted"].map(_num)}))


def _ceg_table(a: Analysis) -> Table | None:
    c = a.ceg
    if c.empty:
        return None
    rows = [r for _, r in c.iterrows()]
    return ("Compute-equivalent gain", "C_eq = P_BC^-1(P) on the frontier of the same env and demonstration "
            "source; DEG is the same on the demonstration-transitions axis. `start`: the cell's BC snapshot (RL "
            "steps 0), a point of the frontier itself, whose gain is 1 by construction.", pd.DataFrame({
                "env": c["env"], "cell": c["label"], "RL steps": c["rl_steps"], "seeds": c["n_seeds"],
                "P (IQM)": c["score"].map(_num), "C_BC": c["bc_flops"].map(_sci), "C_RL": c["rl_flops"].map(_sci),
                "C_eq": [_bound_sci(r) for r in rows], "CEG [95% CI]": [_gain_text(r, "ceg") for r in rows],
                "cost-charged [95% CI]": [_gain_text(r, "ceg_charged", "ceg") for r in rows],
                "DEG [95% CI]": [_gain_text(r, "deg") for r in rows]}))


def _matched_table(a: Analysis) -> Table | None:
    m = a.matched
    if m.empty:
        return None
    rows = [r for _, r in m.iterrows()]
    return ("Matched total compute: more demonstrations vs BC+RL", "Per demonstration count, the best BC-only "
            "configuration whose BC FLOPs do not exceed the BC+RL point's total.", pd.DataFrame({
                "env": m["env"], "BC+RL cell": m["label"], "RL steps": m["rl_steps"],
                "total FLOPs": m["total_flops"].map(_sci),
                "BC+RL [95% CI]": [_ci(r["score"], r["score_ci_low"], r["score_ci_high"]) for r in rows],
                "BC demos": m["bc_demos"], "BC grad steps": m["bc_grad_steps"], "BC FLOPs": m["bc_flops"].map(_sci),
                "BC (IQM)": m["bc_score"].map(_num), "difference": m["difference"].map(_num),
                "P(BC+RL > BC) [95% CI]": [_ci(r["prob_improvement"], r["prob_ci_low"], r["prob_ci_high"])
                                           for r in rows]}))


def _scratch_table(a: Analysis) -> Table | None:
    s = a.scratch
    if s.empty:
        return None
    return ("RL from scratch: budget to reach each BC / BC+RL capability", "The first scratch checkpoint whose "
            "IQM reaches the target; the need lies between the previous checkpoint and it.", pd.DataFrame({
                "env": s["env"], "target cell": s["label"], "target RL steps": s["rl_steps"],
                "target (IQM)": s["score"].map(_num), "scratch cell": s["scratch_label"],
                "scratch env steps needed": [_scratch_text(r) for _, r in s.iterrows()],
                "scratch / target total FLOPs": s["flops_ratio"].map(_num)}))


def _tradeoff_table(a: Analysis) -> Table | None:
    t = a.tradeoff
    if t.empty or "gain" not in t.columns:
        return None
    drift = [k for k in (*analysis.DRIFT_SUMMARY, "expert_loglik_change") if k in t.columns]
    return ("Capability gain vs drift", "Gain over each seed's own BC start; drift IQM over seeds.", pd.DataFrame({
        "env": t["env"], "cell": t["label"], "RL steps": t["rl_steps"], "gain [95% CI]": _cis(t, "gain"),
        **{k: t[k].map(_num) for k in drift}}))


def _layers_table(a: Analysis) -> Table | None:
    if a.layers.empty:
        return None
    lay = a.layers[(a.layers["rl_init"] == "bc") & (a.layers["rl_steps"] > 0)]
    if lay.empty:
        return None
    top = lay[lay["rl_steps"] == lay.groupby("cell")["rl_steps"].transform("max")]
    num = [c for c in top.columns if c not in ("env", "label", "cell", "rl_init", "rl_steps", "layer")]
    return ("Per-layer drift at the largest RL budget", "IQM over seeds; sparsity@tol is the fraction of "
            "parameters with |delta| <= tol (absolute).", pd.DataFrame({
                "env": top["env"], "cell": top["label"], "RL steps": top["rl_steps"], "layer": top["layer"],
                **{c: top[c].map(_num) for c in num}}))


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
            df[col] = df[col].map(lambda v: json.dumps(np.asarray(v).tolist()) if isinstance(
                v, list | tuple | np.ndarray) else v)
    return df


def _summary(folders: Sequence[Path], a: Analysis, report: Report) -> dict[str, Any]:
    return {"folders": [str(f) for f in folders], "metric": a.metric, "created": _now(),
            "jobs": len(a.sweep.jobs), "jobs_included": int(a.sweep.jobs["included"].sum()),
            "jobs_not_included": a.sweep.problems[["folder", "status", "problem"]].to_dict("records"),
            "headline": report.headline, "demonstrations": report.demonstrations,
            "figures": {k: str(v) for k, v in report.figures.items()},
            "ceg": _plain(a.ceg).astype(object).where(a.ceg.notna(), None).to_dict("records")}  # NaN: null


# -------------------------------------------------------------------------------------------------- pages

METHOD = """\
<b>Demonstrations</b>: with each seed its own set (demos.seed = seed, the default), the spread over seeds and
every CI include the luck of drawing the demonstrations; with one fixed set they hold for that set only. Cells
that differ in a fixed demos.seed are separate BC configurations of one frontier.
<b>Capability</b> is the IQM over seeds of the {metric}, with a stratified bootstrap 95% CI (testbed.stats).
<b>Imitation frontier</b> P_BC(C): every BC snapshot (the RL-step-0 checkpoint of every job that starts from BC,
BC-only or not) of the same env and demonstration source; at each distinct cost the best BC configuration (where
a cost has several: chosen on half of the seeds and scored on the other half, both ways, so that the seeds' luck
that makes a configuration look best does not also score it); weighted isotonic regression
(scipy.optimize.isotonic_regression) over increasing cost; linear interpolation in log10(cost) between fitted
points, no extrapolation.
<b>CEG</b> of a BC+RL point with capability P: C_eq = P_BC^-1(P), the least BC compute whose fitted capability
reaches P; CEG = C_eq / C_BC (RL compute free) and cost-charged C_eq / (C_BC + C_RL). Above the fit's best but
at or below a capability measured at some cost, C_eq is that cheapest cost (not before the fit's best); above
every measured capability, a lower bound (the largest BC compute measured); below the fit's lowest, an upper
bound. A cell's BC snapshot (RL steps 0) is its start, a point of the frontier itself, not a gain.
<b>CIs of the gains</b>: {n} bootstrap resamples of seeds within every cell (frontier configurations within each
cross-fitting half, and BC+RL cells, with the same draw where they share seeds), the frontier refitted on every
resample; percentile interval; an end marked &gt;= or &lt;= has more than 2.5% of its resamples censored.
See docs/report.md."""


def render_html(folders: Sequence[Path], a: Analysis, report: Report) -> str:
    """One self-contained page: figures as base64 PNG, tables, method."""
    parts = [f"<h1>testbed report</h1><p>{html.escape(', '.join(map(str, folders)))} &middot; {_now()} &middot; "
             f"{int(a.sweep.jobs['included'].sum())} of {len(a.sweep.jobs)} jobs in the analysis</p>"]
    if report.demonstrations:
        parts.append(f"<p><b>Setup</b>: {html.escape(_setup(report))}</p>")
    tables = display_tables(a, report)
    parts += [_html_table(*tables[0])]
    for name, path in report.figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(name)}: {html.escape(_caption(name))}</figcaption></figure>")
    parts += [_html_table(*t) for t in tables[1:]]
    parts.append(f"<h2>Method</h2><p>{METHOD.format(metric=_metric_label(a.metric), n=a.n_resamples)}</p>")
    style = ("body{font-family:sans-serif;max-width:1300px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:12px;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "th{background:#eee}img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#444}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>testbed report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _setup(report: Report) -> str:
    return "; ".join(f"{env}: {d['statement']}" for env, d in report.demonstrations.items()) + "."


def _html_table(title: str, note: str, df: pd.DataFrame) -> str:
    body = df.to_html(index=False, escape=True, na_rep="-") if not df.empty else ""
    return f"<h2>{html.escape(title)}</h2><p>{html.escape(note)}</p>{body}"


def render_markdown(folders: Sequence[Path], a: Analysis, report: Report) -> str:
    """The same tables in Markdown, figures linked as the PNG files beside it."""
    lines = [f"# testbed report\n\n{', '.join(map(str, folders))} · {_now()}\n"]
    if report.demonstrations:
        lines.append(f"**Setup**: {_setup(report)}\n")
    tables = display_tables(a, report)
    lines.append(_md_table(*tables[0]))
    lines += [f"![{name}]({path.name})\n\n*{name}: {_caption(name)}*\n" for name, path in report.figures.items()]
    lines += [_md_table(*t) for t in tables[1:]]
    method = METHOD.format(metric=_metric_label(a.metric), n=a.n_resamples)
    lines.append("## Method\n\n" + method.replace("<b>", "**").replace("</b>", "**").replace("&gt;", ">")
                 .replace("&lt;", "<") + "\n")
    return "\n".join(lines)


def _md_table(title: str, note: str, df: pd.DataFrame) -> str:
    out = [f"## {title}\n\n{note}\n"]
    if not df.empty:
        cells = [[str(c) for c in df.columns]] + [[("-" if _nan(v) else str(v)) for v in row]
                                                 for row in df.itertuples(index=False)]
        cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in cells]
        out += ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
        out += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(out) + "\n"


def _caption(name: str) -> str:
    """The docstring of the function that drew figure `<env>_<kind>`."""
    return next(((draw.__doc__ or "").strip() for kind, draw in FIGURES.items() if name.endswith(f"_{kind}")), "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------------------- wandb


def log_to_wandb(report: Report, folders: Sequence[Path], project: str = "testbed", mode: str = "offline") -> bool:
    """Log the report's figures and tables to a wandb run of job type `report`; False (with a warning) on failure.

    The run is grouped under the first sweep folder's name, as the sweep's training runs are.
    """
    try:
        import wandb

        group = Path(folders[0]).resolve().name
        run = wandb.init(project=project, name=f"report-{group}", group=group, job_type="report",
                         dir=report.out.resolve(), mode=mode,  # type: ignore[arg-type]
                         config={"folders": [str(f) for f in folders]}, reinit="create_new")
        run.log({f"report/{name}": wandb.Image(str(path)) for name, path in report.figures.items()})
        run.log({f"report/tables/{name}": wandb.Table(dataframe=_plain(t)) for name, t in report.tables.items()
                 if not t.empty and name != "points"})
        run.log({"report/page": wandb.Html(report.html.read_text())})
        run.summary.update({"headline": report.headline})
        run.finish()
    except Exception as exc:  # the report on disk is complete; wandb is a copy
        log.warning("logging the report to wandb failed (%s: %s); the report on disk is complete",
                    type(exc).__name__, exc)
        return False
    return True


# --------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m testbed.report FOLDER...` / `testbed-report FOLDER...` / `make report SWEEP=FOLDER`."""
    parser = argparse.ArgumentParser(prog="testbed-report", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="sweep folders; every results.json under them is read")
    parser.add_argument("--out", help="report folder (default: <first folder>/report)")
    parser.add_argument("--metric", default=METRIC, help=f"capability column of the checkpoints (default {METRIC})")
    parser.add_argument("--resamples", type=int, default=analysis.N_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True,
                        help="also log to a wandb run of job type `report` (default: on, offline like the jobs)")
    parser.add_argument("--wandb-project", default="testbed")
    parser.add_argument("--wandb-mode", default=os.environ.get("WANDB_MODE") or "offline",
                        choices=["offline", "online", "disabled"], help="default: $WANDB_MODE, else offline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = [repr(f) for f in args.folders if not f or not Path(f).is_dir()]
    if missing:
        print(f"testbed-report: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        report = build(args.folders, args.out, args.metric, args.resamples)
    except NothingToReport as exc:
        print(f"testbed-report: {exc}", file=sys.stderr)
        return 2
    if args.wandb:
        log_to_wandb(report, [Path(f) for f in args.folders], args.wandb_project, args.wandb_mode)
    problems = report.tables["jobs"].loc[~report.tables["jobs"]["included"]]
    print(f"report: {report.html}  ({len(report.figures)} figures; markdown {report.markdown})")
    for _, p in problems.iterrows():
        print(f"  not in the analysis: {p['folder']}: {p['problem']}")
    for row in report.headline:
        print(f"  {row['env']} {row['cell']} @ {row['rl_steps']:,} RL steps: BC {row['BC']} -> {row['BC+RL']}, "
              f"CEG {row['CEG']}, cost-charged {row['CEG cost-charged']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
