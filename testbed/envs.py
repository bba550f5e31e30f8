"""Make (vector) envs from an env config, with the testbed's observation wrappers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from testbed.config import EnvConfig

# The state each task hides from the learner under env.mask_velocity, as observation indices per env id: the
# velocities, and parity's running result (the learner must then remember it; the expert still sees it).
HIDDEN_INDICES: dict[str, list[int]] = {
    "CartPole-v1": [1, 3],  # cart velocity, pole angular velocity
    "Pendulum-v1": [2],  # angular velocity
    "LunarLander-v3": [2, 3, 5],  # vx, vy, angular velocity
    "Acrobot-v1": [4, 5],  # angular velocities of both links
    "MountainCar-v0": [1],  # car velocity
    "testbed/Parity-v0": [2],  # the parity of the bits shown so far
}

# Seed ranges keep demonstration and evaluation episodes disjoint; training envs draw hashed seeds of their own
# (train_env_seeds), tagged with TRAIN_STREAM so no other use of a SeedSequence reproduces them.
TRAIN_STREAM = 0x7261696E
DEMO_SEED_BASE = 1_000_000
DEMO_SEEDS_PER_SET = 10_000  # demos.seed s starts its episodes at DEMO_SEED_BASE + s * 10,000
EVAL_SEED_BASE = 2_000_000


class VelocityMask(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Zero the hidden components of the observation, HIDDEN_INDICES (the shape stays, the information goes)."""

    def __init__(self, env: gym.Env, indices: list[int]):
        # Recording the arguments lets gymnasium rebuild the wrapped env from its spec.
        gym.utils.RecordConstructorArgs.__init__(self, indices=[int(i) for i in indices])
        gym.ObservationWrapper.__init__(self, env)
        self.indices = np.asarray(indices, dtype=int)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box)
        low, high = space.low.copy(), space.high.copy()
        low[self.indices], high[self.indices] = 0.0, 0.0
        self.observation_space = gym.spaces.Box(low, high, dtype=space.dtype)  # type: ignore[arg-type]

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return mask_observation(observation, self.indices)


def mask_observation(observation: np.ndarray, indices: np.ndarray | list[int]) -> np.ndarray:
    """A copy of `observation` with `indices` zeroed (the observation itself when there are none)."""
    if len(indices) == 0:
        return observation
    observation = np.array(observation, copy=True)
    observation[indices] = 0.0
    return observation


def _minigrid_flat(env: gym.Env) -> gym.Env:
    from minigrid.wrappers import ImgObsWrapper

    # The 7x7x3 egocentric view, flattened to 147 integers: an MLP-sized observation.
    return gym.wrappers.FlattenObservation(ImgObsWrapper(env))


def _minigrid_full(env: gym.Env) -> gym.Env:
    from minigrid.wrappers import FullyObsWrapper, ImgObsWrapper

    # The whole grid (width x height x 3 integers, the agent's cell holding its direction), flattened: the task is
    # fully observed, so an exact planner expert (testbed/planners.py) can act on the observation alone.
    return gym.wrappers.FlattenObservation(ImgObsWrapper(FullyObsWrapper(env)))


WRAPPERS: dict[str, Callable[[gym.Env], gym.Env]] = {"minigrid_flat": _minigrid_flat, "minigrid_full": _minigrid_full}

# What each planner (testbed/planners.py) needs to act on the observation alone: in words, and as a test.
PLANNER_NEEDS: dict[str, tuple[str, Callable[[EnvConfig], bool]]] = {
    "minigrid_doorkey": (
        "a fully observed MiniGrid grid, env.wrapper=minigrid_full",
        lambda cfg: cfg.wrapper == "minigrid_full",
    ),
    "parity": ("env.id='testbed/Parity-v0' (its query flag and parity)", lambda cfg: cfg.id == "testbed/Parity-v0"),
}


def _register_extra_envs() -> None:
    # MiniGrid and the testbed's own tasks register their ids on import.
    import minigrid  # noqa: F401

    import testbed.tasks  # noqa: F401


def check_env_id(env_id: str) -> None:
    """Fail early, naming the id, when gymnasium does not know it."""
    _register_extra_envs()
    if env_id not in gym.registry:
        close = [k for k in gym.registry if k.lower().startswith(env_id.split("-")[0].lower()[:4])][:5]
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(f"Unknown env id '{env_id}' (env.id): gymnasium has no such environment.{hint}")


def check_spaces(cfg: EnvConfig) -> None:
    """Fail early, naming env.id and the space, on spaces the pipeline does not handle, as the learner sees them
    (after env.wrapper and masking): a Box observation, and Discrete or Box actions, the only ones BC's likelihood
    fast path, drift's action agreement and voting are written for."""
    env = make_env(cfg)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    where = f"env.id='{cfg.id}'" + (f" (env.wrapper='{cfg.wrapper}')" if cfg.wrapper else "")
    if not isinstance(obs_space, gym.spaces.Box):
        raise ValueError(
            f"{where} has observation space {obs_space}: the testbed needs a Box observation space, after "
            f"env.wrapper (known wrappers: {sorted(WRAPPERS)})."
        )
    if not isinstance(act_space, gym.spaces.Discrete | gym.spaces.Box):
        raise ValueError(f"{where} has action space {act_space}: the testbed supports Discrete or Box actions only.")
    if cfg.expert_algo == "planner":
        check_planner_env(cfg)
    if cfg.expert_algo == "dqn" and not isinstance(act_space, gym.spaces.Discrete):
        raise ValueError(
            f"env.expert_algo='dqn' needs a Discrete action space, and env.id='{cfg.id}' has {act_space}; "
            "use env.expert_algo=ppo."
        )


def check_planner_env(cfg: EnvConfig) -> None:
    """Fail early, naming env.expert_planner and env.id, when the planner cannot act on this env's observation."""
    name = str(cfg.expert_planner)
    if name not in PLANNER_NEEDS:
        raise ValueError(f"env.expert_planner='{name}' is not one of {sorted(PLANNER_NEEDS)}")
    needs, fits = PLANNER_NEEDS[name]
    if not fits(cfg):
        raise ValueError(f"env.expert_planner='{name}' needs {needs}; env.id='{cfg.id}' has env.wrapper={cfg.wrapper}.")


def make_env(cfg: EnvConfig) -> gym.Env:
    """One env with the configured wrappers (unseeded: seed it through reset)."""
    check_env_id(cfg.id)
    kwargs: dict = {"max_episode_steps": cfg.max_episode_steps} if cfg.max_episode_steps else {}
    try:
        env = gym.make(cfg.id, **kwargs, **cfg.kwargs)
    except TypeError as exc:  # an argument the env does not take, e.g. parity's n left over after env.id=...
        if not cfg.kwargs:
            raise
        raise ValueError(f"env.kwargs={dict(cfg.kwargs)} do not fit env.id='{cfg.id}': {exc}") from exc
    if cfg.wrapper is not None:
        if cfg.wrapper not in WRAPPERS:
            raise ValueError(f"Unknown env.wrapper '{cfg.wrapper}'; known: {sorted(WRAPPERS)}")
        env = WRAPPERS[cfg.wrapper](env)
    hidden = hidden_indices(cfg)
    if hidden:
        env = VelocityMask(env, hidden)
    return env


def env_key_fields(cfg: EnvConfig) -> dict:
    """The env settings that change what an env is (not its budgets or names): part of every cache key."""
    fields = {
        "id": cfg.id,
        "max_episode_steps": cfg.max_episode_steps,
        "wrapper": cfg.wrapper,
        "mask_velocity": cfg.mask_velocity,
    }
    # Only when set, so the keys of envs made without kwargs (every cache made before them) stay as they were.
    return {**fields, "kwargs": dict(cfg.kwargs)} if cfg.kwargs else fields


def full_observation(cfg: EnvConfig) -> EnvConfig:
    """The same env with nothing masked: what an expert sees (only the learner is partially observed)."""
    return dataclasses.replace(cfg, mask_velocity=False) if cfg.mask_velocity else cfg


def hidden_indices(cfg: EnvConfig) -> list[int]:
    """The observation components the learner does not see (none unless env.mask_velocity): HIDDEN_INDICES."""
    if not cfg.mask_velocity:
        return []
    if cfg.id not in HIDDEN_INDICES:
        raise ValueError(f"env.mask_velocity: no hidden components (velocities) known for '{cfg.id}'")
    return list(HIDDEN_INDICES[cfg.id])


def train_env_seeds(seed: int, n_envs: int) -> list[int]:
    """First-reset seeds of a job's training envs: an independent stream per (job seed, env index).

    SB3's own rule, seed + i, would give jobs s and s+1 seven of eight streams in common, while seeds are the unit
    of every confidence interval. numpy's SeedSequence hashes (seed, i) into unrelated 32-bit seeds.
    """
    return [int(np.random.SeedSequence(seed, spawn_key=(TRAIN_STREAM, i)).generate_state(1)[0]) for i in range(n_envs)]


class TrainVecEnv(DummyVecEnv):
    """A DummyVecEnv seeded by `train_env_seeds`; SB3 calls `seed(job seed)` itself when it builds a model."""

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is None:
            return super().seed(None)
        # SB3 hands _seeds to each env's next reset (private; pinned by requirements.lock, tested in test_envs).
        self._seeds = list(train_env_seeds(seed, self.num_envs))
        return self._seeds


def make_vec_env(cfg: EnvConfig, seed: int, n_envs: int | None = None) -> VecEnv:
    """A vector env of `n_envs` copies whose first resets use `train_env_seeds(seed, n_envs)`."""
    n = n_envs or cfg.n_envs
    vec = TrainVecEnv([lambda: Monitor(make_env(cfg)) for _ in range(n)])
    vec.seed(seed)
    return vec
