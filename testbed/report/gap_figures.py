"""The gap study (testbed.analysis.gap) -> the cross-env section's two figures, one panel per env: RL steps to each
target, and the actor's drift at that moment, against the start's capability. `CROSS_ENV_FIGURES` names them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from testbed.analysis.gap import Gap
from testbed.report.tables import _int, _num

TARGET_COLORS = plt.get_cmap("viridis")
DODGE = 0.008  # sideways offset between targets (capability units), so markers at one place stay visible


def gap_steps_figure(gap: Gap) -> Figure | None:
    """RL env steps to first reach each target (IQM over seeds, 95% CI; log axis) against the start's capability,
    one panel per env: circles BC starts, black-edged diamonds RL from scratch, open triangles at the top 'not within
    N' (the IQM is censored), open squares at the bottom '0: the start is already there'; targets are dodged
    sideways by a few thousandths for legibility."""
    extra = [_handle("o", "BC start"), _handle("D", "RL from scratch", edge="k"), _handle("^", "not within N")]
    extra += [_handle("s", "0: the start is already there")]
    return _panels(gap, _steps_panel, "RL env steps to reach the target (IQM, 95% CI)", extra)


def gap_drift_figure(gap: Gap) -> Figure | None:
    """Actor relative weight change at the moment each target is first reached (IQM over the seeds that reached it)
    against the start's capability, one panel per env: filled where the IQM of the steps is finite, open where it is
    censored (drift over the seeds that did reach), open triangles at the top where no seed reached; black-edged
    diamonds RL from scratch (against its random initial weights); targets dodged sideways as in gap_steps."""
    extra = [_handle("o", "BC start"), _handle("D", "RL from scratch", edge="k")]
    extra += [_handle("o", "open: steps censored, drift of seeds that reached", filled=False)]
    extra += [_handle("^", "no seed reached")]
    return _panels(gap, _drift_panel, "actor weight change at the target (IQM)", extra)


CROSS_ENV_FIGURES: dict[str, Callable[[Gap], Figure | None]] = {
    "gap_steps": gap_steps_figure,
    "gap_drift": gap_drift_figure,
}

Draw = Callable[[Axes, pd.DataFrame, dict[float, Any], dict[float, float]], None]


def _handle(marker: str, label: str, edge: str = "grey", filled: bool | None = None) -> Line2D:
    fill = "grey" if (filled if filled is not None else marker in "oD") else "none"
    return Line2D([], [], color="grey", marker=marker, mfc=fill, mec=edge, ls="", label=label)


def _panels(gap: Gap, draw: Draw, ylabel: str, extra: list[Line2D]) -> Figure | None:
    g = gap.gap
    if g.empty:
        return None
    envs = sorted(g["env"].unique())
    ncols = min(len(envs), 2 if len(envs) <= 4 else 3)
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.3 * nrows), squeeze=False)
    targets = sorted(g["target"].unique())
    colors = {t: TARGET_COLORS(i / max(len(targets) - 1, 1) * 0.85) for i, t in enumerate(targets)}
    dodge = {t: (i - (len(targets) - 1) / 2) * DODGE for i, t in enumerate(targets)}
    for ax, env in zip(axes.flat, envs, strict=False):
        e = g[g["env"] == env]
        draw(ax, e, colors, dodge)
        # One capability scale for every env (random 0 to expert 1), widened where a start lies outside it.
        ax.set_xlim(min(-0.05, e["start_score"].min() - 0.05), max(1.05, e["start_score"].max() + 0.05))
        ax.set_title(env)
        ax.set_xlabel("start capability (normalized score at RL step 0, IQM)")
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    handles = [Line2D([], [], color=c, marker="o", label=f"target {_num(t)}") for t, c in colors.items()] + extra
    fig.legend(handles=handles, loc="lower center", ncol=math.ceil(len(handles) / 2), fontsize=8)
    fig.tight_layout(rect=(0, 0.08 / nrows, 1, 1))
    return fig


def _steps_panel(ax: Axes, g: pd.DataFrame, colors: dict[float, Any], dodge: dict[float, float]) -> None:
    n = float(g["max_steps"].max())
    top = n * 2.5
    positive = g.loc[np.isfinite(g["steps"]) & (g["steps"] > 0), "steps"]
    floor = min(float(positive.min()) if not positive.empty else n / 10, n / 10) / 4

    def band(v: pd.Series) -> np.ndarray:
        x = v.to_numpy(dtype=np.float64)
        return np.where(np.isinf(x), top, np.where(x <= 0, floor, x))

    for target, t in g.groupby("target"):
        t = t.sort_values("start_score")
        x, y = t["start_score"].to_numpy() + dodge[target], band(t["steps"])
        low, high = band(t["steps_ci_low"].fillna(t["steps"])), band(t["steps_ci_high"].fillna(t["steps"]))
        ax.plot(x, y, "-", color=colors[target], lw=1, alpha=0.7)
        ax.errorbar(x, y, yerr=np.clip([y - low, high - y], 0, None), fmt="none", ecolor=colors[target], lw=1)
        for (_, r), xi, yi in zip(t.iterrows(), x, y, strict=True):
            _point(ax, r, xi, yi, colors[target], _marker(r), filled=bool(0 < r["steps"] < np.inf))
    ax.set_yscale("log")
    for level, text in ((top, f" not within {_int(n)}"), (floor, " 0: the start is already there")):
        ax.axhline(level, color="grey", ls=":", lw=1)
        ax.text(0.01, level * 1.1, text, fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    ax.set_ylim(floor / 2, top * 3)


def _marker(r: pd.Series) -> str:
    """Censored: triangle; reached at the start: square; else RL from scratch a diamond, a BC start a circle."""
    if np.isinf(r["steps"]):
        return "^"
    if r["steps"] == 0:
        return "s"
    return "D" if r["kind"] == "scratch" else "o"


def _point(ax: Axes, r: pd.Series, x: float, y: float, color: Any, marker: str, filled: bool) -> None:
    """One start's marker; RL from scratch always with a black edge, so it stands out when censored too."""
    edge = "k" if r["kind"] == "scratch" else color
    ax.plot([x], [y], marker, color=color, mfc=color if filled else "none", mec=edge, ms=7)


def _drift_panel(ax: Axes, g: pd.DataFrame, colors: dict[float, Any], dodge: dict[float, float]) -> None:
    if "actor_rel_change" not in g.columns:
        return
    finite = g["actor_rel_change"].dropna()
    top = float(finite.max()) * 1.15 if not finite.empty and finite.max() > 0 else 1.0
    for target, t in g.groupby("target"):
        t = t.sort_values("start_score")
        x, y = t["start_score"].to_numpy() + dodge[target], t["actor_rel_change"].fillna(top).to_numpy()
        known = t["actor_rel_change"].notna().to_numpy()  # a line only through drift that was measured
        ax.plot(x[known], y[known], "-", color=colors[target], lw=1, alpha=0.7)
        for (_, r), xi, yi in zip(t.iterrows(), x, y, strict=True):
            none = r["n_reached"] == 0
            marker = "^" if none else "D" if r["kind"] == "scratch" else "o"
            _point(ax, r, xi, yi, colors[target], marker, filled=not none and not r["censored"])
    ax.axhline(top, color="grey", ls=":", lw=1)
    ax.text(0.01, top, " no seed reached", fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    ax.set_ylim(bottom=-0.03 * top, top=top * 1.12)
