"""Analysis, figures and tables -> the report's pages: one self-contained HTML page (figures embedded), the same
in Markdown, the method text both end with, and the content of summary.json."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from testbed.analysis import Analysis
from testbed.report.figures import FIGURES
from testbed.report.gap import INTRO, cross_env_tables, summary
from testbed.report.gap_figures import CROSS_ENV_FIGURES
from testbed.report.memory import INTRO as MEMORY_INTRO
from testbed.report.memory import TITLE as MEMORY_TITLE
from testbed.report.memory import memory_tables
from testbed.report.memory import summary as memory_summary
from testbed.report.scale import INTRO as SCALE_INTRO
from testbed.report.scale import TITLE as SCALE_TITLE
from testbed.report.scale import scale_tables
from testbed.report.scale import summary as scale_summary
from testbed.report.scale_figures import SCALE_FIGURES
from testbed.report.tables import _metric_label, _nan, _plain, display_tables

if TYPE_CHECKING:
    from testbed.report import Report

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
    parts = [
        f"<h1>testbed report</h1><p>{html.escape(', '.join(map(str, folders)))} &middot; {_now()} &middot; "
        f"{int(a.sweep.jobs['included'].sum())} of {len(a.sweep.jobs)} jobs in the analysis</p>"
    ]
    if report.demonstrations:
        parts.append(f"<p><b>Setup</b>: {html.escape(_setup(report))}</p>")
    tables = display_tables(a, report)
    parts += [_html_table(*tables[0])]
    if report.gap is not None:
        cross = cross_env_tables(report.gap)
        parts.append(f"<h2>Cross-env: the gap imitation leaves to RL</h2><p>{html.escape(INTRO)}</p>")
        parts += [_html_table(*t) for t in cross[:4]]
        parts += [_html_figure(name, path) for name, path in report.figures.items() if _cross_env(name)]
        parts += [_html_table(*t) for t in cross[4:]]
    if report.scale is not None:
        sizes = scale_tables(report.scale)
        parts.append(f"<h2>{html.escape(SCALE_TITLE)}</h2><p>{html.escape(SCALE_INTRO)}</p>")
        parts += [_html_table(*t) for t in sizes[:1]]
        parts += [_html_figure(name, path) for name, path in report.figures.items() if _scale(name)]
        parts += [_html_table(*t) for t in sizes[1:]]
    if report.memory is not None:
        parts.append(f"<h2>{html.escape(MEMORY_TITLE)}</h2><p>{html.escape(MEMORY_INTRO)}</p>")
        parts += [_html_table(*t) for t in memory_tables(report.memory)]
    parts += [_html_figure(name, path) for name, path in report.figures.items() if _per_env(name)]
    parts += [_html_table(*t) for t in tables[1:]]
    parts.append(f"<h2>Method</h2><p>{METHOD.format(metric=_metric_label(a.metric), n=a.n_resamples)}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1300px;margin:auto;padding:1em}table{border-collapse:collapse;"
        "font-size:12px;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#eee}img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#444}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>testbed report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _html_figure(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(name)}: {html.escape(_caption(name))}</figcaption></figure>"
    )


def _cross_env(name: str) -> bool:
    return name.startswith("cross_env_")


def _scale(name: str) -> bool:
    return name.startswith("scale_") and name.removeprefix("scale_") in SCALE_FIGURES


def _per_env(name: str) -> bool:
    return not (_cross_env(name) or _scale(name))


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
    figure = "![{0}]({1})\n\n*{0}: {2}*\n"
    if report.gap is not None:
        cross = cross_env_tables(report.gap)
        lines.append(f"## Cross-env: the gap imitation leaves to RL\n\n{INTRO}\n")
        lines += [_md_table(*t) for t in cross[:4]]
        lines += [figure.format(n, p.name, _caption(n)) for n, p in report.figures.items() if _cross_env(n)]
        lines += [_md_table(*t) for t in cross[4:]]
    if report.scale is not None:
        sizes = scale_tables(report.scale)
        lines.append(f"## {SCALE_TITLE}\n\n{SCALE_INTRO}\n")
        lines += [_md_table(*t) for t in sizes[:1]]
        lines += [figure.format(n, p.name, _caption(n)) for n, p in report.figures.items() if _scale(n)]
        lines += [_md_table(*t) for t in sizes[1:]]
    if report.memory is not None:
        lines.append(f"## {MEMORY_TITLE}\n\n{MEMORY_INTRO}\n")
        lines += [_md_table(*t) for t in memory_tables(report.memory)]
    lines += [figure.format(n, p.name, _caption(n)) for n, p in report.figures.items() if _per_env(n)]
    lines += [_md_table(*t) for t in tables[1:]]
    method = METHOD.format(metric=_metric_label(a.metric), n=a.n_resamples)
    lines.append(
        "## Method\n\n"
        + method.replace("<b>", "**").replace("</b>", "**").replace("&gt;", ">").replace("&lt;", "<")
        + "\n"
    )
    return "\n".join(lines)


def _md_table(title: str, note: str, df: pd.DataFrame) -> str:
    out = [f"## {title}\n\n{note}\n"]
    if not df.empty:
        cells = [[str(c) for c in df.columns]] + [
            [("-" if _nan(v) else str(v)) for v in row] for row in df.itertuples(index=False)
        ]
        cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in cells]
        out += ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
        out += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(out) + "\n"


def _caption(name: str) -> str:
    """The docstring of the function that drew figure `<env>_<kind>` (or `cross_env_<kind>`, `scale_<kind>`)."""
    if _cross_env(name):
        return " ".join((CROSS_ENV_FIGURES[name.removeprefix("cross_env_")].__doc__ or "").split())
    if _scale(name):
        return " ".join((SCALE_FIGURES[name.removeprefix("scale_")].__doc__ or "").split())
    return next(((draw.__doc__ or "").strip() for kind, draw in FIGURES.items() if name.endswith(f"_{kind}")), "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _summary(folders: Sequence[Path], a: Analysis, report: Report) -> dict[str, Any]:
    return {
        "folders": [str(f) for f in folders],
        "metric": a.metric,
        "created": _now(),
        "jobs": len(a.sweep.jobs),
        "jobs_included": int(a.sweep.jobs["included"].sum()),
        "jobs_not_included": a.sweep.problems[["folder", "status", "problem"]].to_dict("records"),
        "headline": report.headline,
        "demonstrations": report.demonstrations,
        "figures": {k: str(v) for k, v in report.figures.items()},
        "ceg": _plain(a.ceg).astype(object).where(a.ceg.notna(), None).to_dict("records"),
    } | (
        ({"cross_env": summary(report.gap)} if report.gap is not None else {})
        | ({"scale": scale_summary(report.scale)} if report.scale is not None else {})
        | ({"memory": memory_summary(report.memory)} if report.memory is not None else {})
    )  # NaN: null
