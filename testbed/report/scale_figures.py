"""The scale study (testbed.analysis.scale) -> the scale section's three figures, one panel per env, width on a log
axis: the actor's relative change of RL and of its control, their ratio, and the fraction of weights that moved.
`SCALE_FIGURES` names them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from testbed.analysis.scale import CONTROL, RATIO, Scale
from testbed.report.tables import _int

DEPTH_COLORS = plt.get_cmap("tab10")
LINES = {"fixed": "-", "width": "--"}  # line style per learning-rate rule
DODGE = 1.04  # sideways factor between the (depth, lr_rule) lines at one width, so that CI bars stay apart

Series = tuple[str, bool]  # (column of the budget table, filled marker)


def scale_drift_figure(s: Scale) -> Figure | None:
    """Actor relative weight change ||W - W_bc|| / ||W_bc|| at the env's RL budget against width (IQM over seeds,
    95% CI; both axes log), one panel per env: filled markers the RL run, open markers its control (BC continued
    from the same start for as many optimizer steps); colour the depth, solid lines the env's learning rates
    (lr_rule=fixed), dashed rates scaled as 64 / width (lr_rule=width). Parallel lines: RL's drift falls with width
    as imitation's does."""
    series = [("rel_change", True), (f"{CONTROL}rel_change", False)]
    return _panels(s, series, "actor relative change at the budget (IQM, 95% CI)", log_y=True)


def scale_drift_ratio_figure(s: Scale) -> Figure | None:
    """RL's actor relative change over its control's at the env's RL budget against width (IQM of each seed's
    ratio, 95% CI; both axes log), one panel per env; dotted at 1 (RL moves the weights as far as as much
    imitation). A line falling with width: RL's drift falls faster than the control's. Colour the depth, solid
    lr_rule=fixed, dashed lr_rule=width."""
    fig = _panels(s, [(f"{RATIO}rel_change", True)], "actor change RL / control (IQM, 95% CI)", log_y=True)
    for ax in fig.axes if fig is not None else []:
        if ax.has_data():
            ax.axhline(1.0, color="grey", ls=":", lw=1)
    return fig


def scale_moved_figure(s: Scale) -> Figure | None:
    """Fraction of the actor's parameters that moved by more than 1% of their layer's RMS at the start (moved@1e-02)
    at the env's RL budget against width (IQM over seeds, 95% CI; width on a log axis), one panel per env: filled
    markers the RL run, open markers its control; colour the depth, solid lr_rule=fixed, dashed lr_rule=width. 1:
    every weight moved; the LLM intuition (RL updates a small subnetwork) would show as RL's fraction falling
    well below the control's as width grows."""
    series = [("moved@1e-02", True), (f"{CONTROL}moved@1e-02", False)]
    return _panels(s, series, "fraction of actor weights moved (IQM, 95% CI)", log_y=False)


SCALE_FIGURES: dict[str, Callable[[Scale], Figure | None]] = {
    "drift": scale_drift_figure,
    "drift_ratio": scale_drift_ratio_figure,
    "moved": scale_moved_figure,
}


def _panels(s: Scale, series: Sequence[Series], ylabel: str, log_y: bool) -> Figure | None:
    t = s.budget
    if t.empty or not any(col in t.columns and t[col].notna().any() for col, _ in series):
        return None
    envs = sorted(t["env"].unique())
    ncols = min(len(envs), 3)
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.3 * nrows), squeeze=False)
    depths = sorted(t["depth"].unique())
    colors = {d: DEPTH_COLORS(i) for i, d in enumerate(depths)}
    lines = sorted(t.groupby(["depth", "lr_rule"]).groups)
    dodge = {key: DODGE ** (i - (len(lines) - 1) / 2) for i, key in enumerate(lines)}
    for ax, env in zip(axes.flat, envs, strict=False):
        e = t[t["env"] == env]
        for (depth, rule), g in e.groupby(["depth", "lr_rule"], sort=True):
            g = g.sort_values("width")
            x = g["width"].to_numpy(dtype=np.float64) * dodge[(depth, rule)]
            for col, filled in series:
                _series(ax, g, x, col, colors[depth], LINES.get(str(rule), ":"), filled)
        _width_axis(ax, sorted(e["width"].unique()), log_y)
        ax.set_title(f"{env} (RL budget {_int(s.budgets.get(env))} steps)")
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    handles = _legend(colors, sorted(t["lr_rule"].unique()), series)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.07 / nrows, 1, 1))
    return fig


def _series(ax: Axes, g: pd.DataFrame, x: np.ndarray, col: str, color: Any, ls: str, filled: bool) -> None:
    """One line of IQMs with 95% CI bars; markers filled (the RL run) or open (the control)."""
    if col not in g.columns or g[col].isna().all():
        return
    y = g[col].to_numpy(dtype=np.float64)
    low = g[f"{col}_ci_low"].fillna(g[col]).to_numpy(dtype=np.float64)
    high = g[f"{col}_ci_high"].fillna(g[col]).to_numpy(dtype=np.float64)
    ax.errorbar(x, y, yerr=np.clip([y - low, high - y], 0, None), fmt="none", ecolor=color, lw=1, alpha=0.8)
    ax.plot(
        x, y, ls=ls, marker="o", color=color, mfc=color if filled else "white", mec=color, ms=6, lw=1.5 if filled else 1
    )


def _width_axis(ax: Axes, widths: Sequence[float], log_y: bool) -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(widths), [str(int(w)) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(widths) / 1.5, max(widths) * 1.5)
    ax.set_xlabel("width (hidden units per layer)")
    if log_y:
        ax.set_yscale("log")
    else:
        ax.set_ylim(-0.03, 1.05)


def _legend(colors: dict[Any, Any], rules: Sequence[str], series: Sequence[Series]) -> list[Line2D]:
    handles = [Line2D([], [], color=c, lw=2, label=f"depth {d}") for d, c in colors.items()]
    handles += [Line2D([], [], color="grey", ls=LINES.get(r, ":"), label=f"lr_rule={r}") for r in rules]
    if len(series) > 1:
        for col, filled in series:
            who = "control" if col.startswith(CONTROL) else "RL"
            handles.append(
                Line2D([], [], color="grey", marker="o", mfc="grey" if filled else "white", ls="", label=who)
            )
    return handles
