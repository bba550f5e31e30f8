"""The scale study's tables on synthetic checkpoint rows with known answers: the checkpoint a budget reads, drift
planted as c / sqrt(width) (slope -0.5), a control that moves exactly half as far (ratio 2), the derived drift values
(mean effective rank, last hidden layer's CKA per depth), the moment a target is first reached and its censoring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from testbed import drift
from testbed.analysis import scale
from testbed.analysis.frontier import iqm
from testbed.analysis.gap import iqm_ci

WIDTHS = (32, 64, 256, 1024)
C = (0.8, 1.0, 1.1, 1.3, 0.9)  # each seed's drift constant, the same at every width
STEPS = (0, 1000, 2000)
GROWTH = (0.0, 0.5, 1.0)  # drift at each checkpoint, as a fraction of the last checkpoint's
SCORES = (0.4, 0.6, 1.0)  # every seed's normalized score at STEPS
ACTOR_LAYERS = {2: ("policy_net.0", "policy_net.2", "action_net"), 4: ("policy_net.0", "policy_net.6", "action_net")}
N = 2000  # resamples: enough for these tests, and fast


def drift_row(value: float, depth: int, prefix: str = "") -> dict[str, float]:
    """Every drift column a checkpoint row has, all equal to `value` but for the per-layer effective ranks (1, 2 and
    6 times it: their mean is 3 times it) and the CKA (the last hidden layer's is `value`, the others 0.5)."""
    actor = f"{prefix}drift/weights/actor/"
    row = {f"{actor}rel_change": value, f"{prefix}drift/kl/demo": value}
    row |= {f"{actor}moved@{r:.0e}": value for r in drift.RELATIVE_TOLERANCES}
    row |= {f"{actor}{layer}/eff_rank": k * value for layer, k in zip(ACTOR_LAYERS[depth], (1, 2, 6), strict=True)}
    hidden = range(1, 2 * depth, 2)  # policy_net.1, .3 (depth 2) or .1, .3, .5, .7 (depth 4)
    row |= {f"{prefix}drift/cka/demo/policy_net.{i}": value if i == 2 * depth - 1 else 0.5 for i in hidden}
    return row


Drift = Callable[[int, int, int], float]  # (width, seed, checkpoint) -> drift


def planted(width: int, seed: int, i: int) -> float:
    """c_seed / sqrt(width), growing over the checkpoints."""
    return C[seed] * width**-0.5 * GROWTH[i]


def points(
    widths: tuple[int, ...] = WIDTHS,
    depth: int = 2,
    lr_rule: str = "fixed",
    rl: Drift = planted,
    control: Drift | None = None,
    scores: Callable[[int], tuple[float, ...]] = lambda seed: SCORES,
    env: str = "synth",
) -> pd.DataFrame:
    """A tidy checkpoint table: one BC+RL cell per width, 5 seeds at STEPS; the control's drift is half the RL
    run's unless `control` says otherwise."""
    control = control or (lambda w, s, i: 0.5 * rl(w, s, i))
    rows: list[dict[str, Any]] = []
    for width in widths:
        cell = f"{env}/w{width}/d{depth}/{lr_rule}"
        for seed in range(len(C)):
            for i, steps in enumerate(STEPS):
                row = {"env": env, "cell": cell, "label": cell, "seed": seed, "rl_init": "bc", "rl_steps": steps}
                row |= {"width": width, "depth": depth, "lr_rule": lr_rule}
                row |= {"eval/normalized_score": scores(seed)[i], "compute/rl/grad_steps": 10.0 * steps}
                row |= {"control/grad_steps": 10.0 * steps}
                row |= drift_row(rl(width, seed, i), depth) | drift_row(control(width, seed, i), depth, "control/")
                rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ at a budget


def test_the_tolerances_match_the_ones_drift_writes() -> None:
    assert tuple(f"{r:.0e}" for r in drift.RELATIVE_TOLERANCES) == scale.MOVED_TOLERANCES


def test_a_budget_reads_the_nearest_checkpoint_at_or_above_it() -> None:
    table = scale.scale_table(points(), budget=1500, n_resamples=N)
    assert len(table) == len(WIDTHS)
    assert set(table["rl_steps"]) == {2000} and set(table["budget"]) == {1500}
    assert set(table["n_seeds"]) == {5}
    assert table["bc_score"].to_numpy() == pytest.approx(0.4) and table["score"].to_numpy() == pytest.approx(1.0)
    assert set(table["grad_steps"]) == {20_000.0} and set(table["control/grad_steps"]) == {20_000.0}
    at_1000 = scale.scale_table(points(), budget=1000, n_resamples=N)
    assert set(at_1000["rl_steps"]) == {1000}
    assert scale.scale_table(points(), budget=2001, n_resamples=N).empty  # above every checkpoint


def test_drift_over_seeds_is_the_iqm_with_a_ci() -> None:
    table = scale.scale_table(points(), budget=2000, n_resamples=N).set_index("width")
    expected = float(iqm(np.array(C))) / np.sqrt(256)
    assert table.loc[256, "rel_change"] == pytest.approx(expected, rel=1e-12)
    assert table.loc[256, "rel_change_ci_low"] < expected < table.loc[256, "rel_change_ci_high"]
    assert table.loc[256, "control/kl_demo"] == pytest.approx(expected / 2, rel=1e-12)
    # The CI is gap.iqm_ci's over the seeds: a 95% percentile bootstrap.
    _, low, high = iqm_ci(np.array(C) / 16, n_resamples=N)
    assert (table.loc[256, "rel_change_ci_low"], table.loc[256, "rel_change_ci_high"]) == (low, high)


def test_the_ratio_to_the_control_is_per_seed() -> None:
    # The control moves exactly half as far as RL in every seed: the ratio is 2 in each, and so is every resample.
    table = scale.scale_table(points(), budget=2000, n_resamples=N)
    for name in scale.DRIFT_NAMES:
        for end in ("", "_ci_low", "_ci_high"):
            assert set(table[f"ratio/{name}{end}"]) == {2.0}, name + end
    # A ratio per seed, not a ratio of IQMs: a control of c_s^2 / sqrt(width) gives the IQM of 1 / c_s, not
    # IQM(c) / IQM(c^2).
    pts = points(control=lambda w, s, i: C[s] ** 2 * w**-0.5 * GROWTH[i])
    per_seed = scale.scale_table(pts, budget=2000, n_resamples=N)["ratio/rel_change"].to_numpy()
    assert per_seed == pytest.approx(float(iqm(1 / np.array(C))), rel=1e-12)
    assert float(iqm(1 / np.array(C))) != pytest.approx(float(iqm(np.array(C)) / iqm(np.array(C) ** 2)), rel=1e-3)


def test_a_zero_control_makes_the_ratio_undefined() -> None:
    table = scale.scale_table(points(control=lambda w, s, i: 0.0), budget=2000, n_resamples=N)
    assert table["ratio/rel_change"].isna().all() and (table["control/rel_change"] == 0.0).all()


def test_effective_rank_is_the_mean_over_actor_layers_and_cka_the_last_hidden_layer() -> None:
    both = pd.concat([points(widths=(64,), depth=2), points(widths=(64,), depth=4)], ignore_index=True)
    seeds = scale.seeds_at_budget(both, 2000)
    value = C[0] / 8  # seed 0 at width 64
    for depth in (2, 4):
        row = seeds[(seeds["depth"] == depth) & (seeds["seed"] == 0)].iloc[0]
        assert row["eff_rank"] == pytest.approx(3 * value, rel=1e-12)  # (1 + 2 + 6) / 3
        assert row["cka_last"] == pytest.approx(value, rel=1e-12)  # not 0.5: policy_net.3, resp. .7
        assert row["control/cka_last"] == pytest.approx(value / 2, rel=1e-12)


def test_cells_that_are_not_bc_plus_rl_are_left_out() -> None:
    extra = points(widths=(64,))
    bc_only = extra[extra["rl_steps"] == 0].assign(cell="bc-only", label="bc-only")
    scratch = extra.assign(cell="scratch", label="scratch", rl_init="scratch")
    table = scale.scale_table(pd.concat([points(), bc_only, scratch]), budget=2000, n_resamples=N)
    assert list(table["width"]) == list(WIDTHS) and set(table["n_seeds"]) == {5}


def test_two_cells_at_one_size_or_no_size_columns_are_refused() -> None:
    twin = points(widths=(64,)).assign(cell="other", label="other")
    with pytest.raises(ValueError, match="several BC\\+RL cells"):
        scale.scale_table(pd.concat([points(), twin]), budget=2000, n_resamples=N)
    with pytest.raises(ValueError, match="size columns \\['lr_rule'\\]"):
        scale.scale_table(points().drop(columns="lr_rule"), budget=2000, n_resamples=N)


# ------------------------------------------------------------------------------------ trend with width


def test_drift_planted_as_c_over_sqrt_width_has_slope_minus_a_half() -> None:
    seeds = scale.seeds_at_budget(points(), 2000)
    trend = scale.size_trend(seeds, "rel_change", n_resamples=N).iloc[0]
    assert trend["widths"] == list(WIDTHS) and trend["n_seeds"] == 5
    assert trend["slope"] == pytest.approx(-0.5, abs=1e-12)
    assert trend["slope_ci_low"] < -0.5 < trend["slope_ci_high"]
    # RL / control is 2 at every width: no trend, and no resample finds one.
    ratio = scale.size_trend(seeds, "ratio/rel_change", n_resamples=N).iloc[0]
    assert (ratio["slope"], ratio["slope_ci_low"], ratio["slope_ci_high"]) == pytest.approx((0, 0, 0), abs=1e-12)


def test_the_ratio_slope_is_the_difference_of_the_slopes() -> None:
    # RL falls as width^-0.5, the control as width^-0.25: the ratio falls as width^-0.25.
    pts = points(control=lambda w, s, i: C[s] * w**-0.25 * GROWTH[i])
    trend = scale.size_trend(scale.seeds_at_budget(pts, 2000), "ratio/rel_change", n_resamples=N).iloc[0]
    assert trend["slope"] == pytest.approx(-0.25, abs=1e-12)


def test_seeds_are_resampled_within_each_width() -> None:
    # No seed noise within a width (every seed's constant 1): every resample has the data's slope, exactly. Seeds
    # resampled across widths would mix widths and spread it.
    pts = points(rl=lambda w, s, i: w**-0.5 * GROWTH[i])
    trend = scale.size_trend(scale.seeds_at_budget(pts, 2000), "rel_change", n_resamples=N).iloc[0]
    assert (trend["slope_ci_low"], trend["slope_ci_high"]) == pytest.approx((-0.5, -0.5), abs=1e-12)


def test_the_slope_ci_is_the_width_iqms_ci_carried_through_the_log() -> None:
    # Two widths, the wider without seed noise: each resampled slope is (log v - log IQM*_64) / log 4, so the
    # slope's 95% CI is the 64-wide IQM's (gap.iqm_ci: the same draws), mapped through that decreasing function
    # (up to one order statistic of the 2000 resamples).
    pts = points(widths=(64, 256), rl=lambda w, s, i: (C[s] if w == 64 else 1.0) * w**-0.5 * GROWTH[i])
    trend = scale.size_trend(scale.seeds_at_budget(pts, 2000), "rel_change", n_resamples=N).iloc[0]
    _, low, high = iqm_ci(np.array(C) / 8, n_resamples=N)
    slope = lambda iqm_64: (np.log(1 / 16) - np.log(iqm_64)) / np.log(4)  # noqa: E731
    assert trend["slope_ci_low"] == pytest.approx(slope(high), abs=2e-3)
    assert trend["slope_ci_high"] == pytest.approx(slope(low), abs=2e-3)
    assert trend["slope_ci_high"] - trend["slope_ci_low"] > 0.1


def test_no_seeds_no_trend() -> None:
    assert scale.size_trend(pd.DataFrame(), "rel_change").empty


def test_trends_are_per_env_depth_and_lr_rule_and_need_two_widths() -> None:
    faster = points(lr_rule="width", rl=lambda w, s, i: C[s] * w**-1.0 * GROWTH[i])
    pts = pd.concat([points(), faster, points(widths=(64,), depth=4)])
    trend = scale.size_trend(scale.seeds_at_budget(pts, 2000), "rel_change", n_resamples=N)
    by = trend.set_index(["depth", "lr_rule"])["slope"]
    assert by[(2, "fixed")] == pytest.approx(-0.5, abs=1e-12)
    assert by[(2, "width")] == pytest.approx(-1.0, abs=1e-12)
    assert np.isnan(by[(4, "fixed")])  # one width: no slope


# ---------------------------------------------------------------------------------------- at a target


def test_drift_at_a_target_is_interpolated_as_the_gap_study_does() -> None:
    # 0.8 is halfway from 0.6 (1,000 steps) to 1.0 (2,000): 1000 * 2^0.5 steps (linear in log steps), and the
    # drift halfway between its values there (0.5 and 1 of the last): 0.75 of the last checkpoint's.
    seeds = scale.seeds_at_target(points(widths=(64,)), 0.8)
    row = seeds[seeds["seed"] == 1].iloc[0]
    assert row["steps"] == pytest.approx(1000 * 2**0.5)
    assert row["grad_steps"] == pytest.approx(10 * 1000 * 2**0.5)
    assert row["rel_change"] == pytest.approx(0.75 * C[1] / 8, rel=1e-12)
    assert row["control/rel_change"] == pytest.approx(0.75 * C[1] / 16, rel=1e-12)
    assert row["ratio/kl_demo"] == pytest.approx(2.0, rel=1e-12)
    assert not row["censored"]


def test_a_target_the_start_reaches_is_reached_at_once_with_no_drift() -> None:
    row = scale.seeds_at_target(points(widths=(64,), control=lambda w, s, i: np.nan if i == 0 else 1.0), 0.3).iloc[0]
    assert row["steps"] == 0.0 and row["rel_change"] == 0.0
    assert row["control/rel_change"] == 0.0  # the control, not measured at step 0, is the start there
    assert np.isnan(row["ratio/rel_change"])  # 0 / 0


def test_censored_seeds_count_as_never_and_leave_the_drift_to_the_others() -> None:
    # Seeds 0 and 1 never pass 0.6; the others reach 0.8 as above. 2 of 5 censored: the IQM of the steps is too.
    stall = (0.4, 0.5, 0.6)
    pts = points(widths=(64,), scores=lambda seed: stall if seed < 2 else SCORES)
    seeds = scale.seeds_at_target(pts, 0.8)
    assert list(seeds["censored"]) == [True, True, False, False, False]
    assert np.isinf(seeds.loc[seeds["censored"], "steps"]).all()
    assert seeds.loc[seeds["censored"], "rel_change"].isna().all()
    row = scale.scale_at_target(pts, 0.8, n_resamples=N).iloc[0]
    assert (row["n_seeds"], row["n_reached"], row["max_steps"]) == (5, 3, 2000)
    assert row["censored"] and np.isinf(row["steps"]) and np.isinf(row["steps_ci_high"])
    reached = 0.75 * np.array(C[2:]) / 8
    assert row["rel_change"] == pytest.approx(float(iqm(reached)), rel=1e-12)
    # One censored seed of 5 leaves the IQM (the middle 3 of 5) finite.
    one = points(widths=(64,), scores=lambda seed: stall if seed == 0 else SCORES)
    row = scale.scale_at_target(one, 0.8, n_resamples=N).iloc[0]
    assert not row["censored"] and row["steps"] == pytest.approx(1000 * 2**0.5)
