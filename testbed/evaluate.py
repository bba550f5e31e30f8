"""Capability on fixed evaluation seeds: returns, normalized score and success rate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from testbed.config import EnvConfig
from testbed.envs import EVAL_SEED_BASE, make_env

# Maps a batch of observations (n, *obs_shape) to a batch of actions.
ActFn = Callable[[np.ndarray], np.ndarray]


class EpisodeAct(ABC):
    """An act function with memory across an episode's steps (a recurrent policy): `run_episodes` says when its
    episodes start and which are still running, so each episode keeps its own memory."""

    @abstractmethod
    def start(self, n: int) -> None:
        """`n` episodes start: every memory is reset."""

    @abstractmethod
    def __call__(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Actions for episodes `alive` (indices in 0..n-1, ascending) at their observations `obs` (one row each),
        advancing their memory by one step."""


@dataclass(frozen=True)
class Capability:
    """Capability of one policy over the evaluation episodes."""

    returns: np.ndarray  # (episodes,) undiscounted episodic returns
    lengths: np.ndarray  # (episodes,) episode lengths in env steps
    success_rate: float | None  # fraction of episodes with return >= env.success_return; None if undefined
    visited: np.ndarray  # (steps, *obs_shape) every observation the policy acted on (a probe set for drift)

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    def row(self, random_return: float, expert_return: float) -> dict[str, float | None]:
        """The `eval/...` columns of a checkpoint row."""
        return {
            "eval/return_mean": self.mean,
            "eval/return_std": self.std,
            "eval/normalized_score": normalized_score(self.mean, random_return, expert_return),
            "eval/success_rate": self.success_rate,
            "eval/episodes": int(len(self.returns)),
            "eval/env_steps": int(self.lengths.sum()),
        }


def normalized_score(ret: float, random_return: float, expert_return: float) -> float:
    """0 = the random policy, 1 = the expert; NaN when the expert is no better than random (an unchecked expert)."""
    if expert_return == random_return:
        return float("nan")
    return float((ret - random_return) / (expert_return - random_return))


def eval_seeds(episodes: int, seed: int = 0) -> list[int]:
    """Episode seeds for evaluation: fixed, and disjoint from training and demonstration seeds."""
    return [EVAL_SEED_BASE + 10_000 * seed + i for i in range(episodes)]


def run_episodes(
    cfg: EnvConfig, act: ActFn | EpisodeAct, seeds: list[int], env_fn: Callable[[], gym.Env] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one episode per seed, all envs stepped together so the policy sees one batch per step; `env_fn` makes
    each env (default: the task's, `make_env(cfg)`; a learner with memory acts in its own, testbed/memory.py).

    Returns the episodes' returns and lengths, and every observation acted on.
    """
    envs = [make_env(cfg) if env_fn is None else env_fn() for _ in seeds]
    obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    returns = np.zeros(len(seeds))
    lengths = np.zeros(len(seeds), dtype=int)
    alive = list(range(len(seeds)))
    visited = []
    if isinstance(act, EpisodeAct):
        act.start(len(seeds))
    while alive:
        batch = np.stack([obs[i] for i in alive])
        visited.append(batch)
        actions = act(batch, np.asarray(alive)) if isinstance(act, EpisodeAct) else act(batch)
        still = []
        for i, action in zip(alive, actions, strict=True):
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += float(reward)
            lengths[i] += 1
            if not (terminated or truncated):
                still.append(i)
        alive = still
    for env in envs:
        env.close()
    return returns, lengths, np.concatenate(visited)


def evaluate(
    cfg: EnvConfig,
    act: ActFn | EpisodeAct,
    episodes: int,
    seed: int = 0,
    env_fn: Callable[[], gym.Env] | None = None,
) -> Capability:
    """Capability of `act` over `episodes` fixed evaluation episodes (in `env_fn`'s envs, see run_episodes)."""
    returns, lengths, visited = run_episodes(cfg, act, eval_seeds(episodes, seed), env_fn)
    success = None if cfg.success_return is None else float(np.mean(returns >= cfg.success_return))
    return Capability(returns=returns, lengths=lengths, success_rate=success, visited=visited)


def policy_act(policy, deterministic: bool = True) -> ActFn:  # type: ignore[no-untyped-def]
    """Wrap an SB3 policy (or model) as a batched act function."""
    return lambda obs: policy.predict(obs, deterministic=deterministic)[0]


def random_act(cfg: EnvConfig, seed: int = 0) -> ActFn:
    """A uniformly random policy with its own seeded action space."""
    space = make_env(cfg).action_space
    space.seed(seed)
    return lambda obs: np.stack([space.sample() for _ in range(len(obs))])
