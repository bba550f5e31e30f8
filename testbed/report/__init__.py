"""Sweep folders -> the report: `build()` loads and analyses them (testbed.analysis) and writes the figures
(figures.py), the tables (tables.py), the HTML and Markdown pages (pages.py) and summary.json.

`python -m testbed.report SWEEP_FOLDER...` is its command line, with the report's wandb run (__main__.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from testbed import analysis
from testbed.analysis import METRIC
from testbed.analysis.gap import Gap, gap_analysis
from testbed.analysis.memory import Memory, memory_analysis, studied
from testbed.analysis.scale import Scale, scale_analysis, sizes_vary
from testbed.report.figures import FIGURES, _save
from testbed.report.gap import raw_tables
from testbed.report.gap_figures import CROSS_ENV_FIGURES
from testbed.report.memory import raw_tables as memory_raw_tables
from testbed.report.pages import _summary, render_html, render_markdown
from testbed.report.scale import raw_tables as scale_raw_tables
from testbed.report.scale_figures import SCALE_FIGURES
from testbed.report.tables import _plain, _raw_tables, demonstrations, display_tables, headline

__all__ = [
    "FIGURES",
    "NothingToReport",
    "Report",
    "build",
    "demonstrations",
    "display_tables",
    "headline",
    "render_html",
    "render_markdown",
]

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What a report wrote: its folder, pages, figure files and tables."""

    out: Path
    figures: dict[str, Path] = field(default_factory=dict)  # figure name -> PNG
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # table name -> the numbers (raw)
    headline: list[dict[str, Any]] = field(default_factory=list)  # one row per BC+RL cell at its largest budget
    demonstrations: dict[str, dict[str, Any]] = field(default_factory=dict)  # env -> which sets seeds cloned
    gap: Gap | None = None  # the cross-env gap study, where the report covers more than one env
    scale: Scale | None = None  # the scale study, where its BC+RL cells span more than one width
    memory: Memory | None = None  # the memory study, where probed cells span more than one learner

    @property
    def html(self) -> Path:
        return self.out / "index.html"

    @property
    def markdown(self) -> Path:
        return self.out / "report.md"


class NothingToReport(Exception):
    """The folders hold no job at all (a wrong path?)."""


def build(
    folders: Sequence[str | Path],
    out: str | Path | None = None,
    metric: str = METRIC,
    n_resamples: int = analysis.N_RESAMPLES,
    figures: Sequence[str] | None = None,
) -> Report:
    """Load the sweep folders, analyse them and write the report (`figures`: names in FIGURES, default all).

    With more than one env, also the cross-env section (testbed.analysis.gap, testbed.report.gap): its tables,
    its figures (names in CROSS_ENV_FIGURES, written as cross_env_<name>.png) and summary.json's `cross_env`.
    Where the BC+RL cells with the control measured span more than one width, the scale section
    (testbed.analysis.scale, testbed.report.scale): its tables, its figures (names in SCALE_FIGURES, written as
    scale_<name>.png) and summary.json's `scale`.
    """
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
    envs = sorted(result.capability["env"].unique()) if not result.capability.empty else []
    if len(envs) > 1:  # the cross-env section: the gap imitation leaves to RL, one row per env
        report.gap = gap_analysis(
            sweep.points, result.ceg, metric, n_resamples=n_resamples, frontier_cells=result.frontier_cells
        )
        report.tables |= raw_tables(report.gap)
        _draw(report, CROSS_ENV_FIGURES, report.gap, "cross_env", figures)
    if sizes_vary(sweep.points):  # the scale section: drift and CEG against the learner's size
        _scale_section(report, sweep.points, result.ceg, metric, n_resamples, figures)
    if studied(sweep.points):  # the memory section: learners with different memory, task by task
        try:
            report.memory = memory_analysis(sweep.points, result.ceg, metric, n_resamples)
            report.tables |= memory_raw_tables(report.memory)
        except ValueError as exc:  # one learner with two BC+RL cells on a task: report them apart
            log.warning("the memory section is left out: %s", exc)
    for env in envs:
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


def _scale_section(
    report: Report,
    points: pd.DataFrame,
    ceg: pd.DataFrame,
    metric: str,
    n_resamples: int,
    figures: Sequence[str] | None,
) -> None:
    """The scale study's tables and figures into `report`; left out, with a warning, where one size has several
    BC+RL cells (the folders hold more than one scale study: report them apart)."""
    try:
        report.scale = scale_analysis(points, ceg, metric, n_resamples=n_resamples)
    except ValueError as exc:
        log.warning("the scale section is left out: %s", exc)
        return
    report.tables |= scale_raw_tables(report.scale)
    _draw(report, SCALE_FIGURES, report.scale, "scale", figures)


def _draw(report: Report, draws: dict[str, Any], data: Any, prefix: str, figures: Sequence[str] | None) -> None:
    """A section's figures (`draws`: name -> function of `data`) into `report` as <prefix>_<name>.png; `figures`
    picks names (None: all); a function that returns None has nothing to draw."""
    for name, draw_all in draws.items():
        if figures is None or name in figures:
            fig = draw_all(data)
            if fig is not None:
                report.figures[f"{prefix}_{name}"] = _save(fig, report.out / f"{prefix}_{name}.png")
