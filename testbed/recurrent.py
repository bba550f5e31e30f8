"""The recurrent learner (policy.kind=lstm): sb3-contrib's RecurrentPPO, the actor's forward along sequences that
BC trains (testbed/recurrent_bc.py), its act function for evaluation, and its drift along demonstration episodes."""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from testbed.config import EnvConfig, PolicyConfig
from testbed.drift import TOLERANCES, agreement_with_bc, linear_cka, probe_sample, weight_drift
from testbed.evaluate import EpisodeAct
from testbed.policy import check_ppo_kwargs, kl_per_state, policy_kwargs

log = logging.getLogger(__name__)

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (n_layers, batch, hidden)


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


def valid_steps(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps, episodes) mask of the unpadded steps, time-major."""
    return torch.arange(steps)[:, None] < lengths[None, :]


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
    return trace[valid_steps(torch.as_tensor(lengths), trace.shape[1]).T]  # episode by episode: the flat order


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
