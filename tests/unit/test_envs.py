"""Every env config composes and builds an env that passes gymnasium's and SB3's checkers; velocity masking
hides exactly the configured components, and those components are the velocities."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from testbed.envs import HIDDEN_INDICES, make_env
from testbed.validation import validate_job
from tests.conftest import CONF, make_job

ENV_NAMES = sorted(p.stem for p in (CONF / "env").glob("*.yaml"))
MASKABLE = sorted(name for name in ENV_NAMES if make_job(f"env={name}").env.id in HIDDEN_INDICES)


# The env each config file must build.
ENV_IDS = {
    "acrobot": "Acrobot-v1",
    "cartpole": "CartPole-v1",
    "doorkey": "MiniGrid-DoorKey-5x5-v0",
    "doorkey8": "MiniGrid-DoorKey-8x8-v0",
    "lunarlander": "LunarLander-v3",
    "mountaincar": "MountainCar-v0",
    "pendulum": "Pendulum-v1",
}
# The env files whose velocity components are known (testbed.envs.HIDDEN_INDICES), so env.mask_velocity works.
VELOCITY_ENVS = {"acrobot", "cartpole", "lunarlander", "mountaincar", "pendulum"}


def test_each_env_file_builds_its_own_env_and_masking_covers_the_known_velocities() -> None:
    """Every env file composes to its own env id and builds that env; `env.mask_velocity` works for exactly the
    configured envs whose velocity components are known (every entry of HIDDEN_INDICES has a config) and
    fails loudly, naming the key, for the others."""
    ids = {name: make_job(f"env={name}").env.id for name in ENV_NAMES}
    assert ENV_IDS.items() <= ids.items(), ids
    assert len(set(ids.values())) == len(ids), f"two env files build the same env: {ids}"
    for name, env_id in ids.items():
        assert make_env(make_job(f"env={name}").env).unwrapped.spec.id == env_id  # type: ignore[union-attr]
    assert set(MASKABLE) >= VELOCITY_ENVS, MASKABLE
    assert {ids[name] for name in MASKABLE} == set(HIDDEN_INDICES), "a velocity table entry with no env file"
    for name in sorted(set(ENV_NAMES) - set(MASKABLE)):
        with pytest.raises(ValueError, match="env.mask_velocity"):
            make_env(make_job(f"env={name}", "env.mask_velocity=true").env)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_config_composes_validates_and_sets_its_defaults(name: str) -> None:
    cfg = make_job(f"env={name}")
    validate_job(cfg)
    assert cfg.env.name == name
    assert cfg.env.reference_return is not None
    assert cfg.env.expert_timesteps > 0 or cfg.env.expert_algo == "planner"  # a planner trains nothing
    # The env's defaults reach the other groups, and an explicit override still wins.
    assert cfg.demos.episodes == cfg.env.demo_episodes
    assert list(cfg.rl.budgets) == list(cfg.env.rl_budgets)
    assert make_job(f"env={name}", "demos.episodes=7", "rl.budgets=[0,5]").demos.episodes == 7
    assert list(make_job(f"env={name}", "rl.budgets=[0,5]").rl.budgets) == [0, 5]


def _checked_envs(name: str) -> list[tuple[str, gym.Env]]:
    cfg = make_job(f"env={name}")
    envs = [("plain", make_env(cfg.env))]
    if name in MASKABLE:
        envs.append(("masked", make_env(make_job(f"env={name}", "env.mask_velocity=true").env)))
    return envs


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_passes_gymnasium_checker(name: str) -> None:
    for _, env in _checked_envs(name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # advice (unbounded or degenerate Box, unnormalized actions), not errors
            gym_check_env(env.unwrapped, skip_render_check=True)
            # With the testbed's wrappers; MiniGrid's ImgObsWrapper cannot be rebuilt from a spec, which only the
            # close check needs.
            minigrid = env.unwrapped.spec is not None and env.unwrapped.spec.id.startswith("MiniGrid")
            gym_check_env(env, skip_render_check=True, skip_close_check=minigrid)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_passes_sb3_checker(name: str) -> None:
    for _, env in _checked_envs(name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sb3_check_env(env, warn=True)


def test_unknown_expert_algo_and_bad_demo_quality_name_the_key() -> None:
    with pytest.raises(ValueError, match="env.expert_algo"):
        validate_job(make_job("env=mountaincar", "env.expert_algo=sac"))
    with pytest.raises(ValueError, match="target_update_intervall"):
        validate_job(make_job("env=mountaincar", "+env.expert_kwargs.target_update_intervall=5"))
    with pytest.raises(ValueError, match="env.expert_kwargs"):
        validate_job(make_job("env=cartpole", "+env.expert_kwargs.buffer_size=5"))
    with pytest.raises(ValueError, match="demos.expert_quality"):
        validate_job(make_job("demos.expert_quality=1.5"))
    with pytest.raises(ValueError, match=r"demos.mix\[0\].epsilon"):
        validate_job(make_job("demos.mix=[{episodes:2,epsilon:2.0}]"))


def _rollout(env: gym.Env, seed: int, steps: int) -> np.ndarray:
    """Observations of random-action episodes, the action stream fixed by `seed`; one array per episode."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    episodes, current = [], [obs]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        current.append(obs)
        if terminated or truncated:
            episodes.append(np.array(current))
            obs, _ = env.reset()
            current = [obs]
    episodes.append(np.array(current))
    return np.concatenate(episodes)


@pytest.mark.parametrize("name", MASKABLE)
def test_velocity_mask_hides_exactly_the_configured_components(name: str) -> None:
    plain_env = make_env(make_job(f"env={name}", "env.mask_velocity=false").env)  # parity's file masks by default
    masked_env = make_env(make_job(f"env={name}", "env.mask_velocity=true").env)
    hidden = HIDDEN_INDICES[plain_env.unwrapped.spec.id]  # type: ignore[union-attr]
    kept = [i for i in range(plain_env.observation_space.shape[0]) if i not in hidden]  # type: ignore[index]
    plain, masked = _rollout(plain_env, 0, 150), _rollout(masked_env, 0, 150)
    assert plain.shape == masked.shape
    assert np.all(masked[:, hidden] == 0.0)
    assert np.array_equal(masked[:, kept], plain[:, kept])
    assert np.all(np.abs(plain[:, hidden]).max(axis=0) > 0), "each hidden component carried information"
    space = masked_env.observation_space
    assert isinstance(space, gym.spaces.Box) and space.contains(masked[0])
    assert np.all(space.low[hidden] == 0) and np.all(space.high[hidden] == 0)
    assert np.array_equal(space.low[kept], plain_env.observation_space.low[kept])  # type: ignore[attr-defined]


# Each velocity component and the position (or angle, from its cos and sin) that it is the rate of change of.
def _angle(cos: int, sin: int):  # type: ignore[no-untyped-def]
    return lambda obs: np.unwrap(np.arctan2(obs[:, sin], obs[:, cos]))


POSITION_OF: dict[str, dict[int, object]] = {
    "CartPole-v1": {1: lambda o: o[:, 0], 3: lambda o: o[:, 2]},
    "Pendulum-v1": {2: _angle(0, 1)},
    "LunarLander-v3": {2: lambda o: o[:, 0], 3: lambda o: o[:, 1], 5: lambda o: o[:, 4]},
    "Acrobot-v1": {4: _angle(0, 1), 5: _angle(2, 3)},
    "MountainCar-v0": {1: lambda o: o[:, 0]},
}


@pytest.mark.parametrize("env_id", sorted(set(HIDDEN_INDICES) - {"testbed/Parity-v0"}))  # tests/unit/test_parity.py
def test_masked_components_are_the_velocities(env_id: str) -> None:
    """Each masked component tracks the step-to-step change of its position (correlation > 0.9)."""
    assert sorted(POSITION_OF[env_id]) == sorted(HIDDEN_INDICES[env_id])
    env = gym.make(env_id)
    obs = _rollout_one_episode(env, seed=1, max_steps=60)  # short: before LunarLander's contacts and crashes
    for index, position in POSITION_OF[env_id].items():
        change = np.diff(position(obs))  # type: ignore[operator]
        # Integrators differ in whether the position moves by the old or the new velocity.
        best = max(np.corrcoef(change, obs[:-1, index])[0, 1], np.corrcoef(change, obs[1:, index])[0, 1])
        assert best > 0.9, (env_id, index, best)


def _rollout_one_episode(env: gym.Env, seed: int, max_steps: int) -> np.ndarray:
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(max_steps):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append(obs)
        if terminated or truncated:
            break
    return np.array(out)


def test_training_env_streams_are_independent_across_job_seeds() -> None:
    """A PPO model re-seeds its vector env with the job seed; env i must then start from its own hashed stream,
    so neighbouring job seeds share no env stream (SB3's seed + i shared 7 of 8 between seeds s and s+1)."""
    from testbed.envs import make_vec_env, train_env_seeds
    from testbed.policy import build_ppo

    cfg = make_job("env=cartpole").env
    starts = {}
    for seed in (0, 1):
        model = build_ppo(cfg, make_vec_env(cfg, seed), seed)
        assert model.env is not None
        starts[seed] = [tuple(obs) for obs in model.env.reset()]
        expected = [tuple(make_env(cfg).reset(seed=s)[0]) for s in train_env_seeds(seed, cfg.n_envs)]
        assert starts[seed] == expected, "env i's first reset uses train_env_seeds(seed)[i]"
    assert not set(starts[0]) & set(starts[1]), "jobs 0 and 1 share no start state"
    assert not set(train_env_seeds(0, 8)) & set(train_env_seeds(1, 8))
    assert train_env_seeds(3, 8) == train_env_seeds(3, 8) and len(set(train_env_seeds(3, 8))) == 8
