"""The SB3 policy and its internals: build the PPO agent the stages share, its actor parameters, clone/snapshot,
its action distribution and the per-state KL between two of them."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv
from torch.distributions import kl_divergence

from testbed.config import EnvConfig

ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
# Keys env.ppo may not set: the testbed owns them.
_RESERVED = {"policy", "env", "seed", "policy_kwargs", "verbose", "device", "tensorboard_log", "_init_setup_model"}


def check_ppo_kwargs(cfg: EnvConfig) -> None:
    """Fail at startup, naming the key, if env.ppo holds something SB3's PPO would reject."""
    allowed = set(inspect.signature(PPO.__init__).parameters) - _RESERVED - {"self"}
    unknown = sorted(set(cfg.ppo) - allowed)
    if unknown:
        raise ValueError(
            f"env.ppo has unknown PPO argument(s) {unknown} for env '{cfg.name}'; known: {sorted(allowed)}"
        )
    for key in ("learning_rate", "clip_range"):
        if key in cfg.ppo and not isinstance(cfg.ppo[key], int | float):
            # A schedule would tie the learning rate to the total budget (see finetune.py).
            raise ValueError(f"env.ppo.{key} must be a constant number, got {cfg.ppo[key]!r}")
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"env.activation '{cfg.activation}' is not one of {sorted(ACTIVATIONS)}")


def policy_kwargs(cfg: EnvConfig) -> dict[str, Any]:
    # Separate actor and critic networks of the same widths, so BC never touches the critic.
    return {
        "net_arch": {"pi": list(cfg.net_arch), "vf": list(cfg.net_arch)},
        "activation_fn": ACTIVATIONS[cfg.activation],
    }


def build_ppo(cfg: EnvConfig, venv: VecEnv, seed: int, algo: type[PPO] = PPO, **overrides: Any) -> PPO:
    """The learner: a PPO agent (`algo`: PPO or a subclass) on `venv` with the env's `ppo` settings and overrides,
    on the CPU."""
    check_ppo_kwargs(cfg)
    kwargs = {**cfg.ppo, **overrides}
    return algo("MlpPolicy", venv, seed=seed, policy_kwargs=policy_kwargs(cfg), device="cpu", verbose=0, **kwargs)


def expert_policy_kwargs(cfg: EnvConfig) -> dict[str, Any]:
    """The expert's network: env.expert_net_arch / expert_activation where set, else SB3's defaults for its algo."""
    kwargs: dict[str, Any] = {}
    if cfg.expert_net_arch is not None:
        arch = list(cfg.expert_net_arch)
        kwargs["net_arch"] = {"pi": arch, "vf": arch} if cfg.expert_algo == "ppo" else arch
    if cfg.expert_activation is not None:
        kwargs["activation_fn"] = ACTIVATIONS[cfg.expert_activation]
    return kwargs


def params_sha256(policy: torch.nn.Module) -> str:
    """Identity of a policy by its parameters: sha256 over every tensor's name, dtype, shape and bytes.

    A saved SB3 zip is not an identity: two identical trainings give zips with different bytes (it stores
    function addresses), so datasets and references key on this instead.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(policy.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ parameters


def actor_parameters(policy: ActorCriticPolicy) -> list[torch.nn.Parameter]:
    """The parameters BC trains: (a recurrent policy's actor LSTM,) actor body, action head and (continuous)
    log_std; never the critic."""
    lstm = getattr(policy, "lstm_actor", None)  # sb3-contrib's RecurrentActorCriticPolicy
    params = list(lstm.parameters()) if isinstance(lstm, torch.nn.Module) else []
    params += list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    if isinstance(getattr(policy, "log_std", None), torch.nn.Parameter):
        params.append(policy.log_std)
    params += list(policy.pi_features_extractor.parameters())
    return params


# --------------------------------------------------------------------------------------- clone/snapshot


def rebuild(policy: ActorCriticPolicy) -> ActorCriticPolicy:
    """A fresh policy of `policy`'s class and constructor arguments; its init weights are drawn from torch's RNG.

    The one call of SB3's private `_get_constructor_parameters`.
    """
    kwargs = policy._get_constructor_parameters()  # private SB3, pinned by requirements.lock
    lstm = getattr(policy, "lstm_actor", None)
    if isinstance(lstm, torch.nn.LSTM):  # sb3-contrib's recurrent policy leaves its LSTM's arguments out of them
        kwargs |= {
            "lstm_hidden_size": lstm.hidden_size,
            "n_lstm_layers": lstm.num_layers,
            "shared_lstm": policy.shared_lstm,  # type: ignore[attr-defined]
            "enable_critic_lstm": policy.enable_critic_lstm,  # type: ignore[attr-defined]
            "lstm_kwargs": policy.lstm_kwargs,  # type: ignore[attr-defined]
        }
    return type(policy)(**kwargs)


def snapshot(policy: ActorCriticPolicy) -> ActorCriticPolicy:
    """A frozen copy in eval mode: a fresh policy of the same class and arguments with the same state dict.

    deepcopy fails on SB3 policies that have run a forward pass, hence the rebuild.
    """
    # Building a policy draws its init weights; fork the RNG so a snapshot never shifts later seeded draws.
    with torch.random.fork_rng(devices=[]):
        copy = rebuild(policy)
    copy.load_state_dict(policy.state_dict())
    copy.to(policy.device)
    copy.set_training_mode(False)
    copy.requires_grad_(False)
    return copy


# ------------------------------------------------------------------------------------------ behaviour


def action_distribution(policy: ActorCriticPolicy, obs: np.ndarray) -> Distribution:
    """The policy's action distribution at a batch of raw observations (n, *obs_shape), without gradient."""
    with torch.no_grad():
        return policy.get_distribution(policy.obs_to_tensor(obs)[0])


def kl_per_state(dist_p: Distribution, dist_q: Distribution) -> torch.Tensor:
    """KL(p || q) per state, summed over action dims (Gaussian) or sub-actions (MultiDiscrete)."""
    ps, qs = dist_p.distribution, dist_q.distribution
    if isinstance(ps, list) and isinstance(qs, list):  # MultiCategorical: one Categorical per sub-action
        return torch.stack([kl_divergence(p, q) for p, q in zip(ps, qs, strict=True)], dim=-1).sum(dim=-1)
    assert not isinstance(ps, list) and not isinstance(qs, list)
    kl = kl_divergence(ps, qs)
    return kl.sum(dim=-1) if kl.dim() > 1 else kl
