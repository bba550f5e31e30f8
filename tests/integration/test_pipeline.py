"""The whole pipeline on the fast CartPole config: schema, BC quality, exact handoff, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

from testbed import analysis
from testbed.bc import to_tensors, train_bc
from testbed.demonstrations import get_demonstrations
from testbed.envs import make_vec_env
from testbed.expert import get_expert
from testbed.finetune import finetune
from testbed.pipeline import run
from testbed.policy import build_ppo
from testbed.results import TOP_LEVEL_KEYS
from tests.conftest import CfgFactory, JobFactory

pytestmark = pytest.mark.slow

CHECKPOINT_KEYS = {
    "rl_steps",
    "eval/return_mean",
    "eval/return_std",
    "eval/normalized_score",
    "eval/success_rate",
    "compute/rl/env_steps",
    "compute/rl/samples",
    "compute/rl/grad_steps",
    "compute/rl/wall_s",
}


def test_fast_pipeline_writes_the_documented_schema(fast_cfg: CfgFactory) -> None:
    cfg = fast_cfg()
    returned = run(cfg)
    data = json.loads((Path(cfg.output_dir) / "results.json").read_text())
    assert data == json.loads(json.dumps(returned, default=str))
    assert set(data) >= set(TOP_LEVEL_KEYS), set(TOP_LEVEL_KEYS) - set(data)
    assert data["status"] == "complete" and data["error"] is None
    assert data["run_name"] == "cartpole-bc-s0"
    assert {"expert", "demos", "bc_policy", "final_policy"} <= set(data["artifacts"])
    for artifact in data["artifacts"].values():
        assert len(artifact["sha256"]) == 64 and Path(artifact["path"]).exists()
    assert data["references"]["random_return"] < data["references"]["expert_return"]
    assert [row["rl_steps"] for row in data["checkpoints"]] == [0, 512, 1024]
    for row in data["checkpoints"]:
        assert set(row) >= CHECKPOINT_KEYS, CHECKPOINT_KEYS - set(row)
    assert data["bc"]["grad_steps"] == 200 and data["bc"]["samples"] > 0
    import stable_baselines3
    import torch

    versions = data["versions"]
    assert set(versions) == {
        "python",
        "torch",
        "stable-baselines3",
        "sb3-contrib",
        "gymnasium",
        "numpy",
        "hydra-core",
        "wandb",
    }
    assert (versions["torch"], versions["stable-baselines3"]) == (torch.__version__, stable_baselines3.__version__)


def test_bc_agrees_with_the_expert_on_held_out_states(fast_job: JobFactory) -> None:
    cfg = fast_job("bc.grad_steps=1000", "demos.episodes=4")
    expert = get_expert(cfg)
    demos = get_demonstrations(cfg, expert)
    model = build_ppo(cfg.env, make_vec_env(cfg.env, 0), seed=0)
    result = train_bc(model.policy, demos, cfg.bc, seed=0, progress=False)
    assert result.val_transitions >= 50
    assert result.val_agreement >= 0.95, result


@pytest.mark.parametrize("warmup", [0, 256])
def test_handoff_is_exact_and_warmup_leaves_the_actor_alone(fast_job: JobFactory, warmup: int) -> None:
    cfg = fast_job("rl.budgets=[0]", f"rl.critic_warmup_steps={warmup}")
    demos = get_demonstrations(cfg, get_expert(cfg))
    model = build_ppo(cfg.env, make_vec_env(cfg.env, 0), seed=0)
    train_bc(model.policy, demos, cfg.bc, seed=0, progress=False)
    obs, _ = to_tensors(model.policy, demos)
    with torch.no_grad():
        # CartPole: SB3's CategoricalDistribution, whose torch distribution is one Categorical
        bc_probs = cast(Categorical, model.policy.get_distribution(obs).distribution).probs.clone()
    seen = {}

    def on_checkpoint(steps, m):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            seen[steps] = m.policy.get_distribution(obs).distribution.probs.clone()
        return {}

    finetune(model, cfg.rl, on_checkpoint, progress=False)
    assert torch.equal(seen[0], bc_probs), "PPO must start exactly at the BC action distribution"
    if warmup:
        assert model.num_timesteps >= warmup, "the critic warm-up ran"


def test_same_seed_twice_is_bit_identical(fast_cfg: CfgFactory, tmp_path: Path) -> None:
    first = run(fast_cfg(f"output_dir={tmp_path / 'a'}"))
    second = run(fast_cfg(f"output_dir={tmp_path / 'b'}"))
    a = torch.load(tmp_path / "a" / "bc_policy.pt")
    b = torch.load(tmp_path / "b" / "bc_policy.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if "wall_s" not in k} for r in rows]  # noqa: E731
    assert strip(first["checkpoints"]) == strip(second["checkpoints"])


def test_one_long_run_equals_a_separate_run_at_each_budget(fast_cfg: CfgFactory, tmp_path: Path) -> None:
    long = run(fast_cfg(f"output_dir={tmp_path / 'long'}"))
    single = run(fast_cfg(f"output_dir={tmp_path / 'single'}", "rl.budget=512"))
    by_steps = {r["rl_steps"]: r for r in long["checkpoints"]}
    assert [r["rl_steps"] for r in single["checkpoints"]] == [0, 512]
    for row in single["checkpoints"]:
        assert row["eval/return_mean"] == by_steps[row["rl_steps"]]["eval/return_mean"]
    # Budget 0 reproduces the BC capability.
    assert single["checkpoints"][0]["eval/return_mean"] == by_steps[0]["eval/return_mean"]
    assert np.isfinite(long["checkpoints"][-1]["eval/normalized_score"])


def test_bc_checkpoints_equal_separate_runs_and_change_nothing_after(fast_cfg: CfgFactory, tmp_path: Path) -> None:
    """A job evaluated at bc.checkpoints: each stop scores as a separate BC run of that many steps (and the analysis
    takes it as that run's BC snapshot, one cell), and its BC policy and RL rows are those of a job without stops."""
    stopped = run(fast_cfg(f"output_dir={tmp_path / 'stopped'}", "bc.checkpoints=[50,120]", "rl.budgets=[0,512]"))
    separate = run(fast_cfg(f"output_dir={tmp_path / 'separate'}", "bc.grad_steps=120", "rl.budgets=[0]"))
    plain = run(fast_cfg(f"output_dir={tmp_path / 'plain'}", "rl.budgets=[0,512]"))
    rows = stopped["bc"]["checkpoints"]
    assert [r["bc/grad_steps"] for r in rows] == [50, 120]
    assert rows[1]["eval/return_mean"] == separate["checkpoints"][0]["eval/return_mean"]
    for column in ("compute/bc/flops", "compute/bc/demo_transitions"):
        assert rows[1][column] == separate["checkpoints"][0][column], column
    strip = lambda rows: [{k: v for k, v in r.items() if "wall_s" not in k} for r in rows]  # noqa: E731
    assert strip(stopped["checkpoints"]) == strip(plain["checkpoints"])
    assert stopped["config_hash"] != plain["config_hash"]  # its results hold more: never taken for the plain job's

    points = analysis.load([tmp_path]).points
    at_120 = points[(points["grad_steps"] == 120) & (points["rl_steps"] == 0)]
    assert len(at_120) == 2 and at_120["cell"].nunique() == 1  # the stop and the separate run: one cell
    assert set(points.loc[points["rl_steps"] == 0, "grad_steps"]) == {50, 120, 200}
