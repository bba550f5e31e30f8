"""The recurrent learner (policy.kind=lstm): sb3-contrib's RecurrentPPO, BC into the very policy it fine-tunes by
truncated backpropagation through time along demonstration episodes, its act function for evaluation, and its drift
along demonstration episodes."""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from tqdm.auto import tqdm

from testbed.bc import BC_AGREEMENT_RANGE_FRACTION, BCResult, split
from testbed.config import BCConfig, EnvConfig, PolicyConfig
from testbed.demonstrations import Demonstrations
from testbed.drift import TOLERANCES, agreement_with_bc, linear_cka, probe_sample, weight_drift
from testbed.evaluate import EpisodeAct
from testbed.policy import actor_parameters, check_ppo_kwargs, kl_per_state, policy_kwargs

log = logging.getLogger(__name__)

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (n_layers, batch, hidden)
Window = tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]  # obs, actions, mask (steps, batch, ...), first


class SequenceLstmPolicy(RecurrentActorCriticPolicy):
    """sb3-contrib's recurrent actor-critic policy ("MlpLstmPolicy"), running each training sequence through its LSTM
    in one call.

    RecurrentPPO's minibatches are sequences cut at episode starts, so a start can only be a sequence's first step.
    sb3-contrib takes its one-call path only when no step starts an episode, and otherwise steps the LSTM through
    the padded sequence one time step at a time in Python: PPO on parity's 65-step episodes ran about 6x slower
    than on 9-step ones. Zeroing the state of the sequences that start an episode and running them in one call is
    the same computation (tests/unit/test_recurrent.py); a start anywhere else takes sb3-contrib's own path."""

    @staticmethod
    def _process_sequence(
        features: torch.Tensor,
        lstm_states: tuple[torch.Tensor, torch.Tensor],
        episode_starts: torch.Tensor,
        lstm: nn.LSTM,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # sb3-contrib's annotation; the second is (h, c)
        n_seq = lstm_states[0].shape[1]
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
        if starts.shape[0] == 1 or bool(torch.any(starts[1:] != 0.0)):
            return RecurrentActorCriticPolicy._process_sequence(features, lstm_states, episode_starts, lstm)
        keep = (1.0 - starts[0]).view(1, n_seq, 1)
        sequence = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)
        output, states = lstm(sequence, (keep * lstm_states[0], keep * lstm_states[1]))
        return torch.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), states  # type: ignore[return-value]


def build_recurrent(
    env_cfg: EnvConfig, policy_cfg: PolicyConfig, venv: VecEnv, seed: int, **overrides: Any
) -> RecurrentPPO:
    """The recurrent learner: RecurrentPPO (SequenceLstmPolicy, its "MlpLstmPolicy") on `venv` with the env's `ppo`
    settings and overrides, on the CPU; an LSTM of `policy.lstm_hidden` units sits between the features and
    env.net_arch's MLP heads."""
    check_ppo_kwargs(env_cfg)
    kwargs = {**env_cfg.ppo, **overrides}
    # check_ppo_kwargs allows PPO's rollout_buffer_class/kwargs, which RecurrentPPO (its own buffer) does not take.
    unknown = sorted(set(kwargs) - set(inspect.signature(RecurrentPPO.__init__).parameters))
    if unknown:
        raise ValueError(f"env.ppo has argument(s) {unknown} that RecurrentPPO does not take (env '{env_cfg.name}')")
    lstm = {
        "lstm_hidden_size": policy_cfg.lstm_hidden,
        "n_lstm_layers": 1,
        "shared_lstm": False,
        # The critic's own LSTM, so BC (the actor only) never touches what PPO's value loss trains.
        "enable_critic_lstm": True,
    }
    return RecurrentPPO(
        SequenceLstmPolicy,
        venv,
        seed=seed,
        policy_kwargs=policy_kwargs(env_cfg) | lstm,
        device="cpu",
        verbose=0,
        **kwargs,
    )


# ------------------------------------------------------------------------------------------- sequences


def zero_state(policy: RecurrentActorCriticPolicy, batch: int) -> LSTMState:
    """The actor LSTM's state at an episode's first step, for `batch` episodes."""
    shape = (policy.lstm_actor.num_layers, batch, policy.lstm_actor.hidden_size)
    return torch.zeros(shape, device=policy.device), torch.zeros(shape, device=policy.device)


def _features(policy: RecurrentActorCriticPolicy, obs: torch.Tensor) -> torch.Tensor:
    """The actor's features of a batch of observations (n, *obs_shape) -> (n, features)."""
    pre = preprocess_obs(obs, policy.observation_space, normalize_images=policy.normalize_images)
    return policy.pi_features_extractor(pre)


def actor_sequence(
    policy: RecurrentActorCriticPolicy, obs: torch.Tensor, state: LSTMState
) -> tuple[torch.Tensor, LSTMState]:
    """The actor's latent along sequences: obs (steps, batch, *obs_shape), time-major, from `state` ->
    (steps, batch, latent), and the state after the last step.

    The modules RecurrentActorCriticPolicy.get_distribution runs, in its order (features extractor -> lstm_actor ->
    mlp_extractor.forward_actor; `action_net` follows), so what BC trains is what RecurrentPPO runs. Its per-step loop
    for episodes starting mid-sequence is not needed: each sequence here is one episode from its start (zero state)
    or from the state the window before left.
    """
    steps, batch = obs.shape[:2]
    features = _features(policy, obs.reshape(steps * batch, *obs.shape[2:]))
    out, state = policy.lstm_actor(features.reshape(steps, batch, -1), state)
    latent = policy.mlp_extractor.forward_actor(out.reshape(steps * batch, -1))
    return latent.reshape(steps, batch, -1), state


def distribution(policy: RecurrentActorCriticPolicy, latent: torch.Tensor) -> Distribution:
    """The action distribution at actor latents (n, latent), as the policy builds it (SB3's private
    `_get_action_dist_from_latent`, pinned by requirements.lock). A copy: SB3 keeps one distribution object per
    policy and overwrites it on the next call."""
    return copy.copy(policy._get_action_dist_from_latent(latent))


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


def _agreement(space: spaces.Space, pred: torch.Tensor, actions: torch.Tensor) -> float:
    """bc.agreement_with_demos's comparison: equal actions; Box unclipped, every dim within
    BC_AGREEMENT_RANGE_FRACTION (5%) of the range."""
    if pred.dtype.is_floating_point:
        assert isinstance(space, spaces.Box)
        span = torch.as_tensor(space.high - space.low, dtype=pred.dtype)
        return float(((pred - actions).abs() <= BC_AGREEMENT_RANGE_FRACTION * span).all(dim=-1).float().mean())
    return float((pred == actions.reshape(pred.shape)).float().mean())


# -------------------------------------------------------------------------------------------- episodes


def episode_lengths(episode_starts: np.ndarray, n: int) -> np.ndarray:
    """Lengths of the episodes that start at `episode_starts` (ascending, the first at 0) in n flat steps."""
    lengths = np.diff(np.append(np.asarray(episode_starts), n))
    if len(lengths) == 0 or episode_starts[0] != 0 or (lengths <= 0).any():
        raise ValueError(f"episode_starts must ascend from 0 within {n} steps, got {episode_starts}")
    return lengths


def pad_episodes(x: torch.Tensor, episode_starts: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """Flat steps (N, *shape) -> one row per episode (episodes, longest, *shape), zero after each episode's end."""
    out = x.new_zeros((len(lengths), int(lengths.max()), *x.shape[1:]))
    for row, (start, length) in enumerate(zip(episode_starts, lengths, strict=True)):
        out[row, :length] = x[start : start + length]
    return out


def _valid(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps, episodes) mask of the unpadded steps, time-major."""
    return torch.arange(steps)[:, None] < lengths[None, :]


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
            mask = _valid(lengths[idx], steps)
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
        self.val_mask = _valid(torch.as_tensor(lengths[val]), padded_obs.shape[1])
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
        return float(-dist.log_prob(actions).mean()), _agreement(self.policy.action_space, dist.mode(), actions)

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


# ------------------------------------------------------------------------------------------ evaluation


class RecurrentAct(EpisodeAct):
    """A recurrent policy as evaluate's act function: each episode carries its own actor LSTM state through
    `policy.predict`, which steps the actor only (the critic's state plays no part in acting)."""

    def __init__(self, policy: RecurrentActorCriticPolicy, deterministic: bool = True):
        self.policy, self.deterministic = policy, deterministic
        self.start(0)

    def start(self, n: int) -> None:
        shape = (self.policy.lstm_actor.num_layers, n, self.policy.lstm_actor.hidden_size)
        self.h, self.c = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
        self.first = np.ones(n, dtype=bool)

    def __call__(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        actions, state = self.policy.predict(
            obs,
            state=(self.h[:, alive], self.c[:, alive]),
            episode_start=self.first[alive],
            deterministic=self.deterministic,
        )
        assert state is not None  # a recurrent policy always returns its state
        self.h[:, alive], self.c[:, alive] = state
        self.first[alive] = False
        return actions

    def memory(self, alive: np.ndarray) -> np.ndarray:
        """The actor LSTM's state of episodes `alive` after their last step, what the policy carries to its next
        step: (len(alive), 2 x hidden), h then c (of the last layer)."""
        return np.concatenate([self.h[-1, alive], self.c[-1, alive]], axis=1)


# ----------------------------------------------------------------------------------------------- drift


@torch.no_grad()
def _trace(policy: RecurrentActorCriticPolicy, observations: np.ndarray, episode_starts: np.ndarray) -> torch.Tensor:
    """hidden_trace as a tensor."""
    obs = torch.as_tensor(observations, device=policy.device)
    lengths = episode_lengths(episode_starts, len(obs))
    features = pad_episodes(_features(policy, obs), episode_starts, lengths).transpose(0, 1)
    state = zero_state(policy, len(lengths))
    steps = []
    for x in features:  # one step at a time: nn.LSTM gives the cell state of a sequence's last step only
        _, state = policy.lstm_actor(x.unsqueeze(0), state)
        steps.append(torch.cat([state[0][-1], state[1][-1]], dim=-1))
    trace = torch.stack(steps, dim=1)  # (episodes, longest, 2 x hidden)
    return trace[_valid(torch.as_tensor(lengths), trace.shape[1]).T]  # episode by episode: the flat order


def hidden_trace(
    policy: RecurrentActorCriticPolicy, observations: np.ndarray, episode_starts: np.ndarray
) -> np.ndarray:
    """The actor LSTM's (h, c) after each demonstration step, teacher-forced along each episode from a zero state:
    (N, 2 x hidden), h then c (of the last layer), rows in the order of `observations`."""
    return _trace(policy, observations, episode_starts).cpu().numpy()


@torch.no_grad()
def _trace_distribution(policy: RecurrentActorCriticPolicy, trace: torch.Tensor) -> Distribution:
    """The action distribution at each step of a hidden trace: its h is the LSTM's output there."""
    latent = policy.mlp_extractor.forward_actor(trace[:, : policy.lstm_actor.hidden_size])
    return distribution(policy, latent)


@torch.no_grad()
def _behaviour_drift(
    bc: RecurrentActorCriticPolicy,
    cur: RecurrentActorCriticPolicy,
    traces: tuple[torch.Tensor, torch.Tensor],
    actions: np.ndarray,
    probe: torch.Tensor,
) -> dict[str, float]:
    """drift.behaviour_drift's `demo` metrics from the two policies' hidden traces: KL and agreement on the `probe`
    steps, the expert's log-likelihood on all."""
    d_bc, d_cur = _trace_distribution(bc, traces[0]), _trace_distribution(cur, traces[1])
    metrics = {"drift/kl/demo": float(kl_per_state(d_bc, d_cur)[probe].double().mean())}
    for key, value in agreement_with_bc(cur.action_space, d_bc.mode()[probe], d_cur.mode()[probe]).items():
        metrics[f"drift/{key}/demo"] = value
    acts = torch.as_tensor(actions, device=cur.device)
    if isinstance(cur.action_space, spaces.Discrete):
        acts = acts.reshape(-1)  # SB3's Categorical wants shape (n,)
    metrics["drift/expert_loglik"] = float(d_cur.log_prob(acts).double().mean())
    metrics["drift/expert_loglik_bc"] = float(d_bc.log_prob(acts).double().mean())
    return metrics


def recurrent_drift(
    bc_policy: RecurrentActorCriticPolicy,
    cur_policy: RecurrentActorCriticPolicy,
    observations: np.ndarray,
    actions: np.ndarray,
    episode_starts: np.ndarray,
    probe_size: int,
    seed: int,
    tolerances: Sequence[float] = TOLERANCES,
) -> dict[str, float]:
    """Drift of a recurrent policy from its BC snapshot, along the demonstration episodes.

    - Weights: drift.weight_drift (each LSTM a layer of its side: `actor/lstm_actor`, `critic/lstm_critic`).
    - `drift/cka/demo/lstm`: linear CKA of the two policies' hidden traces (h, c), on a fixed sample of `probe_size`
      demonstration steps (drift.probe_sample's choice for this seed).
    - Behaviour, drift.behaviour_drift's keys for the `demo` probe: `drift/kl/demo` (mean KL(bc || cur)) and
      `drift/agreement/demo` (Box: also `drift/action_abs_diff/demo`) on the same steps, and `drift/expert_loglik` /
      `drift/expert_loglik_bc` on every step.

    Each policy is teacher-forced along each episode from a zero state: its own memory of the demonstrated steps.
    There is no `visited` probe: the states a policy visits in evaluation come without their episodes
    (Capability.visited interleaves the evaluation episodes step by step), so no memory can be rebuilt for them.
    """
    metrics = weight_drift(bc_policy, cur_policy, tolerances)
    traces = (_trace(bc_policy, observations, episode_starts), _trace(cur_policy, observations, episode_starts))
    probe = torch.as_tensor(probe_sample(np.arange(len(observations)), probe_size, seed))
    metrics["drift/cka/demo/lstm"] = linear_cka(traces[0][probe].cpu().numpy(), traces[1][probe].cpu().numpy())
    return metrics | _behaviour_drift(bc_policy, cur_policy, traces, actions, probe)
