"""Analysis and report on a synthetic sweep whose answers are known: CEG = 4, a censored point, listed failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from testbed import analysis, report
from testbed.cache import content_hash
from testbed.report.tables import _ceg_table, _gain_text, headline
from testbed.results import _NOT_HASHED

C0 = 1e8  # BC FLOPs of the smallest BC configuration
RL_FLOPS = {0: 0.0, 1000: 1e8, 5000: 5e8, 20_000: 2e9}
NOISE = (-0.02, -0.01, 0.0, 0.01, 0.02)  # per seed: the IQM of five seeds is exactly the curve's value
SEEDS = range(5)
N_RESAMPLES = 1000
Flops = TypeVar("Flops", float, npt.NDArray[np.floating[Any]])  # one compute or an array of them


def bc_curve(flops: Flops) -> Flops:
    """Known BC capability: 0.1 per doubling of BC compute above C0."""
    return 0.1 * np.log2(flops / C0)


def write_job(
    root: Path,
    name: str,
    seed: int,
    scores: dict[int, float],
    *,
    init: str = "bc",
    grad_steps: int = 100,
    demos: int = 2,
    status: str = "complete",
    variant: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """A results.json following README's schema (only the columns the analysis reads are filled in).

    `settings`: more config values by dotted key, e.g. {"demos.seed": seed, "env.net_arch": [32, 32]}.
    """
    folder = root / name
    folder.mkdir(parents=True)
    variant = variant or init
    config: dict[str, Any] = {
        "env": {"name": "synth", "id": "Synth-v0"},
        "demos": {"episodes": demos, "epsilon": 0.0},
        "bc": {"grad_steps": grad_steps},
        "rl": {"init": init, "budgets": sorted(scores)},
        "eval": {"episodes": 10},
        "seed": seed,
        "variant": variant,
        "output_dir": str(folder),
    }
    for key, value in (settings or {}).items():
        *parents, leaf = key.split(".")
        section = config
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    bc_flops = C0 * grad_steps / 100 if init == "bc" else 0.0
    rows = [
        {
            "rl_steps": steps,
            "eval/return_mean": 100 * score,
            "eval/return_std": 1.0,
            "eval/normalized_score": score,
            "eval/success_rate": None,
            "compute/bc/flops": bc_flops,
            "compute/bc/demo_transitions": 500 * demos,
            "compute/rl/flops": RL_FLOPS[steps],
            "compute/total/flops": bc_flops + RL_FLOPS[steps],
            "drift/weights/actor/rel_change": steps / 1e4,
            "drift/weights/all/rel_change": steps / 5e3,
            "drift/cka/demo/policy_net.1": 1 - steps / 1e5,
            "drift/kl/demo": steps / 1e5,
            "drift_table": [
                {"layer": "actor/policy_net.0", "rel_change": steps / 1e4, "cka/demo": 1 - steps / 1e5},
                {"layer": "critic/value_net.0", "rel_change": steps / 2e3},
            ],
        }
        for steps, score in sorted(scores.items())
    ]
    data = {
        "schema_version": 1,
        "status": status,
        "run_name": f"synth-{variant}-s{seed}",
        "env_id": "Synth-v0",
        "variant": variant,
        "seed": seed,
        "config": config,
        "config_hash": content_hash({k: v for k, v in config.items() if k not in _NOT_HASHED}),
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:01:00+00:00",
        "artifacts": {},
        "references": {"random_return": 0.0, "expert_return": 100.0},
        "bc": None,
        "checkpoints": rows if status == "complete" else rows[:1],
        "timings": {},
        "error": {"type": "RuntimeError", "message": "boom", "traceback": ""} if status == "failed" else None,
    }
    (folder / "results.json").write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BC-only jobs on the known curve; a BC+RL cell that reaches the BC value at 4x its compute at 1000 RL
    steps and lies above every BC point at 5000; RL from scratch; a failed, a killed and a duplicate job."""
    root = tmp_path_factory.mktemp("synthetic")
    for k in range(8):  # BC-only: 100 ... 12,800 grad steps, C0 ... 128 C0
        for seed in SEEDS:
            write_job(root / "bc_only", f"g{k}_s{seed}", seed, {0: 0.1 * k + NOISE[seed]}, grad_steps=100 * 2**k)
    c_bc = 4 * C0
    for seed in SEEDS:
        write_job(
            root / "bc_rl",
            f"s{seed}",
            seed,
            {0: bc_curve(c_bc) + NOISE[seed], 1000: bc_curve(4 * c_bc) + NOISE[seed], 5000: 0.9},
            grad_steps=400,
        )
        write_job(root / "scratch", f"s{seed}", seed, {0: 0.0, 1000: 0.1, 5000: 0.3, 20_000: 0.5}, init="scratch")
    write_job(root / "broken", "failed", 7, {0: 0.5, 1000: 0.5}, grad_steps=400, status="failed")
    write_job(root / "broken", "killed", 8, {0: 0.5, 1000: 0.5}, grad_steps=400, status="running")
    shutil.copytree(root / "bc_rl" / "s0", root / "broken" / "copy_of_s0")
    (root / "broken" / "no_results" / ".hydra").mkdir(parents=True)
    (root / "broken" / "no_results" / ".hydra" / "config.yaml").write_text("env: {name: synth}\nvariant: bc\nseed: 9\n")
    return root


@pytest.fixture(scope="module")
def result(sweep_dir: Path) -> analysis.Analysis:
    return analysis.analyse(analysis.load([sweep_dir]), n_resamples=N_RESAMPLES)


def ceg_row(result: analysis.Analysis, rl_steps: int) -> dict[str, Any]:
    rows = result.ceg[result.ceg["rl_steps"] == rl_steps]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def test_tidy_table_has_one_row_per_job_and_checkpoint(result: analysis.Analysis) -> None:
    points = result.sweep.points
    assert len(points) == 8 * 5 + 5 * 3 + 5 * 4  # duplicates, failed and killed jobs are not in it
    assert set(points["variant"]) == {"bc", "scratch"} and set(points["env"]) == {"synth"}
    assert not points.duplicated(["config_hash", "rl_steps"]).any()
    assert set(analysis.kinds(points).value_counts().to_dict().items()) == {
        ("bc_only", 7),
        ("bc_rl", 1),
        ("scratch", 1),
    }


def test_frontier_recovers_the_known_curve(result: analysis.Analysis) -> None:
    frontier = result.frontiers[("synth", "flops")]
    flops = C0 * 2.0 ** np.arange(8)
    np.testing.assert_allclose(frontier(flops), bc_curve(flops), atol=1e-9)
    np.testing.assert_allclose(frontier(C0 * 2**2.5), 0.25, atol=1e-9)  # linear in log-compute between points
    assert np.isnan(frontier(C0 / 2)) and np.isnan(frontier(C0 * 256))  # never extrapolated


def test_ceg_is_four_when_rl_matches_bc_at_four_times_the_compute(result: analysis.Analysis) -> None:
    row = ceg_row(result, 1000)
    assert row["ceg"] == pytest.approx(4.0)
    assert row["ceg_ci_low"] <= 4.0 <= row["ceg_ci_high"] and row["ceg_ci_low"] < row["ceg_ci_high"]
    assert row["ceg_charged"] == pytest.approx(16 * C0 / (4 * C0 + RL_FLOPS[1000]))
    assert row["ceg_censor"] == 0 and not row["ceg_ci_high_censored"]


def test_the_bc_start_is_marked_as_the_start_not_reported_as_a_gain(result: analysis.Analysis) -> None:
    start = ceg_row(result, 0)  # its CEG would be 1 [1, 1] by construction: the start lies on its own frontier
    gains = [f"{g}{end}" for g in ("ceg", "ceg_charged", "deg") for end in ("", "_ci_low", "_ci_high")]
    assert start["start"] and np.isnan([start[c] for c in gains]).all()
    assert start["score"] == pytest.approx(bc_curve(4 * C0))  # its capability is still there
    assert not result.ceg.loc[result.ceg["rl_steps"] > 0, "start"].any()
    assert _gain_text(result.ceg[result.ceg["rl_steps"] == 0].iloc[0], "ceg") == "start"
    ceg_table = _ceg_table(result)
    assert ceg_table is not None
    _, _, table = ceg_table
    shown = table.set_index("RL steps")
    assert (shown.loc[0, ["CEG [95% CI]", "cost-charged [95% CI]", "DEG [95% CI]"]] == "start").all()
    assert shown.loc[1000, "CEG [95% CI]"].startswith("4 [")
    assert all(row["rl_steps"] > 0 for row in headline(result))


def test_point_above_the_frontier_is_a_lower_bound(result: analysis.Analysis) -> None:
    row = ceg_row(result, 5000)
    assert row["ceg_censor"] == 1 and row["ceg_ci_high_censored"]
    assert row["ceg"] == pytest.approx(128 / 4)  # the largest BC compute over C_BC, not an extrapolation
    text = _gain_text(result.ceg[result.ceg["rl_steps"] == 5000].iloc[0], "ceg")
    assert text.startswith(">= 32")


def test_frontier_fit_takes_the_best_per_cost_then_pools_violators() -> None:
    cost = np.array([1e6, 1e6, 2e6, 4e6, 8e6])
    score = np.array([0.1, 0.3, 0.5, 0.4, 0.9])  # two configurations at 1e6; a dip at 4e6
    f = analysis.fit_frontier(cost, score)
    np.testing.assert_allclose(f.score, [0.3, 0.45, 0.45, 0.9])
    eq, censor = f.inverse(np.array([0.3, 0.45, 0.675, 0.95, 0.2]))
    np.testing.assert_allclose(eq, [1e6, 2e6, 4e6 * 2**0.5, 8e6, 1e6])  # a plateau maps to its start
    np.testing.assert_array_equal(censor, [0, 0, 0, 1, -1])


def test_scratch_budget_and_not_reached(result: analysis.Analysis) -> None:
    s = result.scratch.set_index("rl_steps")
    assert s.loc[1000, "reached"] and s.loc[1000, "scratch_steps"] == 20_000  # 0.4: between 5,000 and 20,000
    assert s.loc[1000, "scratch_steps_after"] == 5000
    assert not s.loc[5000, "reached"] and s.loc[5000, "scratch_max_steps"] == 20_000  # 0.9: never


def test_matched_compute_and_tradeoff(result: analysis.Analysis) -> None:
    m = result.matched.set_index("rl_steps")
    assert m.loc[1000, "bc_flops"] == 4 * C0  # the best BC-only policy within 5 C0 total FLOPs
    assert m.loc[1000, "prob_improvement"] == 1.0
    t = result.tradeoff.set_index("rl_steps")
    assert t.loc[1000, "gain"] == pytest.approx(0.2) and t.loc[5000, "actor_rel_change"] == pytest.approx(0.5)


def test_failed_killed_missing_and_duplicate_jobs_are_listed(sweep_dir: Path, tmp_path: Path) -> None:
    built = report.build([sweep_dir], out=tmp_path / "report", n_resamples=200, figures=["ceg"])  # all: slow tier
    problems = built.tables["jobs"].loc[~built.tables["jobs"]["included"]].set_index("folder")["problem"]
    broken = sweep_dir / "broken"
    assert problems[str(broken / "failed")].startswith("failed: RuntimeError: boom")
    assert problems[str(broken / "killed")].startswith("running: incomplete")
    assert problems[str(broken / "no_results")].startswith("no results.json")
    assert problems[str(broken / "copy_of_s0")].startswith("duplicate of")
    page, markdown = built.html.read_text(), built.markdown.read_text()
    for name in ("failed", "killed", "no_results", "copy_of_s0"):
        assert str(broken / name) in page and str(broken / name) in markdown
    assert "&gt;= 32" in page and ">= 32" in markdown
    assert set(built.figures) == {"synth_ceg"}
    for path in built.figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1024


# ------------------------------------------------------------------- cells and frontier groups by config


def labelled(root: Path) -> analysis.Sweep:
    return analysis.load([root])


def seeds_per_cell(points: Any) -> dict[str, list[int]]:
    return {label: sorted(set(g["seed"])) for label, g in points.groupby("label")}


def test_demos_seed_that_follows_the_seed_gives_one_cell_per_configuration(tmp_path: Path) -> None:
    for seed in range(3):  # the default, demos.seed: ${seed}: every seed draws its own demonstrations
        follows = {"demos.seed": seed}
        for steps in (100, 200):
            write_job(
                tmp_path,
                f"bc_only_g{steps}_s{seed}",
                seed,
                {0: 0.1 * seed},
                grad_steps=steps,
                variant="bc_only",
                settings=follows,
            )
        write_job(tmp_path, f"bc_rl_s{seed}", seed, {0: 0.2, 1000: 0.5}, grad_steps=200, settings=follows)
    points = labelled(tmp_path).points
    assert seeds_per_cell(points) == {
        "bc bc.grad_steps=200": [0, 1, 2],
        "bc_only bc.grad_steps=100": [0, 1, 2],
        "bc_only bc.grad_steps=200": [0, 1, 2],
    }
    assert set(points["frontier"]) == {"synth"}
    cells = analysis.frontier_cells(analysis.cell_points(points))
    assert cells["grad_steps"].tolist() == [100, 200]  # the BC+RL jobs' snapshots are the 200-step configuration's
    assert [s.tolist() for s in cells["seeds"]] == [[0, 1, 2], [0, 1, 2]]
    assert points["demos_follow_seed"].all() and (points["demos_seed"] == points["seed"]).all()


def test_a_fixed_demos_seed_makes_its_own_cell_even_where_it_equals_a_seed(tmp_path: Path) -> None:
    for seed in range(3):
        for fixed in (0, 1):  # one set for all seeds; seed 0 of the first and seed 1 of the second match it
            write_job(
                tmp_path, f"fixed{fixed}_s{seed}", seed, {0: 0.1}, variant="bc_only", settings={"demos.seed": fixed}
            )
        write_job(
            tmp_path, f"own_s{seed}", seed, {0: 0.1}, grad_steps=200, variant="bc_only", settings={"demos.seed": seed}
        )
    points = labelled(tmp_path).points
    assert seeds_per_cell(points) == {
        "bc_only demos.seed=0 bc.grad_steps=100": [0, 1, 2],
        "bc_only demos.seed=1 bc.grad_steps=100": [0, 1, 2],
        "bc_only demos.seed=${seed} bc.grad_steps=200": [0, 1, 2],
    }
    assert set(points["frontier"]) == {"synth"}  # the same demonstration source: one frontier
    sets = analysis.demonstration_sets(points).set_index("env")
    assert sets.loc["synth", "mode"] == "mixed" and sets.loc["synth", "fixed_seeds"] == [0, 1]


def test_learner_width_and_ppo_share_a_frontier_the_experts_do_not(tmp_path: Path) -> None:
    learner: dict[str, Any] = {
        "env.net_arch": [64, 64],
        "env.ppo": {"learning_rate": 3e-4},
        "env.expert_net_arch": None,
        "env.expert_activation": None,
    }
    jobs: dict[str, dict[str, Any]] = {
        "w32": learner | {"env.net_arch": [32, 32]},
        "w64": learner,
        "ppo": learner | {"env.ppo": {"learning_rate": 1e-3}},  # a learner setting too (BC+RL below)
        "big_expert": learner | {"env.expert_net_arch": [256, 256]},
        "relu_expert": learner | {"env.expert_activation": "relu"},
    }
    for seed in range(2):
        for name, settings in jobs.items():
            write_job(
                tmp_path,
                f"{name}_s{seed}",
                seed,
                {0: 0.1, 1000: 0.3} if name == "ppo" else {0: 0.1},
                variant=name,
                settings=settings | {"demos.seed": seed},
            )
    cells = labelled(tmp_path).points.groupby("variant")[["label", "frontier"]].first()
    assert "env.net_arch=[32,32]" in cells.loc["w32", "label"] and "env.net_arch=[64,64]" in cells.loc["w64", "label"]
    assert cells.loc["w32", "frontier"] == cells.loc["w64", "frontier"] == cells.loc["ppo", "frontier"]
    assert "env.expert_net_arch=[256,256]" in cells.loc["big_expert", "frontier"]
    assert "env.expert_activation=relu" in cells.loc["relu_expert", "frontier"]
    assert cells["frontier"].nunique() == 3


@pytest.mark.parametrize(
    ("demos_seed", "statement"),
    [
        (lambda seed: seed, "demonstrations: each seed its own set (demos.seed = seed)"),
        (lambda seed: 7, "demonstrations: one fixed set (demos.seed = 7) for all seeds"),
    ],
)
def test_report_says_which_demonstrations_each_seed_used(tmp_path: Path, demos_seed: Any, statement: str) -> None:
    for seed in range(3):
        write_job(tmp_path / "sweep", f"s{seed}", seed, {0: 0.2, 1000: 0.5}, settings={"demos.seed": demos_seed(seed)})
    built = report.build([tmp_path / "sweep"], out=tmp_path / "report", n_resamples=50, figures=[])
    assert f"synth: {statement}" in built.html.read_text() and f"synth: {statement}" in built.markdown.read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    mode = "per_seed" if "each seed" in statement else "fixed"
    assert summary["demonstrations"]["synth"] == {
        "mode": mode,
        "fixed_seeds": [] if mode == "per_seed" else [7],
        "statement": statement,
    }


def test_importing_the_analysis_and_the_report_leaves_matplotlibs_backend_alone(tmp_path: Path) -> None:
    """A notebook's backend survives `import testbed.report`; only the report's CLI switches to Agg, to draw."""
    code = (
        "import sys, matplotlib; matplotlib.use('svg'); import testbed.analysis, testbed.report, "
        "testbed.report.figures, testbed.report.__main__ as cli; print(matplotlib.get_backend().lower()); "
        "code = cli.main([sys.argv[1], '--no-wandb']); print(code, matplotlib.get_backend().lower())"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["svg", "2 agg"]  # 2: an empty folder, nothing to report
