"""Behaviour cloning into the recurrent policy RecurrentPPO fine-tunes (policy.kind=lstm): whole demonstration
episodes, the LSTM's state carried from window to window (truncated backpropagation through time), through the
modules RecurrentPPO runs (recurrent.actor_sequence), so the handoff is exact as it is for the MLP."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.distributions import CategoricalDistribution
from tqdm.auto import tqdm

from testbed.bc import BCResult, actions_agree, split
from testbed.config import BCConfig, PolicyConfig
from testbed.demonstrations import Demonstrations
from testbed.policy import actor_parameters
from testbed.recurrent import actor_sequence, distribution, episode_lengths, pad_episodes, valid_steps, zero_state

log = logging.getLogger(__name__)

Window = tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]  # obs, actions, mask (steps, batch, ...), first


def _nll_and_entropy(
    policy: RecurrentActorCriticPolicy, latent: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean negative log-likelihood of `actions` and mean entropy at actor latents (n, latent)."""
    if isinstance(policy.action_dist, CategoricalDistribution):
        # Direct path, as bc.nll_and_entropy: SB3's numbers without building a torch distribution per step.
        logp = F.log_softmax(policy.action_net(latent), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return F.nll_loss(logp, actions.long().reshape(-1)), entropy.mean()
    dist = distribution(policy, latent)
    dist_entropy = dist.entropy()
    assert dist_entropy is not None  # every SB3 distribution of a PPO policy has a closed-form entropy
    return -dist.log_prob(actions).mean(), dist_entropy.mean()


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """bc.split over whole episodes (at least one held out, at least one trained on); a single episode is both."""
    if n == 1:
        log.warning("recurrent BC: one demonstration episode; it is validated on as well as trained on")
        return np.array([0]), np.array([0])
    train, val = split(n, val_fraction, seed)
    if len(train) == 0:
        raise ValueError(f"bc.val_fraction={val_fraction} holds out all {n} demonstration episodes")
    return np.sort(train), np.sort(val)


def episode_windows(
    obs: torch.Tensor,
    actions: torch.Tensor,
    lengths: torch.Tensor,
    batch: int,
    seq_len: int,
    generator: torch.Generator,
) -> Iterator[Window]:
    """Endless training windows from padded episodes (episodes, longest, ...).

    Each epoch shuffles the episodes once and takes consecutive groups of `batch` (the last `n % batch` sit out that
    epoch); each group, padded to its longest episode and made time-major, is cut into windows of `seq_len` steps:
    (obs (steps, batch, ...), actions, mask (steps, batch) of unpadded steps, first: the group's first window).
    """
    n = len(lengths)
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch + 1, batch):
            idx = perm[start : start + batch]
            steps = int(lengths[idx].max())
            x = obs[idx, :steps].transpose(0, 1).contiguous()
            y = actions[idx, :steps].transpose(0, 1).contiguous()
            mask = valid_steps(lengths[idx], steps)
            for t in range(0, steps, seq_len):
                yield x[t : t + seq_len], y[t : t + seq_len], mask[t : t + seq_len], t == 0


def _tensors(policy: RecurrentActorCriticPolicy, demos: Demonstrations) -> tuple[torch.Tensor, torch.Tensor]:
    """Demonstrations as tensors; Discrete actions flat (N,), as SB3's Categorical takes them."""
    obs = torch.as_tensor(demos.observations, device=policy.device)
    actions = torch.as_tensor(demos.actions, device=policy.device)
    if isinstance(policy.action_space, spaces.Discrete):
        actions = actions.reshape(-1)
    return obs, actions


# ------------------------------------------------------------------------------------------ BC trainer


class RecurrentBCTrainer:
    """bc.BCTrainer for the recurrent policy (the same public API): whole episodes, truncated BPTT.

    `run_to(k)` trains until k gradient steps in all; each stop equals a separate run of k steps.
    1. Hold out `val_fraction` of the episodes, whole (split_episodes).
    2. A minibatch is `policy.bc_batch_episodes` training episodes, padded to the longest and cut into windows of
       `policy.bc_seq_len` steps (episode_windows); each window is one Adam step, `grad_steps` counts windows and
       `samples` the unpadded steps trained on.
    3. The actor LSTM's state is zero at each episode's first step and carried, detached, from window to window of
       the minibatch (truncated backpropagation through time); padded steps are left out of the loss.
    4. Adam on policy.actor_parameters only; the critic (its LSTM too) is left for PPO.
    """

    def __init__(
        self,
        policy: RecurrentActorCriticPolicy,
        demos: Demonstrations,
        cfg: BCConfig,
        policy_cfg: PolicyConfig,
        seed: int,
        lr: float | None = None,
    ):
        start = time.perf_counter()
        self.policy, self.cfg = policy, cfg
        obs, actions = _tensors(policy, demos)
        lengths = episode_lengths(demos.episode_starts, len(actions))
        padded_obs = pad_episodes(obs, demos.episode_starts, lengths)
        padded_actions = pad_episodes(actions, demos.episode_starts, lengths)
        train, val = split_episodes(len(lengths), cfg.val_fraction, seed)
        # Held-out episodes, time-major, for one forward pass from the zero state.
        self.val_obs = padded_obs[val].transpose(0, 1)
        self.val_actions = padded_actions[val].transpose(0, 1)
        self.val_mask = valid_steps(torch.as_tensor(lengths[val]), padded_obs.shape[1])
        self.params = actor_parameters(policy)
        # fused: one kernel for all parameters, as BCTrainer.
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr if lr is None else lr, fused=True)
        self.batch = min(policy_cfg.bc_batch_episodes, len(train))
        self.windows = episode_windows(
            padded_obs[train],
            padded_actions[train],
            torch.as_tensor(lengths[train]),
            self.batch,
            policy_cfg.bc_seq_len,
            torch.Generator().manual_seed(seed),
        )
        self.state = zero_state(policy, self.batch)  # carried from window to window
        self.train_transitions = int(lengths[train].sum())
        self.val_transitions = int(lengths[val].sum())
        self.steps, self.samples = 0, 0
        self.window: list[float] = []  # training NLLs since the last curve row
        self.curve: list[dict[str, float]] = []
        self.wall_s = time.perf_counter() - start

    def run_to(self, steps: int, bar: tqdm | None = None) -> None:
        """Train until `steps` gradient steps (windows) in all (none if already there); the policy is left in eval
        mode."""
        start = time.perf_counter()
        self.policy.set_training_mode(True)
        while self.steps < steps:
            nll, entropy = self._step(*next(self.windows))
            self.steps += 1
            self.window.append(nll)
            # Rows at multiples of log_every and at cfg.grad_steps, never at a stop: stops change no row.
            if self.steps % self.cfg.log_every == 0 or self.steps == self.cfg.grad_steps:
                self._log_row(entropy)
            if bar is not None:
                bar.update(1)
        self.policy.set_training_mode(False)
        self.wall_s += time.perf_counter() - start

    def _step(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, first: bool) -> tuple[float, float]:
        """One Adam step on one window; returns its NLL and entropy."""
        if first:
            self.state = zero_state(self.policy, obs.shape[1])
        latent, state = actor_sequence(self.policy, obs, self.state)
        # Truncated BPTT: the next window starts from this window's state, without a gradient into this one.
        self.state = (state[0].detach(), state[1].detach())
        nll, entropy = _nll_and_entropy(self.policy, latent[mask], actions[mask])
        loss = nll - self.cfg.ent_coef * entropy
        if self.cfg.l2_coef:
            loss = loss + self.cfg.l2_coef * sum((p**2).sum() for p in self.params)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.samples += int(mask.sum())
        return nll.item(), entropy.item()

    def _log_row(self, entropy: float) -> None:
        self.curve.append(
            {
                "bc/samples": self.samples,
                "bc/grad_steps": self.steps,
                "bc/train_nll": float(np.mean(self.window)),
                "bc/entropy": entropy,
                "bc/val_nll": self._validate()[0],
            }
        )
        self.window = []

    @torch.no_grad()
    def _validate(self) -> tuple[float, float]:
        """NLL and agreement of the deterministic action on the held-out episodes, from the zero state."""
        latent, _ = actor_sequence(self.policy, self.val_obs, zero_state(self.policy, self.val_obs.shape[1]))
        dist = distribution(self.policy, latent[self.val_mask])
        actions = self.val_actions[self.val_mask]
        return float(-dist.log_prob(actions).mean()), actions_agree(self.policy.action_space, dist.mode(), actions)

    def _train_nll(self) -> float:
        """The mean training NLL since the last curve row, as a run ending here would log it."""
        if self.window:
            return float(np.mean(self.window))
        return self.curve[-1]["bc/train_nll"] if self.curve else math.nan

    def result(self) -> BCResult:
        """What BC did so far."""
        val_nll, val_agreement = self._validate()
        return BCResult(
            samples=self.samples,
            grad_steps=self.steps,
            train_transitions=self.train_transitions,
            val_transitions=self.val_transitions,
            train_nll=self._train_nll(),
            val_nll=val_nll,
            val_agreement=val_agreement,
            wall_s=self.wall_s,
            curve=list(self.curve),
        )
