"""FLOP and sample accounting per stage: (policy, sample counts) -> StageCompute -> `compute/<stage>/*`.

Convention (the standard dense-network approximation, Kaplan et al. 2020): one forward pass costs 2 FLOPs
per parameter per sample (a multiply and an add per weight; biases are counted as parameters too, which
slightly over-counts their single add), and a training step costs 6 (forward 2 + backward 4). Activation
functions, softmax/log-prob and optimiser updates are ignored, and so is `log_std`, which is never
multiplied by an input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn


def param_count(module: nn.Module) -> int:
    """Number of parameters in `module` (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters())


def _unique_count(modules: list[nn.Module]) -> int:
    """Parameters of several modules, counting a module shared between them once."""
    seen: dict[int, int] = {}
    for module in modules:
        for p in module.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


def _lstms(policy: ActorCriticPolicy, *names: str) -> list[nn.Module]:
    """A recurrent policy's LSTMs among `names` (sb3-contrib's lstm_actor, lstm_critic; None when not enabled).
    An LSTM multiplies each of its weights once per step, so the 2x / 6x rule below holds for it too."""
    return [m for m in (getattr(policy, name, None) for name in names) if isinstance(m, nn.Module)]


def actor_params(policy: ActorCriticPolicy) -> int:
    """Parameters an action forward pass multiplies: features extractor, (LSTM,) actor body and action head."""
    return _unique_count(
        [
            policy.pi_features_extractor,
            *_lstms(policy, "lstm_actor"),
            policy.mlp_extractor.policy_net,
            policy.action_net,
        ]
    )


def critic_params(policy: ActorCriticPolicy) -> int:
    """Parameters a value forward pass multiplies: features extractor, (LSTM,) critic body and value head."""
    return _unique_count(
        [policy.vf_features_extractor, *_lstms(policy, "lstm_critic"), policy.mlp_extractor.value_net, policy.value_net]
    )


def actor_critic_params(policy: ActorCriticPolicy) -> int:
    """Parameters of one joint actor+critic forward pass; a shared features extractor runs once."""
    return _unique_count(
        [
            policy.pi_features_extractor,
            policy.vf_features_extractor,
            *_lstms(policy, "lstm_actor", "lstm_critic"),
            policy.mlp_extractor.policy_net,
            policy.mlp_extractor.value_net,
            policy.action_net,
            policy.value_net,
        ]
    )


def forward_flops(n_params: int, n_samples: int) -> int:
    """FLOPs of forward passes: 2 per parameter per sample."""
    return 2 * n_params * n_samples


def train_flops(n_params: int, n_samples: int) -> int:
    """FLOPs of forward + backward passes: 6 per parameter per sample."""
    return 6 * n_params * n_samples


def rollout_flops(policy: ActorCriticPolicy, env_steps: int) -> int:
    """PPO rollout cost: one actor+critic forward per env step (summed over parallel envs)."""
    return forward_flops(actor_critic_params(policy), env_steps)


def ppo_update_flops(policy: ActorCriticPolicy, n_samples_per_epoch: int, n_epochs: int) -> int:
    """PPO update cost if every epoch runs in full: forward + backward of actor and critic on every sample.

    An upper bound once `target_kl` can stop an update early; fine-tuning charges the samples its optimizer
    steps really trained on instead (finetune.count_updates).
    """
    return train_flops(actor_critic_params(policy), n_samples_per_epoch * n_epochs)


@dataclass(frozen=True)
class StageCompute:
    """Compute spent by one stage; frozen, so accumulate with `add` or `+`."""

    env_steps: int = 0
    """Environment transitions collected (summed over parallel envs)."""
    samples: int = 0
    """Samples passed through a gradient update, counting each epoch's reuse."""
    grad_steps: int = 0
    """Optimiser steps."""
    flops: int = 0
    """Estimated FLOPs, forward and backward, by the 2x / 6x params convention above."""
    wall_s: float = 0.0
    """Wall-clock seconds."""

    def add(
        self,
        *,
        env_steps: int = 0,
        samples: int = 0,
        grad_steps: int = 0,
        flops: int = 0,
        wall_s: float = 0.0,
    ) -> StageCompute:
        """A new record with the given amounts added."""
        return StageCompute(
            env_steps=self.env_steps + env_steps,
            samples=self.samples + samples,
            grad_steps=self.grad_steps + grad_steps,
            flops=self.flops + flops,
            wall_s=self.wall_s + wall_s,
        )

    def __add__(self, other: StageCompute) -> StageCompute:
        return self.add(**dataclasses.asdict(other))

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Metric keys such as `compute/bc/flops` for stage `prefix`."""
        return {f"compute/{prefix}/{k}": v for k, v in dataclasses.asdict(self).items()}
