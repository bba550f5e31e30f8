"""Analysis -> figures: one function per figure (a matplotlib Figure, or None where the env has nothing to
draw), `FIGURES` naming them, and the axis helpers they share.

Draws with the matplotlib backend that is set: the report's CLI (__main__.py) sets Agg; importing this does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from testbed.analysis import AXES, METRIC, Analysis
from testbed.report.tables import KIND_NAMES, _gains, _metric_label

DPI = 110
AXIS_LABELS = {"flops": "BC compute (FLOPs)", "transitions": "demonstration transitions"}


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
                ax.scatter(
                    g[col],
                    g["score_iqm"],
                    s=45,
                    color=cmap(i),
                    edgecolor="k",
                    lw=0.5,
                    label=f"BC, {d} demo episodes (IQM)",
                )
            frontier = a.frontiers[(name, axis)]
            ax.scatter(
                10**frontier.log_cost,
                frontier.measured,
                s=70,
                color="k",
                marker="x",
                lw=1,
                label="best per cost, cross-fitted",
            )
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
        ax.annotate(
            "",
            xy=(r[eq], r["score"]),
            xytext=(r[own], r["score"]),
            arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 0.8},
        )
        ax.scatter(
            [r[own]], [r["score"]], s=25, color="tab:red", marker="s", label="BC+RL at its own cost" if i == 0 else None
        )
        ax.scatter(
            [r[eq]],
            [r["score"]],
            s=60,
            color="tab:red",
            marker=marker,
            label="equivalent on the frontier (> / <: bound)" if i == 0 else None,
        )


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
            ax.errorbar(
                g["rl_steps"],
                g[col],
                yerr=np.clip(err, 0, None),
                ls=style,
                color=colors[label],
                marker="o" if col == "ceg" else "s",
                mfc="none" if col != "ceg" else colors[label],
                capsize=3,
                label=f"{label}: {what}",
            )
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
        ax.errorbar(
            g["total_flops"],
            g["iqm"],
            yerr=np.nan_to_num(err),
            fmt="s-" if kind == "bc_rl" else "^-",
            color=colors[label],
            capsize=3,
            label=f"{KIND_NAMES[kind]}: {label}",
        )
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
                    ax.plot(
                        lg["rl_steps"],
                        lg[col],
                        ls,
                        marker="o",
                        ms=3,
                        color=plt.get_cmap("tab10")(j % 10),
                        label=f"{layer} {probe}".strip(),
                    )
        _budget_axis(ax, g["rl_steps"], include_zero=False)
        if log_y:
            _log_y(ax)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel(ylabel + (" (log scale)" if log_y else "") + ", IQM over seeds")
    title = (
        "relative weight change ||W - W_bc|| / ||W_bc|| per layer (dashed: critic)"
        if what == "rel_change"
        else "linear CKA to the BC snapshot per hidden layer (solid: demo states, dashed: visited states)"
    )
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
    for ax, (col, xlabel, log_x) in zip(
        axes,
        (
            ("actor_rel_change", "actor relative weight change (log scale)", True),
            ("cka_demo", "mean linear CKA to BC, demonstration states", False),
        ),
        strict=True,
    ):
        for label, g in t.groupby("label", sort=False):
            g = g.sort_values("rl_steps")
            err = np.clip([g["gain"] - g["gain_ci_low"], g["gain_ci_high"] - g["gain"]], 0, None)
            ax.errorbar(
                g[col], g["gain"], yerr=np.nan_to_num(err), fmt="o-", color=colors[label], capsize=3, label=label
            )
            for _, r in g.iterrows():
                ax.annotate(
                    f"{int(r['rl_steps']):,}",
                    (r[col], r["gain"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
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


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
