"""The learner's memory (testbed/memory.py): its demonstrations show exactly what its env shows, replay recovers the
hidden state, a scratchpad without supervision fits the env's actions only; linear probes on planted variables."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from testbed.bc import nll_and_entropy
from testbed.config import Config
from testbed.demonstrations import DatasetError, Demonstrations
from testbed.envs import full_observation, hidden_indices, make_env, mask_observation
from testbed.memory import (
    FlatFrameStack,
    Scratchpad,
    demo_seeds,
    hidden_states,
    learner_demos,
    learner_env,
    learner_vec_env,
    stack_frames,
)
from testbed.policy import build_ppo
from testbed.probes import linear_probe
from testbed.validation import validate_job
from tests.conftest import make_job


def _record(cfg: Config, episodes: int, seed: int) -> Demonstrations:
    """Episodes from the demonstration seeds of cfg.demos with random actions, stored as the task's learner sees
    them (masked), as demonstrations.collect_episodes stores an expert's."""
    env = make_env(full_observation(cfg.env))
    env.action_space.seed(seed)
    hidden = hidden_indices(cfg.env)
    obs_all: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    starts: list[int] = []
    rewards: list[float] = []
    for seed in demo_seeds(cfg.demos)[:episodes]:
        starts.append(len(actions))
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            action = env.action_space.sample()
            obs_all.append(mask_observation(obs, hidden))
            actions.append(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            done = terminated or truncated
    n = len(actions)
    return Demonstrations(
        observations=np.asarray(obs_all),
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, float),
        terminated=np.zeros(n, bool),
        truncated=np.zeros(n, bool),
        episode_starts=np.asarray(starts),
        returns=np.zeros(len(starts)),
        path=Path("/nonexistent/demos"),
        sha256="",
        key="",
    )


def _replay(cfg: Config, demos: Demonstrations, learner: Demonstrations) -> list[np.ndarray]:
    """What the learner's env shows when the learner's demonstrated actions are replayed from the same seeds."""
    env = learner_env(cfg.env, cfg.policy)
    shown = []
    for i, seed in enumerate(demo_seeds(cfg.demos)[: demos.n_episodes]):
        obs, _ = env.reset(seed=seed)
        end = demos.episode_starts[i + 1] if i + 1 < demos.n_episodes else demos.n_transitions
        for t in range(demos.episode_starts[i], end):
            shown.append(obs)
            obs, *_ = env.step(learner.actions[t])
    return shown


def test_stacked_demonstrations_are_what_the_frame_stack_shows() -> None:
    cfg = make_job("env=cartpole", "env.mask_velocity=true", "policy=framestack", "policy.frames=3")
    demos = _record(cfg, 3, 0)
    learner = learner_demos(cfg, demos)
    assert isinstance(learner_env(cfg.env, cfg.policy), FlatFrameStack)
    np.testing.assert_array_equal(np.stack(_replay(cfg, demos, learner)), learner.observations)
    assert learner.observations.shape == (demos.n_transitions, 12)
    np.testing.assert_array_equal(learner.observations[0, :8], 0)  # nothing seen before the first step
    np.testing.assert_array_equal(stack_frames(demos, 1), demos.observations)


def test_scratch_demonstrations_are_what_the_scratchpad_shows() -> None:
    """The expert writes the true hidden velocity each step and reads it back the next: replaying the learner's
    demonstrated actions in the Scratchpad env shows exactly the demonstrations' observations."""
    cfg = make_job("env=pendulum", "env.mask_velocity=true", "policy=scratchpad")
    demos = _record(cfg, 2, 0)
    hidden = hidden_states(cfg, demos)
    learner = learner_demos(cfg, demos)
    shown = np.stack(_replay(cfg, demos, learner))
    np.testing.assert_allclose(shown, learner.observations, rtol=0, atol=1e-6)  # float32 observations
    assert learner.actions.shape == (demos.n_transitions, 2)
    np.testing.assert_allclose(learner.actions[:, 1], hidden[:, 0], atol=1e-6)
    assert learner.observations[0, -1] == 0  # the start value
    assert np.abs(hidden).max() > 0.1  # the velocity really was hidden and recovered
    np.testing.assert_array_equal(demos.observations[:, 2], 0)


def test_scratch_without_supervision_reads_only_the_start_value() -> None:
    cfg = make_job("env=pendulum", "env.mask_velocity=true", "policy=scratchpad", "policy.scratch_supervision=false")
    learner = learner_demos(cfg, _record(cfg, 2, 1))
    np.testing.assert_array_equal(learner.observations[:, -1], 0)


def test_replay_refuses_demonstrations_it_does_not_reproduce() -> None:
    cfg = make_job("env=pendulum", "env.mask_velocity=true", "policy=scratchpad")
    demos = _record(cfg, 2, 0)
    demos.observations[150, 0] += 1e-3  # an edited dataset
    with pytest.raises(DatasetError, match=r"/nonexistent/demos.*episode 0 .*step 150"):
        hidden_states(cfg, demos)


def test_scratchpad_bounds_and_refusals() -> None:
    cfg = make_job("env=pendulum", "env.mask_velocity=true", "policy=scratchpad")
    env = learner_env(cfg.env, cfg.policy)
    assert isinstance(env, Scratchpad)
    assert isinstance(env.action_space, gym.spaces.Box)
    np.testing.assert_array_equal(env.action_space.low, [-2, -8])  # torque, then the velocity note
    with pytest.raises(ValueError, match="hides none: set env.mask_velocity=true"):
        learner_env(make_job("env=pendulum", "policy=scratchpad").env, cfg.policy)
    with pytest.raises(ValueError, match="CartPole-v1.*unbounded"):
        learner_env(make_job("env=cartpole", "env.mask_velocity=true").env, cfg.policy)


def test_overwritten_notes_show_the_truth_or_its_mirror() -> None:
    cfg = make_job("env=pendulum", "env.mask_velocity=true", "policy=scratchpad")
    for mode, sign in (("true", 1.0), ("wrong", -1.0)):
        env = learner_env(cfg.env, cfg.policy)
        assert isinstance(env, Scratchpad)
        env.overwrite = mode
        env.reset(seed=3)
        for _ in range(5):
            truth = env.get_wrapper_attr("hidden")[0]  # the velocity of the observation acted on
            obs, *_ = env.step(np.array([1.0, 7.0], np.float32))  # writes 7, overwritten
            assert obs[-1] == pytest.approx(sign * truth, abs=1e-6) and abs(truth) > 0


def test_bc_on_the_env_action_components_leaves_the_scratch_head_alone() -> None:
    cfg = make_job("env=pendulum", "env.mask_velocity=true", "policy=scratchpad")
    policy = build_ppo(cfg.env, learner_vec_env(cfg, 0, n_envs=1), 0).policy
    obs = torch.randn(16, 4)
    actions = torch.randn(16, 2)
    nll, _ = nll_and_entropy(policy, obs, actions, components=1)
    nll.backward()
    assert isinstance(policy.log_std, torch.nn.Parameter)
    grad = policy.log_std.grad  # gSDE (Pendulum's PPO): one column of log std per action dimension
    assert grad is not None and grad.shape[-1] == 2
    assert (grad[..., 1] == 0).all() and (grad[..., 0] != 0).any()
    assert isinstance(policy.action_net, torch.nn.Linear)
    weight = policy.action_net.weight.grad
    assert weight is not None and (weight[1] == 0).all() and (weight[0] != 0).any()
    full, _ = nll_and_entropy(policy, obs, actions)
    assert full.item() > nll.item()  # the second dimension adds its own NLL


# ------------------------------------------------------------------------------------------------ probes


def test_probe_reads_a_planted_linear_variable_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = x @ rng.normal(size=(6, 2)) + 3.0
    episode = np.repeat(np.arange(20), 20)
    assert linear_probe(x, y, episode) == pytest.approx(1.0, abs=1e-6)  # up to the tiny ridge


def test_probe_finds_nothing_in_unrelated_memory() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 1))
    assert abs(linear_probe(x, y, np.repeat(np.arange(40), 50))) < 0.02


def test_probe_accuracy_on_a_planted_bit_and_a_constant_memory() -> None:
    rng = np.random.default_rng(2)
    bit = rng.integers(0, 2, size=(1000, 1)).astype(float)
    memory = np.column_stack([2 * bit[:, 0] - 1, rng.normal(size=1000)])  # the bit, as +-1, plus noise
    episode = np.repeat(np.arange(20), 50)
    assert linear_probe(memory, bit, episode) == 1.0
    constant = linear_probe(np.ones((1000, 3)), bit, episode)  # predicts the training mean for every state
    guess = float(bit[episode % 2 == 0].mean() > 0.5)
    assert constant == pytest.approx(float((bit[episode % 2 == 1] == guess).mean()))


def test_probe_needs_two_episodes() -> None:
    with pytest.raises(ValueError, match="at least two episodes"):
        linear_probe(np.ones((5, 1)), np.ones((5, 1)), np.zeros(5, int))


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["policy.kind=lsmt"], r"policy.kind='lsmt' is not one of \['mlp', 'framestack', 'scratchpad', 'lstm'\]"),
        (["policy=lstm", "rl.anchor.kind=bc_kl"], r"rl.anchor.kind is written for the feed-forward learner only"),
        (["policy=framestack", "voting.enabled=true"], r"voting.enabled is written for the feed-forward learner"),
        (["policy=scratchpad", "env.mask_velocity=true", "eval.bc_control=true"], r"eval.bc_control is written"),
        (["policy=scratchpad"], r"env.id='Pendulum-v1' hides none: set env.mask_velocity=true"),
        (["policy=framestack", "policy.frames=0"], r"policy.frames must be >= 1, got 0"),
        (["policy=scratchpad", "env.mask_velocity=true", "policy.scratch_bins=1"], r"policy.scratch_bins must be >= 2"),
        (["env=parity", "env.kwargs.n=0"], r"env.kwargs.n=0"),
        (["env=parity", "env.id=CartPole-v1"], r"env.kwargs=\{'n': 16\} do not fit env.id='CartPole-v1'"),
    ],
)
def test_a_bad_learner_setting_fails_before_anything_trains(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_job(make_job(*overrides))
