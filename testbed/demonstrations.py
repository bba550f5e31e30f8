"""Collect expert episodes, store them as a local Minari dataset, and load them back validated."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from testbed.cache import CacheError, atomic_write_json, content_hash, locked, read_json, tree_sha256
from testbed.config import Config, DemosConfig, EnvConfig
from testbed.envs import DEMO_SEED_BASE, make_env
from testbed.expert import Expert, env_key_fields

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A demonstration dataset failed validation; the message names the file and the field."""


@dataclass(frozen=True)
class Demonstrations:
    """Expert transitions, flattened over episodes, for behaviour cloning."""

    observations: np.ndarray  # (N, *obs_shape) the observation each action was taken in
    actions: np.ndarray  # (N, *act_shape) the action taken (the noisy one when epsilon > 0)
    rewards: np.ndarray  # (N,) float
    terminated: np.ndarray  # (N,) bool: the episode ended in a terminal state
    truncated: np.ndarray  # (N,) bool: the episode was cut by its time limit
    episode_starts: np.ndarray  # (E,) index of each episode's first transition
    returns: np.ndarray  # (E,) undiscounted return of each episode
    path: Path  # the dataset folder (Minari layout: data/main_data.hdf5 + metadata.json)
    sha256: str  # over the dataset's files
    key: str  # cache key: content hash of expert, env and demos config

    @property
    def n_transitions(self) -> int:
        return len(self.actions)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_starts)

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())


def demos_key(cfg: Config, expert: Expert) -> str:
    d: DemosConfig = cfg.demos
    return content_hash(
        {
            "expert": expert.sha256,
            "env": env_key_fields(cfg.env),
            "episodes": d.episodes,
            "epsilon": d.epsilon,
            "deterministic": d.deterministic,
            "seed": d.seed,
        }
    )


def get_demonstrations(cfg: Config, expert: Expert) -> Demonstrations:
    """The cached dataset for (expert, demos config), collected here on a cache miss."""
    key = demos_key(cfg, expert)
    folder = Path(cfg.cache_dir) / "datasets" / "testbed" / f"{cfg.env.name}-{key[:16]}-v0"
    with locked(folder):
        if not (folder / "testbed.json").exists():
            log.info("demos: collecting %d expert episodes (epsilon=%.2f)", cfg.demos.episodes, cfg.demos.epsilon)
            episodes = collect_episodes(cfg.env, expert, cfg.demos)
            write_dataset(folder, episodes, cfg.env, key)
        return load_dataset(folder, cfg.env)


def collect_episodes(env_cfg: EnvConfig, expert: Expert, d: DemosConfig) -> list[dict[str, np.ndarray]]:
    """Run the expert (with epsilon-random actions) for `d.episodes` episodes on demonstration seeds."""
    env = make_env(env_cfg)
    rng = np.random.default_rng(d.seed)
    env.action_space.seed(d.seed)
    episodes = []
    for i in range(d.episodes):
        seed = DEMO_SEED_BASE + 10_000 * d.seed + i
        obs, _ = env.reset(seed=seed)
        ep: dict[str, list] = {
            "observations": [obs],
            "actions": [],
            "rewards": [],
            "terminations": [],
            "truncations": [],
        }
        done = False
        while not done:
            action, _ = expert.model.predict(obs, deterministic=d.deterministic)
            if rng.random() < d.epsilon:
                action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            for name, value in zip(
                ("observations", "actions", "rewards", "terminations", "truncations"),
                (obs, action, reward, terminated, truncated),
                strict=True,
            ):
                ep[name].append(value)
            done = terminated or truncated
        episodes.append({k: np.asarray(v) for k, v in ep.items()} | {"seed": np.asarray(seed)})
    env.close()
    return episodes


@contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    # Minari finds its datasets folder through this variable; point it at our staging area.
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_dataset(folder: Path, episodes: list[dict[str, np.ndarray]], env_cfg: EnvConfig, key: str) -> None:
    """Write a Minari dataset into a temp root, then rename it into place (atomic for readers)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    env = make_env(env_cfg)
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=int(ep["seed"]),
            observations=ep["observations"],
            actions=ep["actions"],
            rewards=ep["rewards"],
            terminations=ep["terminations"],
            truncations=ep["truncations"],
        )
        for i, ep in enumerate(episodes)
    ]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # author/permalink nags: this is a local cache
            minari.create_dataset_from_buffers(
                f"testbed/{folder.name}",
                buffers,
                env=None,
                observation_space=env.observation_space,
                action_space=env.action_space,
                algorithm_name="SB3 PPO expert",
                author="testbed",
                description=f"Expert demonstrations for {env_cfg.id} (testbed cache key {key}).",
            )
        made = staging / "testbed" / folder.name
        returns = [float(ep["rewards"].sum()) for ep in episodes]
        atomic_write_json(
            made / "testbed.json",
            {
                "key": key,
                "env_id": env_cfg.id,
                "episodes": len(episodes),
                "returns": returns,
                "mean_return": float(np.mean(returns)),
                "sha256": tree_sha256(made / "data"),
            },
        )
        os.replace(made, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_dataset(folder: Path, env_cfg: EnvConfig) -> Demonstrations:
    """Load and validate a dataset written by `write_dataset` (or any Minari dataset with testbed.json)."""
    from minari import MinariDataset

    meta = read_json(folder / "testbed.json")
    sha = tree_sha256(folder / "data")
    if sha != meta["sha256"]:
        raise CacheError(f"Dataset {folder / 'data'} does not match its hash in testbed.json; delete {folder}.")
    try:
        dataset = MinariDataset(folder / "data")
        episodes = list(dataset.iterate_episodes())
    except Exception as e:  # h5py and Minari raise many kinds on a damaged file
        raise DatasetError(f"Cannot read dataset {folder / 'data' / 'main_data.hdf5'}: {e}") from e
    env = make_env(env_cfg)
    arrays = [_episode_arrays(ep) for ep in episodes]
    validate(arrays, env.observation_space, env.action_space, folder / "data" / "main_data.hdf5")
    starts = np.cumsum([0] + [len(a["actions"]) for a in arrays[:-1]])
    cat = {k: np.concatenate([a[k] for a in arrays]) for k in ("actions", "rewards", "terminations", "truncations")}
    return Demonstrations(
        observations=np.concatenate([a["observations"][:-1] for a in arrays]),
        actions=cat["actions"],
        rewards=cat["rewards"],
        terminated=cat["terminations"],
        truncated=cat["truncations"],
        episode_starts=starts,
        returns=np.array([a["rewards"].sum() for a in arrays]),
        path=folder,
        sha256=sha,
        key=meta["key"],
    )


def _episode_arrays(ep: object) -> dict[str, np.ndarray]:
    return {
        k: np.asarray(getattr(ep, k)) for k in ("observations", "actions", "rewards", "terminations", "truncations")
    }


def validate(episodes: list[dict[str, np.ndarray]], obs_space: gym.Space, act_space: gym.Space, file: Path) -> None:
    """Check lengths, dtypes, NaN and space membership; raise DatasetError naming file, episode and field."""
    if not episodes:
        raise DatasetError(f"{file}: dataset has no episodes")
    for i, ep in enumerate(episodes):
        n = len(ep["actions"])
        where = f"{file}: episode {i}"
        if n == 0:
            raise DatasetError(f"{where}: field 'actions' is empty")
        if len(ep["observations"]) != n + 1:
            raise DatasetError(
                f"{where}: field 'observations' has length {len(ep['observations'])}, "
                f"expected {n + 1} (one more than 'actions')"
            )
        for name in ("rewards", "terminations", "truncations"):
            if len(ep[name]) != n:
                raise DatasetError(f"{where}: field '{name}' has length {len(ep[name])}, expected {n}")
        for name in ("terminations", "truncations"):
            if ep[name].dtype != np.bool_:
                raise DatasetError(f"{where}: field '{name}' has dtype {ep[name].dtype}, expected bool")
        _check_field(where, "observations", ep["observations"], obs_space)
        _check_field(where, "actions", ep["actions"], act_space)
        if not np.isfinite(ep["rewards"]).all():
            raise DatasetError(f"{where}: field 'rewards' has NaN or infinite values")


def _check_field(where: str, name: str, values: np.ndarray, space: gym.Space) -> None:
    if space.dtype is not None and not np.can_cast(values.dtype, space.dtype, casting="same_kind"):
        raise DatasetError(f"{where}: field '{name}' has dtype {values.dtype}, expected {space.dtype}")
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise DatasetError(f"{where}: field '{name}' has NaN or infinite values")
    if isinstance(space, gym.spaces.Box):
        if values.shape[1:] != space.shape:
            raise DatasetError(f"{where}: field '{name}' has shape {values.shape[1:]}, expected {space.shape}")
        inside = np.all((values >= space.low) & (values <= space.high), axis=tuple(range(1, values.ndim)))
    elif isinstance(space, gym.spaces.Discrete):
        inside = (values >= space.start) & (values < space.start + space.n)
    else:
        inside = np.array([space.contains(v) for v in values])
    if not inside.all():
        first = int(np.argmin(inside))
        raise DatasetError(f"{where}: field '{name}' step {first} lies outside the space {space}")
