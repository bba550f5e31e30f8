"""The learner's memory (policy=mlp|framestack|scratchpad|lstm): the env it acts in and its demonstrations.

- mlp and lstm act in the task's own env (the LSTM's memory is inside the network, testbed/recurrent.py);
- framestack: the observation is the last `frames` observations, oldest first, zeros before the episode's start;
- scratchpad: the agent also writes scratch values with every action, appended to its next observation (zeros at
  the start): a memory anyone can read. Its scratch target is the state the task hides from the learner
  (`env.mask_velocity`: the velocities, parity's running result), which the demonstrations recover by replaying
  each episode from its seed in the full-observation env (`hidden_states`).

Demonstrations are stored as the task's learner sees it; `learner_demos` turns them into the observations and
actions of the learner's own env, so BC trains exactly the policy PPO then runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv

from testbed.config import Config, DemosConfig, EnvConfig, PolicyConfig
from testbed.demonstrations import DatasetError, Demonstrations
from testbed.envs import (
    DEMO_SEED_BASE,
    DEMO_SEEDS_PER_SET,
    TrainVecEnv,
    VelocityMask,
    full_observation,
    hidden_indices,
    make_env,
    mask_observation,
)

KINDS = ("mlp", "framestack", "scratchpad", "lstm")


class HiddenState(VelocityMask):
    """Masks the hidden components of a full-observation env, as env.mask_velocity does (the same wrapper), and
    keeps their true values of the latest observation in `hidden` (what a probe or an overwritten scratchpad is
    compared with)."""

    def __init__(self, env: gym.Env, indices: list[int]):
        super().__init__(env, indices)
        self.hidden = np.zeros(len(indices), dtype=np.float64)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self.hidden = np.asarray(observation, dtype=np.float64)[self.indices]
        return super().observation(observation)


class FlatFrameStack(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The last `frames` observations, oldest first, zero-padded at the episode's start, flattened."""

    def __init__(self, env: gym.Env, frames: int):
        gym.utils.RecordConstructorArgs.__init__(self, frames=frames)
        stacked = gym.wrappers.FrameStackObservation(env, frames, padding_type="zero")
        gym.ObservationWrapper.__init__(self, stacked)
        space = stacked.observation_space
        assert isinstance(space, gym.spaces.Box)
        # The zero padding must lie in the space: widen each bound to include 0.
        low, high = np.minimum(space.low, 0).reshape(-1), np.maximum(space.high, 0).reshape(-1)
        self.observation_space = gym.spaces.Box(low, high, dtype=space.dtype)  # type: ignore[arg-type]

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation).reshape(-1)


class Scratchpad(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The agent writes scratch values with each action; they are appended to its next observation.

    Discrete actions: the action becomes MultiDiscrete([n, bins, ...]), scratch level k meaning the value
    low + k (high - low) / (bins - 1). Box actions: the action gains the scratch values as further dimensions,
    clipped to [low, high]. `overwrite`, when set, replaces what the agent wrote before the next observation shows
    it: "true", the true hidden state; "wrong", its mirror in the scratch range (a flipped bit, the negated
    velocity), each on the nearest level for Discrete actions: the causal check (testbed/probes.py).
    """

    def __init__(self, env: gym.Env, low: np.ndarray, high: np.ndarray, bins: int):
        gym.utils.RecordConstructorArgs.__init__(
            self, low=list(map(float, low)), high=list(map(float, high)), bins=bins
        )
        gym.Wrapper.__init__(self, env)
        self.low, self.high, self.bins = np.asarray(low, float), np.asarray(high, float), int(bins)
        obs_space, act_space = env.observation_space, env.action_space
        assert isinstance(obs_space, gym.spaces.Box)
        self.observation_space = gym.spaces.Box(
            np.concatenate([obs_space.low, self.low]).astype(obs_space.dtype),
            np.concatenate([obs_space.high, self.high]).astype(obs_space.dtype),
            dtype=obs_space.dtype,  # type: ignore[arg-type]
        )
        self.discrete = isinstance(act_space, gym.spaces.Discrete)
        if self.discrete:
            assert isinstance(act_space, gym.spaces.Discrete)
            self.action_space = gym.spaces.MultiDiscrete([int(act_space.n)] + [self.bins] * len(self.low))
        else:
            assert isinstance(act_space, gym.spaces.Box)
            self.action_space = gym.spaces.Box(
                np.concatenate([act_space.low, self.low]).astype(np.float32),
                np.concatenate([act_space.high, self.high]).astype(np.float32),
                dtype=np.float32,
            )
        self.env_dims = 1 if self.discrete else int(np.prod(act_space.shape))  # type: ignore[arg-type]
        self.scratch = self._start_value()
        self.overwrite: str | None = None  # None | "true" | "wrong"

    def _start_value(self) -> np.ndarray:
        return np.clip(np.zeros_like(self.low), self.low, self.high)

    def _show(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, self.scratch]).astype(self.observation_space.dtype)  # type: ignore[arg-type]

    def split(self, action: Any) -> tuple[Any, np.ndarray]:
        """The env's action and the scratch values an agent's action writes."""
        action = np.asarray(action)
        if self.discrete:
            return int(action[0]), self.low + (self.high - self.low) * action[1:] / max(self.bins - 1, 1)
        return action[: self.env_dims], np.clip(action[self.env_dims :], self.low, self.high)

    def note(self, hidden: np.ndarray, wrong: bool = False) -> np.ndarray:
        """The note an expert writes for `hidden` (or its mirror, `wrong`), as this scratchpad can write it."""
        value = np.clip(hidden, self.low, self.high)
        value = self.low + self.high - value if wrong else value
        return quantize(value, self.low, self.high, self.bins)[1] if self.discrete else value

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        self.scratch = self._start_value()
        return self._show(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict]:
        env_action, written = self.split(action)
        if self.overwrite is not None:  # the note's truth: the hidden state of the observation acted on
            written = self.note(self.env.get_wrapper_attr("hidden"), wrong=self.overwrite == "wrong")
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        self.scratch = np.asarray(written, dtype=float)
        return self._show(obs), reward, terminated, truncated, info


def scratch_bounds(env_cfg: EnvConfig) -> tuple[np.ndarray, np.ndarray]:
    """The range of the hidden components (the scratch targets); refuses none or unbounded ones, naming the env."""
    indices = hidden_indices(env_cfg)
    if not indices:
        raise ValueError(
            f"policy=scratchpad writes the state the task hides from the learner, and env.id='{env_cfg.id}' hides "
            "none: set env.mask_velocity=true"
        )
    space = make_env(full_observation(env_cfg)).observation_space
    assert isinstance(space, gym.spaces.Box)
    low, high = space.low[indices].astype(float), space.high[indices].astype(float)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            f"policy=scratchpad: env.id='{env_cfg.id}' hides unbounded components {indices} (bounds {low}, {high}); "
            "a scratch value needs a finite range"
        )
    return low, high


def learner_env(env_cfg: EnvConfig, policy: PolicyConfig, track_hidden: bool = False) -> gym.Env:
    """One env as the learner acts in it (unseeded: seed it through reset). A scratchpad's, or any with
    `track_hidden`, masks through HiddenState, which keeps the hidden state's true values (same observations)."""
    hidden = hidden_indices(env_cfg)
    if hidden and (track_hidden or policy.kind == "scratchpad"):
        env: gym.Env = HiddenState(make_env(full_observation(env_cfg)), hidden)
    else:
        env = make_env(env_cfg)
    if policy.kind == "framestack":
        return FlatFrameStack(env, policy.frames)
    if policy.kind == "scratchpad":
        return Scratchpad(env, *scratch_bounds(env_cfg), policy.scratch_bins)
    return env


def learner_vec_env(cfg: Config, seed: int, n_envs: int | None = None) -> VecEnv:
    """PPO's vector env of learner envs, seeded as envs.make_vec_env seeds the task's."""
    n = n_envs or cfg.env.n_envs
    vec = TrainVecEnv([lambda: Monitor(learner_env(cfg.env, cfg.policy)) for _ in range(n)])
    vec.seed(seed)
    return vec


def learner_env_fn(cfg: Config) -> Callable[[], gym.Env]:
    return lambda: learner_env(cfg.env, cfg.policy)


# ------------------------------------------------------------------------------------------ demonstrations


def demo_seeds(d: DemosConfig) -> list[int]:
    """The start seed of each demonstration episode, in dataset order (demonstrations.collect_sources): a mixed-in
    source's episodes take the seeds after the earlier sources'."""
    total = d.episodes + sum(s.episodes for s in d.mix)
    return [DEMO_SEED_BASE + DEMO_SEEDS_PER_SET * d.seed + i for i in range(total)]


def episode_slices(demos: Demonstrations) -> list[slice]:
    ends = [*demos.episode_starts[1:], demos.n_transitions]
    return [slice(int(s), int(e)) for s, e in zip(demos.episode_starts, ends, strict=True)]


def hidden_states(cfg: Config, demos: Demonstrations) -> np.ndarray:
    """The true hidden components of every demonstration observation, (N, hidden), by replaying each episode's
    actions from its start seed in the full-observation env. The replay must reproduce the stored observations
    exactly; a dataset it does not is refused, naming it."""
    indices = hidden_indices(cfg.env)
    env = make_env(full_observation(cfg.env))
    out = np.zeros((demos.n_transitions, len(indices)))
    for episode, (part, seed) in enumerate(zip(episode_slices(demos), demo_seeds(cfg.demos), strict=False)):
        obs, _ = env.reset(seed=seed)
        for t in range(part.start, part.stop):
            if not np.array_equal(mask_observation(obs, indices), demos.observations[t]):
                raise DatasetError(
                    f"{demos.path}: replaying episode {episode} from seed {seed} does not reproduce its observation "
                    f"at step {t - part.start}; the dataset does not come from this env and demos config"
                )
            out[t] = np.asarray(obs, dtype=float)[indices]
            obs, *_ = env.step(demos.actions[t])
    env.close()
    return out


def stack_frames(demos: Demonstrations, frames: int) -> np.ndarray:
    """Each observation with the frames - 1 before it in its episode, oldest first, zeros before the start."""
    obs = demos.observations.reshape(demos.n_transitions, -1)
    out = np.zeros((len(obs), frames * obs.shape[1]), dtype=obs.dtype)
    for part in episode_slices(demos):
        for t in range(part.start, part.stop):
            window = obs[max(part.start, t - frames + 1) : t + 1]
            out[t, (frames - len(window)) * obs.shape[1] :] = window.reshape(-1)
    return out


def quantize(values: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The scratch level nearest each value, and the value that level writes."""
    levels = np.clip(np.rint((values - low) / (high - low) * (bins - 1)), 0, bins - 1).astype(np.int64)
    return levels, low + (high - low) * levels / max(bins - 1, 1)


def scratch_demos(cfg: Config, demos: Demonstrations, hidden: np.ndarray) -> Demonstrations:
    """The demonstrations in the scratchpad's spaces: the expert writes the true hidden state of each step (the
    sub-result, the velocity) and reads back what it wrote the step before. Without scratch supervision BC fits
    the env's actions only, and the scratch it reads is left at the start value: the expert's scratch values are
    not in the data, and the learner's own writes are unknown before it acts."""
    low, high = scratch_bounds(cfg.env)
    discrete = np.issubdtype(demos.actions.dtype, np.integer)
    if discrete:
        levels, written = quantize(hidden, low, high, cfg.policy.scratch_bins)
    else:
        levels, written = hidden, np.clip(hidden, low, high)
    start = np.clip(np.zeros_like(low), low, high)
    shown = np.tile(start, (demos.n_transitions, 1))
    if cfg.policy.scratch_supervision:
        for part in episode_slices(demos):
            shown[part.start + 1 : part.stop] = written[part.start : part.stop - 1]
    observations = np.concatenate([demos.observations, shown.astype(demos.observations.dtype)], axis=1)
    env_actions = demos.actions.reshape(demos.n_transitions, -1)
    actions = np.concatenate([env_actions, levels.astype(env_actions.dtype)], axis=1)
    return replace(demos, observations=observations, actions=actions)


def learner_demos(cfg: Config, demos: Demonstrations) -> Demonstrations:
    """The demonstrations as the learner's env shows them (unchanged for mlp and lstm)."""
    if cfg.policy.kind == "framestack":
        return replace(demos, observations=stack_frames(demos, cfg.policy.frames))
    if cfg.policy.kind == "scratchpad":
        return scratch_demos(cfg, demos, hidden_states(cfg, demos))
    return demos


def fitted_action_dims(cfg: Config) -> int | None:
    """The action components BC fits: all (None), or only the env's for a scratchpad without supervision."""
    if cfg.policy.kind != "scratchpad" or cfg.policy.scratch_supervision:
        return None
    space = make_env(cfg.env).action_space
    return 1 if isinstance(space, gym.spaces.Discrete) else int(np.prod(space.shape))  # type: ignore[arg-type]
