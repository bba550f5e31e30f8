"""The expert's identity and the normalized score's two ends: what keys the expert, what identifies it, and on
which episodes the 0 and the 1 are measured."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy

from testbed.config import to_config
from testbed.demonstrations import demos_key
from testbed.envs import full_observation
from testbed.evaluate import evaluate, policy_act, random_act
from testbed.expert import expert_key, get_expert
from testbed.pipeline import run
from tests.conftest import CfgFactory, make_job

pytestmark = pytest.mark.slow

BASE = ("env=cartpole", "debug=fast", "logger=none")


def key(*overrides: str) -> str:
    return expert_key(make_job(*BASE, *overrides))


@pytest.mark.parametrize(
    "learner_setting",
    [
        "env.ppo.learning_rate=0.0001",
        "env.net_arch=[256,256]",
        "env.activation=relu",
        "expert.eval_episodes=7",
        "env.n_envs=4",
        "rl.learning_rate=0.01",
        "seed=3",
        "eval.episodes=9",
    ],
)
def test_learner_settings_leave_the_expert_alone(learner_setting: str) -> None:
    assert key(learner_setting) == key()


@pytest.mark.parametrize(
    "expert_setting",
    [
        "env.expert_kwargs.learning_rate=0.0001",
        "env.expert_net_arch=[32,32]",
        "env.expert_activation=relu",
        "env.expert_timesteps=30000",
        "expert.seed=1",
        "env.max_episode_steps=100",
    ],
)
def test_what_trains_the_expert_keys_it(expert_setting: str) -> None:
    assert key(expert_setting) != key()


def test_a_learner_width_sweep_shares_one_expert(cache_dir: Path) -> None:
    narrow = get_expert(make_job(*BASE, f"cache_dir={cache_dir}", "env.net_arch=[32,32]"))
    wide = get_expert(make_job(*BASE, f"cache_dir={cache_dir}", "env.net_arch=[256,256]"))
    assert narrow.path == wide.path and wide.source == "cache"
    assert isinstance(wide.model, BaseAlgorithm)
    policy = cast(ActorCriticPolicy, wide.model.policy)  # a PPO expert's
    assert [m.out_features for m in policy.mlp_extractor.policy_net if hasattr(m, "out_features")] == [
        64,
        64,
    ], "the expert keeps its own architecture"


def test_identical_trainings_are_one_expert_and_share_datasets(tmp_path: Path) -> None:
    """SB3 zips of identical trainings differ in bytes; the expert's identity is its parameters."""
    experts, keys = [], []
    for name in ("a", "b"):
        cfg = make_job(*BASE, f"cache_dir={tmp_path / name}", "env.expert_timesteps=2048")
        experts.append(get_expert(cfg))
        keys.append(demos_key(cfg, experts[-1]))
    a, b = experts
    print({"zip_sha256_equal": a.sha256 == b.sha256})
    assert a.params_sha256 == b.params_sha256 and a.key == b.key
    assert keys[0] == keys[1], "a rebuilt identical expert keeps its datasets"


def test_both_ends_of_the_normalized_score_use_the_jobs_evaluation_episodes(fast_cfg: CfgFactory) -> None:
    composed = fast_cfg("eval.seed=3")  # debug=fast: the expert is checked on 10 episodes, jobs evaluate 5
    data = run(composed)
    cfg = to_config(composed)
    refs, episodes, seed = data["references"], cfg.eval.episodes, cfg.eval.seed
    expert = get_expert(cfg)
    assert isinstance(expert.model, BaseAlgorithm)
    env = full_observation(cfg.env)
    expert_cap = evaluate(env, policy_act(expert.model.policy), episodes, seed)
    random_cap = evaluate(env, random_act(env, seed=seed), episodes, seed)
    assert (refs["episodes"], refs["eval_seed"]) == (episodes, seed) != (cfg.expert.eval_episodes, 0)
    assert refs["expert_return"] == expert_cap.mean and refs["expert_return_std"] == expert_cap.std
    assert refs["random_return"] == random_cap.mean
    bc = data["checkpoints"][0]
    expected = (bc["eval/return_mean"] - random_cap.mean) / (expert_cap.mean - random_cap.mean)
    assert np.isclose(bc["eval/normalized_score"], expected)
