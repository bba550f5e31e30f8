"""FLOP and sample accounting against hand counts of a known MLP."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import pytest
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from testbed import compute


def make_policy(env_id: str) -> ActorCriticPolicy:
    env = gym.make(env_id)
    return ActorCriticPolicy(env.observation_space, env.action_space, lambda _: 3e-4, net_arch=[64, 64])


def test_cartpole_mlp_matches_hand_count() -> None:
    policy = make_policy("CartPole-v1")  # obs 4 -> 64 -> 64 -> 2 actions / 1 value
    actor = 4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
    critic = 4 * 64 + 64 + 64 * 64 + 64 + 64 * 1 + 1
    assert compute.actor_params(policy) == actor
    assert compute.critic_params(policy) == critic
    assert compute.param_count(policy) == actor + critic
    assert compute.forward_flops(compute.actor_params(policy), 1) == 2 * actor
    assert compute.train_flops(actor, 10) == 6 * actor * 10
    assert compute.rollout_flops(policy, 2048) == 2 * (actor + critic) * 2048
    assert compute.ppo_update_flops(policy, 2048, 10) == 6 * (actor + critic) * 2048 * 10


def test_log_std_is_not_counted_as_forward_work() -> None:
    policy = make_policy("Pendulum-v1")  # obs 3, one action dim, a log_std of size 1
    actor = 3 * 64 + 64 + 64 * 64 + 64 + 64 * 1 + 1
    assert compute.actor_params(policy) == actor
    assert compute.param_count(policy) == actor + compute.critic_params(policy) + 1


class LinearFeatures(BaseFeaturesExtractor):
    """A features extractor with parameters (SB3's default Flatten has none, so it cannot show double counting)."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 8) -> None:
        super().__init__(observation_space, features_dim)
        self.linear = nn.Linear(get_flattened_obs_dim(observation_space), features_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(obs)


def test_shared_features_extractor_counted_once() -> None:
    env = gym.make("CartPole-v1")  # obs 4 -> shared features 8 -> 64 -> 64 -> 2 actions / 1 value
    policy = ActorCriticPolicy(
        env.observation_space,
        env.action_space,
        lambda _: 3e-4,
        net_arch=[64, 64],
        features_extractor_class=LinearFeatures,
        share_features_extractor=True,
    )
    assert policy.pi_features_extractor is policy.vf_features_extractor
    features = 4 * 8 + 8
    actor = features + 8 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
    critic = features + 8 * 64 + 64 + 64 * 64 + 64 + 64 * 1 + 1
    assert compute.actor_params(policy) == actor
    assert compute.critic_params(policy) == critic
    assert compute.actor_critic_params(policy) == actor + critic - features
    assert compute.actor_critic_params(policy) == sum(p.numel() for p in set(policy.parameters()))


def test_stage_compute_accumulates_and_names_keys() -> None:
    c = compute.StageCompute().add(env_steps=100, samples=50, grad_steps=2, flops=1000, wall_s=0.5)
    c = c + compute.StageCompute(env_steps=1, samples=2, grad_steps=3, flops=4, wall_s=0.25)
    assert c == compute.StageCompute(env_steps=101, samples=52, grad_steps=5, flops=1004, wall_s=0.75)
    assert c.as_dict("bc") == {
        "compute/bc/env_steps": 101,
        "compute/bc/samples": 52,
        "compute/bc/grad_steps": 5,
        "compute/bc/flops": 1004,
        "compute/bc/wall_s": 0.75,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.flops = 0  # type: ignore[misc]
