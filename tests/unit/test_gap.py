"""The gap to cover on synthetic sweeps with known answers: when each seed first reaches a target (interpolated
between checkpoints), censoring, the IQM over seeds, the drift at that moment, the imitation share, and the report's
cross-env section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from testbed import report
from testbed.analysis import gap
from testbed.report.gap import cross_env_tables
from tests.unit.test_analysis import write_job

STEPS = (0, 1000, 10_000, 100_000)
FLOPS_PER_STEP = 1e6
ACTOR = (0.0, 0.1, 0.3, 0.7)  # actor relative weight change at each checkpoint
CKA = (1.0, 0.9, 0.8, 0.5)
KL = (0.0, 1.0, 2.0, 4.0)


def points(cells: dict[str, list[tuple[float, ...]]], env: str = "synth") -> pd.DataFrame:
    """A tidy checkpoint table: cell name -> one score sequence per seed at STEPS ('scratch...' cells start from
    scratch); RL FLOPs proportional to steps; the same drift sequences for every seed."""
    rows = []
    for cell, seeds in cells.items():
        init = "scratch" if cell.startswith("scratch") else "bc"
        for seed, scores in enumerate(seeds):
            for i, (steps, score) in enumerate(zip(STEPS, scores, strict=True)):
                rows.append(
                    {
                        "env": env,
                        "cell": f"{env}/{cell}",
                        "label": cell,
                        "seed": seed,
                        "rl_init": init,
                        "rl_steps": steps,
                        "eval/normalized_score": score,
                        "compute/rl/env_steps": float(steps),
                        "compute/rl/flops": FLOPS_PER_STEP * steps,
                        "drift/weights/actor/rel_change": ACTOR[i],
                        "drift/cka/demo/policy_net.1": CKA[i],
                        "drift/kl/demo": KL[i],
                    }
                )
    return pd.DataFrame(rows)


def reach(scores: tuple[float, ...], target: float) -> dict[str, Any]:
    """The one-seed reach row of `scores` at `target`."""
    table = gap.reach_table(points({"bc": [scores]}), targets=[target])
    assert len(table) == 1
    return dict(table.iloc[0])


RISING = (0.2, 0.4, 0.6, 1.0)


def test_crossing_between_checkpoints_is_linear_in_log_steps() -> None:
    # 0.5 is halfway from 0.4 (1,000 steps) to 0.6 (10,000): halfway in log(steps), 1000 * 10^0.5, not 5,500.
    assert reach(RISING, 0.5)["steps"] == pytest.approx(1000 * 10**0.5)
    # 0.95: 7/8 of the way from 0.6 (10,000) to 1.0 (100,000).
    assert reach(RISING, 0.95)["steps"] == pytest.approx(10_000 * 10**0.875)
    assert not reach(RISING, 0.95)["censored"]


def test_crossing_before_the_first_checkpoint_is_linear_in_steps() -> None:
    # 0.3 is halfway from the start (0.2 at step 0, where log(steps) is undefined) to 0.4 at 1,000 steps.
    row = reach(RISING, 0.3)
    assert row["steps"] == pytest.approx(500.0)
    assert row["flops"] == pytest.approx(500 * FLOPS_PER_STEP) and row["env_steps"] == pytest.approx(500.0)


def test_the_first_crossing_counts_even_when_the_score_falls_back() -> None:
    assert reach((0.1, 0.6, 0.3, 0.3), 0.5)["steps"] == pytest.approx(800.0)  # 0.4 of the 0.5 rise, from 0


def test_a_start_already_at_the_target_needs_zero_steps() -> None:
    row = reach(RISING, 0.2)
    assert row["steps"] == 0 and row["flops"] == 0 and not row["censored"]
    assert row["actor_rel_change"] == 0 and row["cka_demo/policy_net.1"] == 1 and row["kl_demo"] == 0
    assert gap.reach_point(np.array(STEPS), np.array(RISING), 0.1) == (0, 1.0)


def test_no_checkpoint_at_the_target_is_censored_at_the_largest_budget() -> None:
    row = reach((0.2, 0.4, 0.45, 0.49), 0.5)
    assert row["censored"] and row["steps"] == np.inf and row["flops"] == np.inf
    assert row["max_steps"] == 100_000 and np.isnan(row["actor_rel_change"])
    assert reach((0.2, np.nan, 0.45, 0.49), 0.5)["censored"]  # NaN reaches nothing
    assert reach((0.2, np.nan, 0.45, 0.49), 0.4)["steps"] == 10_000  # after an unknown score: at the checkpoint


def test_flops_at_the_crossing_are_linear_in_steps_not_in_log_steps() -> None:
    # The score's fraction (0.5 of the 1,000 -> 10,000 segment) would give 5.5e9 FLOPs; the crossing is at 3,162 steps.
    assert reach(RISING, 0.5)["flops"] == pytest.approx(FLOPS_PER_STEP * 1000 * 10**0.5)


def test_drift_is_interpolated_at_the_crossing_the_way_the_score_is() -> None:
    at_half = reach(RISING, 0.5)  # halfway through the second segment
    assert at_half["actor_rel_change"] == pytest.approx(0.2)
    assert at_half["cka_demo/policy_net.1"] == pytest.approx(0.85) and at_half["kl_demo"] == pytest.approx(1.5)
    at_first = reach(RISING, 0.3)  # halfway through the first
    assert at_first["actor_rel_change"] == pytest.approx(0.05) and at_first["kl_demo"] == pytest.approx(0.5)


# Five seeds whose crossings of 0.5 lie at 1,000 x 10^(0.1 k), k = 0 ... 4 (scores rise from 0.45 at 1,000 steps).
def seed_reaching_at(k: int) -> tuple[float, ...]:
    """Scores that cross 0.5 a fraction 0.1 k (k >= 1) into the 1,000 -> 10,000 segment, or at 1,000 (k = 0)."""
    return (0.0, 0.5, 1.0, 1.0) if k == 0 else (0.0, 0.5 - 0.1 * k / (1 - 0.1 * k) * 0.1, 0.6, 1.0)


NEVER = (0.0, 0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def censored_cells() -> pd.DataFrame:
    sweep = points(
        {
            "one_censored": [seed_reaching_at(k) for k in range(4)] + [NEVER],
            "two_censored": [seed_reaching_at(k) for k in range(3)] + [NEVER, NEVER],
        }
    )
    return gap.gap_table(gap.reach_table(sweep, targets=[0.5]), n_resamples=500).set_index("label")


def test_seed_reaching_at_crosses_where_it_says() -> None:
    for k in range(4):
        assert reach(seed_reaching_at(k), 0.5)["steps"] == pytest.approx(1000 * 10 ** (0.1 * k))


def test_iqm_is_censored_with_two_of_five_seeds_censored_and_finite_with_one(censored_cells: pd.DataFrame) -> None:
    one, two = censored_cells.loc["one_censored"], censored_cells.loc["two_censored"]
    # One censored (+inf) seed is trimmed off the top: the IQM is the mean of the middle three, k = 1, 2, 3.
    assert one["steps"] == pytest.approx(np.mean([1000 * 10 ** (0.1 * k) for k in (1, 2, 3)]))
    assert not one["censored"] and one["n_reached"] == 4 and one["steps_ci_high"] == np.inf
    assert one["flops"] == pytest.approx(FLOPS_PER_STEP * one["steps"])
    # Two: the middle three include a censored seed.
    assert two["censored"] and two["steps"] == np.inf and two["flops"] == np.inf and two["n_reached"] == 3
    assert np.isfinite(two["steps_ci_low"]) and two["steps_ci_high"] == np.inf


def test_censored_values_print_as_not_within_and_a_bound(censored_cells: pd.DataFrame) -> None:
    table = cross_env_tables(gap.Gap(pd.DataFrame(), censored_cells.reset_index(), pd.DataFrame()))[0][2]
    shown = table.set_index("start")["RL steps"]
    assert shown["two_censored"].startswith("not within 100,000 steps [") and "(3/5 reached)" in shown["two_censored"]
    assert shown["one_censored"].endswith(", > 100,000] (4/5 reached)")


def test_drift_at_the_target_is_summarised_over_the_seeds_that_reached(censored_cells: pd.DataFrame) -> None:
    # Seeds k = 0..3 cross at fractions 0, 0.1, 0.2, 0.3 of the second segment (actor 0.1 -> 0.3); the censored
    # seed has none. IQM of four: the middle two (k = 1, 2).
    one = censored_cells.loc["one_censored"]
    assert one["actor_rel_change"] == pytest.approx(np.mean([0.1 + 0.2 * 0.1 * k for k in (1, 2)]))


def test_imitation_share_is_a_ratio_of_iqms_and_undefined_near_zero() -> None:
    sweep = points(
        {
            "bc": [(0.4, 0.5, 0.8, 0.8), (0.2, 0.5, 0.8, 0.4), (0.3, 0.5, 0.8, 0.9), (0.5, 0.5, 0.8, 1.0)],
            "flat": [(0.0, 0.01, 0.02, 0.05)] * 4,
        }
    )
    share = gap.share_table(sweep, n_resamples=500).set_index(["label", "rl_steps"])
    top = share.loc[("bc", 100_000)]
    # IQM(BC): the middle two of 0.2 ... 0.5, 0.35; IQM(BC+RL): of 0.4, 0.8, 0.9, 1.0, 0.85. The IQM of the
    # per-seed ratios (0.5, 0.5, 0.33, 0.5) would be 0.5.
    assert top["share"] == pytest.approx(0.35 / 0.85)
    assert share.loc[("bc", 1000), "share"] == pytest.approx(0.35 / 0.5)
    assert top["share_ci_low"] <= top["share"] <= top["share_ci_high"]
    assert np.isnan(share.loc[("flat", 100_000), "share"])  # BC+RL at 0.05: no gain to share out


def test_cross_env_tables_have_one_row_per_env() -> None:
    sweeps = [
        points({"weak": [RISING] * 3, "strong": [(0.85, 0.9, 0.95, 1.0)] * 3, "scratch": [NEVER] * 3}, env)
        for env in ("a", "b")
    ]
    result = gap.gap_analysis(pd.concat(sweeps, ignore_index=True), ceg=pd.DataFrame(), n_resamples=200)
    for name in ("gap", "drift", "share", "ceg"):
        assert result.cross_env[name]["env"].tolist() == ["a", "b"], name
    row = result.cross_env["gap"].iloc[0]
    assert row["best_label"] == "strong" and row["best_steps"] == pytest.approx(1000.0)  # 0.9 at 1,000 steps
    assert row["scratch_steps"] == np.inf and row["start_min"] == pytest.approx(0.2)
    drift = result.cross_env["drift"].iloc[0]
    assert drift["weakest_label"] == "weak" and drift["weakest_actor_rel_change"] == pytest.approx(0.3 + 0.75 * 0.4)


# ---------------------------------------------------------------------------------------------- report


def write_env(root: Path, env: str) -> None:
    for seed in range(3):
        settings = {"env.name": env, "demos.seed": seed}
        write_job(root, f"{env}_bc_s{seed}", seed, {0: 0.3, 1000: 0.6, 5000: 0.95, 20_000: 1.0}, settings=settings)
        write_job(
            root,
            f"{env}_scratch_s{seed}",
            seed,
            {0: 0.0, 1000: 0.1, 5000: 0.5, 20_000: 0.6},
            init="scratch",
            settings=settings,
        )


def test_report_with_two_envs_has_a_cross_env_section_and_one_env_has_none(tmp_path: Path) -> None:
    write_env(tmp_path / "two", "envA")
    write_env(tmp_path / "two", "envB")
    built = report.build([tmp_path / "two"], out=tmp_path / "r2", n_resamples=100, figures=["gap_steps", "gap_drift"])
    page, markdown = built.html.read_text(), built.markdown.read_text()
    assert "Cross-env: the gap imitation leaves to RL" in page and "Cross-env: RL needed to reach 0.9" in markdown
    assert set(built.figures) == {"cross_env_gap_steps", "cross_env_gap_drift"}
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert [r["env"] for r in summary["cross_env"]["cross_env_gap"]] == ["envA", "envB"]
    assert summary["cross_env"]["cross_env_gap"][0]["scratch_steps"] == "inf"  # 0.6 at most: never 0.9
    assert (tmp_path / "r2" / "tables" / "gap.csv").exists()

    write_env(tmp_path / "one", "envA")
    single = report.build([tmp_path / "one"], out=tmp_path / "r1", n_resamples=100, figures=[])
    assert "Cross-env" not in single.html.read_text() and single.gap is None
    assert "cross_env" not in json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert not (tmp_path / "r1" / "tables" / "gap.csv").exists()


def test_how_far_imitation_alone_goes_against_the_best_bc_rl_point() -> None:
    """Per env: the best BC configuration by IQM, the best BC+RL cell and budget by IQM over seeds, and whether BC's
    best reaches it (env a: BC 0.9 against BC+RL's best 1.0 at 100,000 steps; env b: BC 0.95 against 0.6)."""
    pts = pd.concat(
        [
            points({"low": [(0.1, 0.2, 0.5, 1.0)] * 3, "high": [(0.5, 0.7, 0.8, 0.9)] * 3}, env="a"),
            points({"only": [(0.3, 0.4, 0.5, 0.6)] * 3}, env="b"),
        ]
    )
    fcells = pd.DataFrame(
        {
            "env": ["a", "a", "b"],
            "label": ["d4", "f64", "d1"],
            "score_iqm": [0.5, 0.9, 0.95],
            "demos": [4, 64, 1],
            "grad_steps": [2000, 8000, 2000],
            "bc_flops": [1e9, 4e9, 5e8],
        }
    )
    table = gap.frontier_reach_table(pts, fcells).set_index("env")
    assert table.loc["a", ["bc_label", "bc_score", "bc_configs"]].tolist() == ["f64", 0.9, 2]
    assert table.loc["a", ["bc_rl_label", "bc_rl_steps", "bc_rl_score"]].tolist() == ["low", 100_000, 1.0]
    assert table.loc["b", ["bc_rl_label", "bc_rl_steps", "bc_rl_score"]].tolist() == ["only", 100_000, 0.6]
    assert table["bc_covers"].tolist() == [False, True]
