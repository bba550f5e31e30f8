"""The parity memory task (testbed/tasks.py) and its exact planner: known answers for the expert, the random
policy, the hidden running result, seeding, n and the cache keys."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
import pytest

import testbed.tasks
from testbed.config import EnvConfig
from testbed.envs import check_spaces, env_key_fields, full_observation, make_env
from testbed.evaluate import evaluate, policy_act, random_act
from testbed.planners import PlannerModel, parity_action
from testbed.validation import validate_job
from tests.conftest import make_job


def parity_env(n: int = 16, *overrides: str) -> EnvConfig:
    return make_job("env=parity", f"env.kwargs.n={n}", *overrides).env


def rollout(env: gym.Env, seed: int) -> np.ndarray:
    """The observations acted on in one episode from reset(seed): n bits, then the query (actions all 0)."""
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    while True:
        obs, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            return np.array(seen)
        seen.append(obs)


@pytest.mark.parametrize("n", [8, 16, 64])
def test_the_planner_answers_every_episode_in_n_plus_one_steps(n: int) -> None:
    cfg = full_observation(parity_env(n))
    cap = evaluate(cfg, policy_act(PlannerModel("parity")), 30)
    assert np.all(cap.returns == 1.0) and cap.success_rate == 1.0
    assert np.all(cap.lengths == n + 1)


def test_random_answers_are_right_about_half_the_time() -> None:
    cfg = full_observation(parity_env(8))
    cap = evaluate(cfg, random_act(cfg), 400)
    assert set(np.unique(cap.returns)) <= {0.0, 1.0}
    assert 0.4 < cap.mean < 0.6, cap.mean  # binomial std 0.025: four of them either side


def test_the_learner_never_sees_the_running_parity_and_the_expert_always_does() -> None:
    masked, full = make_env(parity_env(16)), make_env(full_observation(parity_env(16)))
    for seed in range(5):
        hidden, shown = rollout(masked, seed), rollout(full, seed)
        bits = shown[:-1, 0].astype(int)
        assert len(shown) == 16 + 1
        assert np.all(hidden[:, 2] == 0.0)
        assert np.array_equal(hidden[:, :2], shown[:, :2])
        assert np.array_equal(shown[:-1, 2], np.cumsum(bits) % 2)  # XOR of the bits so far, this one included
        assert list(shown[-1]) == [0.0, 1.0, bits.sum() % 2]  # the query step
        assert np.all(shown[:-1, 1] == 0.0)


def test_the_same_seed_shows_the_same_bits() -> None:
    env = make_env(parity_env(32))
    assert np.array_equal(rollout(env, 3), rollout(env, 3))
    assert not np.array_equal(rollout(env, 3), rollout(env, 4))  # 2**-32 to collide


def test_the_planner_answers_only_at_the_query() -> None:
    """Showing steps get action 0 whatever the running parity: labels must not leak the sub-results."""
    assert parity_action(np.array([1, 0, 1], dtype=np.float32)) == 0
    assert parity_action(np.array([0, 1, 1], dtype=np.float32)) == 1
    assert parity_action(np.array([0, 1, 0], dtype=np.float32)) == 0
    obs = rollout(make_env(full_observation(parity_env(8))), 0)
    actions, _ = PlannerModel("parity").predict(obs)
    assert list(actions) == [0] * 8 + [int(obs[-1, 2])]
    assert [int(PlannerModel("parity").predict(o)[0]) for o in obs] == list(actions)


@pytest.mark.parametrize("n", [0, -1, 4097])
def test_an_impossible_n_fails_naming_the_key(n: int) -> None:
    with pytest.raises(ValueError, match="env.kwargs.n"):
        make_env(parity_env(n))


def test_n_keys_the_caches_and_envs_without_kwargs_keep_their_keys() -> None:
    assert env_key_fields(parity_env(8)) != env_key_fields(parity_env(16))
    assert env_key_fields(parity_env(8))["kwargs"] == {"n": 8}
    assert env_key_fields(make_job("env=cartpole").env) == {
        "id": "CartPole-v1",
        "max_episode_steps": None,
        "wrapper": None,
        "mask_velocity": False,
    }


def test_the_config_composes_validates_and_builds_its_n() -> None:
    cfg = make_job("env=parity", "env.kwargs.n=32")
    validate_job(cfg)
    assert (cfg.env.name, cfg.env.kwargs, cfg.env.mask_velocity) == ("parity", {"n": 32}, True)
    assert make_env(cfg.env).unwrapped.n == 32  # type: ignore[attr-defined]


def test_a_planner_on_the_wrong_env_fails_naming_the_keys() -> None:
    with pytest.raises(ValueError, match=r"env.expert_planner='parity'.*env.id='CartPole-v1'"):
        check_spaces(make_job("env=cartpole", "env.expert_algo=planner", "env.expert_planner=parity").env)
    with pytest.raises(ValueError, match=r"env.expert_planner='minigrid_doorkey'.*env.id='testbed/Parity-v0'"):
        validate_job(make_job("env=parity", "env.expert_planner=minigrid_doorkey"))


def test_importing_the_tasks_again_keeps_one_registration() -> None:
    importlib.reload(testbed.tasks)
    assert gym.spec(testbed.tasks.PARITY_ID).entry_point == "testbed.tasks:ParityEnv"
