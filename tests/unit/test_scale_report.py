"""The report's scale section on synthetic checkpoint rows with known answers (tests/unit/test_scale.py's: drift
c / sqrt(width), a control that moves half as far): which rows are the study, the budget each env is read at, the
width rule's borrowed reference cell, the CEG of each size, the tables as shown, the figures, summary.json, and the
hook: `report.build` writes the section only where the widths vary."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest

from testbed import report
from testbed.analysis import scale
from testbed.analysis.frontier import iqm
from testbed.report import pages
from testbed.report.scale import TITLE, TREND_NAMES, raw_tables, scale_tables, summary
from testbed.report.scale_figures import SCALE_FIGURES
from tests.unit.test_analysis import write_job
from tests.unit.test_scale import WIDTHS, C, points

matplotlib.use("Agg")
N = 200  # bootstrap resamples: these tests check values and formatting, not the CIs' precision


def study(**kwargs: Any) -> scale.Scale:
    return scale.scale_analysis(kwargs.pop("pts", points()), kwargs.pop("ceg", pd.DataFrame()), n_resamples=N, **kwargs)


def table(s: scale.Scale, title_start: str) -> pd.DataFrame:
    """The display table whose title starts with `title_start`."""
    return next(t for title, _, t in scale_tables(s) if title.startswith(title_start))


def drop_control(pts: pd.DataFrame) -> pd.DataFrame:
    return pts.drop(columns=[c for c in pts.columns if c.startswith(scale.CONTROL)])


# ------------------------------------------------------------------------------------------- the study


def test_the_study_is_the_bc_cells_whose_control_was_measured() -> None:
    assert scale.sizes_vary(points())
    assert not scale.sizes_vary(points(widths=(64,)))  # one width: nothing to trend
    assert not scale.sizes_vary(drop_control(points()))  # no control: not the scale study
    # Another study's cell at another width (no control measured) neither counts nor enters the tables.
    other = drop_control(points(widths=(32,))).assign(cell="gap", label="gap")
    assert not scale.sizes_vary(pd.concat([points(widths=(64,)), other]))
    s = study(pts=pd.concat([points(widths=(64, 256)), other]))
    assert list(s.budget["width"]) == [64, 256] and "gap" not in set(s.seeds["cell"])


def test_each_env_is_read_at_the_largest_budget_every_size_has() -> None:
    # Env a's width-1024 cell stops at 1,000 RL steps: every size of a is read there; env b at 2,000.
    a = points(env="a")
    a = a[~((a["width"] == 1024) & (a["rl_steps"] == 2000))]
    s = study(pts=pd.concat([a, points(env="b")]))
    assert s.budgets == {"a": 1000.0, "b": 2000.0}
    by_env = s.budget.groupby("env")["rl_steps"].agg(set)
    assert by_env["a"] == {1000.0} and by_env["b"] == {2000.0}
    row = s.budget[(s.budget["env"] == "a") & (s.budget["width"] == 256)].iloc[0]
    assert row["rel_change"] == pytest.approx(0.5 * float(iqm(np.array(C))) / 16, rel=1e-12)  # GROWTH 0.5 there
    assert set(s.seeds.groupby("env")["rl_steps"].max()) == {1000.0, 2000.0}


def test_the_trends_are_every_trend_column_per_env_depth_and_rule() -> None:
    s = study(pts=pd.concat([points(), points(depth=4)]))
    assert set(s.trend["column"]) == set(scale.TRENDS) == set(TREND_NAMES)
    assert len(s.trend) == 2 * len(scale.TRENDS)
    slope = s.trend.set_index(["depth", "column"])["slope"]
    assert slope[(4, "rel_change")] == pytest.approx(-0.5, abs=1e-12)
    assert slope[(2, "ratio/moved@1e-02")] == pytest.approx(0.0, abs=1e-12)


def width_rule(w: int, s: int, i: int) -> float:
    """Drift of the width rule's cells: c_seed * 8 / width (growing over the checkpoints), which at width 64 is the
    fixed rule's c_seed / sqrt(64): the two rules' rates are the same there."""
    return C[s] * 8 / w * (0.0, 0.5, 1.0)[i]


def test_the_width_rule_borrows_the_fixed_cell_at_the_reference_width() -> None:
    pts = pd.concat([points(), points(widths=(32, 256, 1024), lr_rule="width", rl=width_rule)])
    s = study(pts=pts)
    trend = s.trend[s.trend["column"] == "rel_change"].set_index("lr_rule")
    assert trend.loc["width", "widths"] == list(WIDTHS)  # 64 borrowed from the fixed rule
    assert trend.loc["width", "slope"] == pytest.approx(-1.0, abs=1e-12)  # exact only with the borrowed point
    assert trend.loc["fixed", "slope"] == pytest.approx(-0.5, abs=1e-12)
    borrowed = s.budget[(s.budget["lr_rule"] == "width") & (s.budget["width"] == 64)].iloc[0]
    fixed = s.budget[(s.budget["lr_rule"] == "fixed") & (s.budget["width"] == 64)].iloc[0]
    assert borrowed["label"] == fixed["label"] and borrowed["rel_change"] == fixed["rel_change"]
    assert len(s.at_target) == len(s.budget) == 8
    # A width rule with a cell of its own at 64 borrows nothing; an env or depth without the width rule neither.
    own = pd.concat([pts, points(widths=(64,), lr_rule="width", rl=width_rule)])
    assert len(study(pts=own).budget) == 8
    assert len(study(pts=pd.concat([pts, points(depth=4)])).budget) == 12


def ceg_rows(cells: list[str]) -> pd.DataFrame:
    """A CEG table: per cell, a row at RL steps 1,000 (CEG 99, not the budget's) and at 2,000 (CEG 2, 4, ..., the
    last cell's a lower bound >= 64 whose CI's upper end is a bound too)."""
    rows = []
    for k, cell in enumerate(cells):
        for steps, ceg in ((1000, 99.0), (2000, 2.0 * 2**k)):
            low = k == len(cells) - 1 and steps == 2000
            rows.append(
                {"env": "synth", "frontier": "f", "label": cell, "cell": cell, "rl_steps": steps, "start": False}
                | {"n_seeds": 5, "score": 1.0, "bc_flops": 1e8 * 2**k, "rl_flops": 2e8, "flops_eq": ceg * 1e8}
                | {"ceg": ceg, "ceg_ci_low": ceg / 2, "ceg_ci_high": ceg * 2, "ceg_censor": 1 if low else 0}
                | {"ceg_charged": ceg / 3, "ceg_charged_ci_low": ceg / 6, "ceg_charged_ci_high": ceg / 1.5}
                | {"ceg_ci_low_censored": False, "ceg_ci_high_censored": low}
            )
    return pd.DataFrame(rows)


def test_the_ceg_of_each_size_is_the_ceg_tables_row_at_the_budget() -> None:
    cells = [f"synth/w{w}/d2/fixed" for w in WIDTHS]
    s = study(ceg=ceg_rows(cells[:3] + ["synth/w1024/d2/fixed"]).query("cell != 'synth/w256/d2/fixed'"))
    assert list(s.ceg["cell"]) == cells and set(s.ceg["rl_steps"]) == {2000.0}
    assert list(s.ceg["ceg"].iloc[[0, 1, 3]]) == [2.0, 4.0, 16.0] and np.isnan(s.ceg["ceg"].iloc[2])
    shown = table(s, "Scale: compute-equivalent gain")
    assert list(shown["width"]) == list(WIDTHS)
    assert list(shown["CEG [95% CI]"]) == ["2 [1, 4]", "4 [2, 8]", "-", ">= 16 [8, >= 32]"]
    assert shown["cost-charged [95% CI]"].iloc[0] == "0.667 [0.333, 1.33]"
    assert list(shown["C_BC"].iloc[:2]) == ["1.00e+08", "2.00e+08"]


# ---------------------------------------------------------------------------------------------- tables


def test_the_trend_table_comes_first_with_a_slope_and_ci_per_column() -> None:
    s = study(pts=pd.concat([points(), points(widths=(64,), depth=4)]))
    titles = [title for title, _, _ in scale_tables(s)]
    assert titles[0].startswith("Scale: does drift fall with width?")
    assert titles[1:] == ["Scale: drift at a fixed RL budget", "Scale: drift when capability 0.8 is first reached"]
    trend = table(s, "Scale: does drift fall with width?").set_index("depth")
    assert trend.loc[2, "widths"] == "32, 64, 256, 1024" and trend.loc[2, "seeds (fewest)"] == 5
    assert trend.loc[2, "actor change: RL"].startswith("-0.5 [") and trend.loc[2, "KL demo: RL"].startswith("-0.5 [")
    assert trend.loc[2, "actor change: RL / control"] == "0 [0, 0]"  # the ratio is 2 at every width
    assert trend.loc[4, "widths"] == "64" and trend.loc[4, "actor change: RL"] == "-"  # one width: no slope
    low, high = s.trend.loc[s.trend["column"] == "rel_change", ["slope_ci_low", "slope_ci_high"]].iloc[0]
    assert trend.loc[2, "actor change: RL"] == f"-0.5 [{low:.3g}, {high:.3g}]"


def test_the_budget_table_shows_each_size_beside_its_control() -> None:
    s = study()
    shown = table(s, "Scale: drift at a fixed RL budget")
    assert list(shown["width"]) == list(WIDTHS) and set(shown["RL steps"]) == {"2,000"}
    assert set(shown["optimizer steps RL / control"]) == {"20,000 / 20,000"}
    assert set(shown["BC capability"]) == {"0.4 [0.4, 0.4]"} and set(shown["capability"]) == {"1 [1, 1]"}
    row = shown[shown["width"] == 256].iloc[0]
    value = float(iqm(np.array(C))) / 16
    assert row["actor change: RL"].startswith(f"{value:.3g} [")
    assert row["actor change: control"].startswith(f"{value / 2:.3g} [")
    assert row["actor change: RL / control"] == row["moved@1e-02: RL / control"] == "2 [2, 2]"
    assert row["KL demo: RL / control"] == f"{value:.3g} / {value / 2:.3g}"
    notes = {title: note for title, note, _ in scale_tables(s)}
    assert "(synth 2,000 steps;" in notes["Scale: drift at a fixed RL budget"]


def test_the_target_table_shows_censored_sizes_as_not_within_n() -> None:
    # Seeds 0 and 1 never pass 0.6 at width 32: its IQM of the steps is censored, the drift the other 3 seeds'.
    stall = (0.4, 0.5, 0.6)
    slow = points(widths=(32,), scores=lambda seed: stall if seed < 2 else (0.4, 0.6, 1.0))
    s = study(pts=pd.concat([slow, points(widths=(64, 256))]))
    shown = table(s, "Scale: drift when capability 0.8").set_index("width")
    assert shown.loc[32, "RL steps to 0.8"] == "not within 2,000 steps [1,414, > 2,000] (3/5 reached)"
    assert shown.loc[64, "RL steps to 0.8"] == "1,414 [1,414, 1,414] (5/5 reached)"
    reached = float(iqm(0.75 * np.array(C[2:]) / math.sqrt(32)))
    assert shown.loc[32, "actor change: RL"].startswith(f"{reached:.3g} [")
    assert study(pts=points(), target=0.5).target == 0.5
    assert table(study(target=0.5), "Scale: drift when capability 0.5").shape[0] == len(WIDTHS)


# ----------------------------------------------------------------------------------------- the figures


def test_the_figures_draw_one_panel_per_env_with_the_tables_values() -> None:
    s = study(pts=pd.concat([points(env="a"), points(env="b"), points(env="b", depth=4)]))
    for name, draw in SCALE_FIGURES.items():
        fig = draw(s)
        assert fig is not None, name
        panels = [ax for ax in fig.axes if ax.has_data()]
        assert [ax.get_title() for ax in panels] == ["a (RL budget 2,000 steps)", "b (RL budget 2,000 steps)"]
        assert panels[0].get_xscale() == "log"
        series = 1 if name == "drift_ratio" else 2  # RL and control, or their ratio
        lines = [line for line in panels[1].get_lines() if np.asarray(line.get_xdata()).size == len(WIDTHS)]
        assert len(lines) == 2 * series, name  # per depth
    ratio = SCALE_FIGURES["drift_ratio"](s)
    assert ratio is not None
    assert list(np.asarray(ratio.axes[0].get_lines()[0].get_ydata())) == [2.0] * len(WIDTHS)
    drift = SCALE_FIGURES["drift"](s)
    assert drift is not None
    rl, control = drift.axes[0].get_lines()[:2]
    a = s.budget[s.budget["env"] == "a"]
    assert list(np.asarray(rl.get_ydata())) == list(a["rel_change"])
    assert list(np.asarray(control.get_ydata())) == list(a["control/rel_change"])
    assert rl.get_markerfacecolor() != "white" and control.get_markerfacecolor() == "white"


def test_no_study_no_figures_and_captions_are_the_docstrings() -> None:
    empty = study(pts=points().iloc[0:0])
    assert empty.budget.empty and all(draw(empty) is None for draw in SCALE_FIGURES.values())
    assert scale_tables(empty) == []
    assert pages._caption("scale_drift").startswith("Actor relative weight change ||W - W_bc|| / ||W_bc||")
    assert pages._caption("scale_moved").startswith("Fraction of the actor's parameters")


def test_the_summary_has_the_budgets_the_target_and_every_table_but_the_seeds() -> None:
    stall = (0.4, 0.5, 0.6)
    slow = points(widths=(32,), scores=lambda seed: stall if seed < 2 else (0.4, 0.6, 1.0))
    s = study(pts=pd.concat([slow, points(widths=(64, 256))]))
    out = json.loads(json.dumps(summary(s)))  # JSON as written: NaN as null, +inf as "inf"
    assert out["rl_budgets"] == {"synth": 2000.0} and out["target"] == 0.8
    assert set(out) == {"rl_budgets", "target", *raw_tables(s)} - {"scale_seeds"}
    assert out["scale_target"][0]["steps"] == "inf" and out["scale_target"][0]["censored"] is True
    assert out["scale_ceg"][0]["cell"] == "synth/w32/d2/fixed"
    assert len(out["scale_trend"]) == len(scale.TRENDS) and out["scale_trend"][0]["widths"] == [32, 64, 256]


# -------------------------------------------------------------------------------------------- the hook


def write_sized_job(root: Path, width: int, seed: int, control: bool = True, demos: int = 2) -> None:
    """A BC+RL job of width `width` (env.net_arch [width, width]) whose checkpoints carry the control's columns
    where `control` (eval.bc_control): half the RL run's actor change, at every checkpoint past the start."""
    settings = {"env.net_arch": [width, width], "eval.bc_control": control, "demos.seed": seed}
    folder = write_job(
        root, f"w{width}_d{demos}_s{seed}", seed, {0: 0.3, 1000: 0.6, 5000: 0.9}, demos=demos, settings=settings
    )
    data = json.loads((folder / "results.json").read_text())
    for row in data["checkpoints"]:
        change = row["rl_steps"] / 1e4 / math.sqrt(width)
        row["drift/weights/actor/rel_change"] = change
        row["drift/weights/actor/moved@1e-02"] = 0.9
        if control and row["rl_steps"] > 0:
            control_drift = {"rel_change": change / 2, "moved@1e-02": 0.6}
            row |= {f"control/drift/weights/actor/{k}": v for k, v in control_drift.items()}
            row |= {"control/drift/kl/demo": 0.01, "control/grad_steps": row["rl_steps"] / 10}
    (folder / "results.json").write_text(json.dumps(data))


def test_report_has_a_scale_section_only_when_the_widths_vary(tmp_path: Path) -> None:
    for seed in range(3):
        for width in (32, 256):
            write_sized_job(tmp_path / "sizes", width, seed)
    built = report.build([tmp_path / "sizes"], out=tmp_path / "r", n_resamples=100, figures=list(SCALE_FIGURES))
    assert built.scale is not None and set(built.figures) == {f"scale_{name}" for name in SCALE_FIGURES}
    page, markdown = built.html.read_text(), built.markdown.read_text()
    assert f"<h2>{TITLE}</h2>" in page.replace("&#x27;", "'") and f"## {TITLE}" in markdown
    assert "## Scale: drift when capability 0.8 is first reached" in markdown
    assert "*scale_drift_ratio: RL's actor relative change over its control's" in markdown
    assert markdown.index(f"## {TITLE}") < markdown.index("![scale_drift]") < markdown.index("## Scale: drift at")
    out = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert out["scale"]["rl_budgets"] == {"synth": 5000.0}
    trend = next(r for r in out["scale"]["scale_trend"] if r["column"] == "ratio/rel_change")
    assert trend["slope"] == pytest.approx(0.0, abs=1e-9) and trend["widths"] == [32, 256]
    actor = next(r for r in out["scale"]["scale_trend"] if r["column"] == "rel_change")
    assert actor["slope"] == pytest.approx(-0.5, abs=1e-9)
    assert len(out["scale"]["scale_ceg"]) == 2  # one row per size, from the analysis's CEG table
    for name in ("scale_budget", "scale_target", "scale_trend", "scale_ceg", "scale_seeds"):
        assert (tmp_path / "r" / "tables" / f"{name}.csv").exists(), name

    # One width, or two widths without the control: no scale section.
    for seed in range(3):
        write_sized_job(tmp_path / "one", 64, seed)
        for width in (32, 256):
            write_sized_job(tmp_path / "no_control", width, seed, control=False)
    for name in ("one", "no_control"):
        single = report.build([tmp_path / name], out=tmp_path / f"r_{name}", n_resamples=100, figures=[])
        assert single.scale is None and "Scale:" not in single.html.read_text()
        assert "scale" not in json.loads((tmp_path / f"r_{name}" / "summary.json").read_text())
        assert not (tmp_path / f"r_{name}" / "tables" / "scale_budget.csv").exists()


def test_two_studies_at_one_size_leave_the_section_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for seed in range(2):
        for width in (32, 256):
            write_sized_job(tmp_path / "twice", width, seed)
            write_sized_job(tmp_path / "twice", width, seed, demos=4)
    with caplog.at_level(logging.WARNING, logger="testbed.report"):
        built = report.build([tmp_path / "twice"], out=tmp_path / "r", n_resamples=100, figures=[])
    assert built.scale is None and "Scale:" not in built.html.read_text()
    assert "the scale section is left out: several BC+RL cells" in caplog.text
