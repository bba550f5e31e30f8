"""Collect expert episodes of controlled quality, store them as a local Minari dataset, load them back validated.

Quality knobs: the number of episodes, epsilon-random actions, a weaker expert (an earlier training checkpoint
chosen by its normalized score) and mixtures of such sources; every dataset records the returns of its episodes.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from testbed.cache import (
    CacheError,
    content_hash,
    has_record,
    locked,
    new_staging_dir,
    read_record,
    tree_sha256,
    write_record,
)
from testbed.config import Config, DemosConfig, DemoSource, EnvConfig
from testbed.envs import (
    DEMO_SEED_BASE,
    DEMO_SEEDS_PER_SET,
    env_key_fields,
    full_observation,
    hidden_indices,
    make_env,
    mask_observation,
)
from testbed.expert import Expert, weaker_expert

log = logging.getLogger(__name__)

# Minari's per-episode fields, in the order a step produces them (observations hold one more: the reset).
FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


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
    # One dict per source (the main one first, then demos.mix): episodes, epsilon, expert_quality, the expert
    # actually used (expert_sha256, expert_steps, expert_return) and the mean_return of its own episodes.
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_transitions(self) -> int:
        return len(self.actions)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_starts)

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())


def demo_sources(d: DemosConfig) -> list[dict[str, Any]]:
    """The main source, then those of `d.mix`, in dataset order: {episodes, epsilon, expert_quality}."""
    specs: list[DemosConfig | DemoSource] = [d, *d.mix]
    return [
        {"episodes": int(s.episodes), "epsilon": float(s.epsilon), "expert_quality": s.expert_quality} for s in specs
    ]


def demos_key(cfg: Config, expert: Expert, episodes: int | None | Literal["config"] = "config") -> str:
    """The dataset's cache key; `episodes` replaces the configured count (None: the key of the stream, any count)."""
    d: DemosConfig = cfg.demos
    fields: dict[str, Any] = {
        "expert": expert.params_sha256,  # its parameters: an identical retrained expert keeps its datasets
        "env": env_key_fields(cfg.env),
        "episodes": d.episodes if episodes == "config" else episodes,
        "epsilon": d.epsilon,
        "deterministic": d.deterministic,
        "seed": d.seed,
    }
    if d.expert_quality is not None or d.mix:  # plain datasets keep the keys they had before mixtures
        # The checkpoint a quality target picks depends on the episodes it was evaluated on.
        sources = demo_sources(d)
        if episodes != "config":
            sources[0]["episodes"] = episodes
        fields |= {"sources": sources, "expert_eval_episodes": cfg.expert.eval_episodes}
    return content_hash(fields)


def stream_key(cfg: Config, expert: Expert) -> str | None:
    """The demos key without the episode count: datasets with equal stream keys hold the same episodes in the same
    order (episode i starts from demonstration seed i; epsilon draws come in order), so a smaller one is the first
    episodes of a larger one. None for a mixture, whose later sources start after the earlier ones' episodes."""
    if cfg.demos.mix:
        return None
    return content_hash({"demos_key": demos_key(cfg, expert, episodes=None), "prefix": "stream"})


def get_demonstrations(cfg: Config, expert: Expert) -> Demonstrations:
    """The cached dataset for (expert, demos config): its own, else the first episodes of a larger cached dataset of
    the same stream (starts that differ in their demonstration count share one collection), else collected here."""
    key = demos_key(cfg, expert)
    folder = dataset_folder(cfg, key)
    stream = stream_key(cfg, expert)
    with locked(folder):
        _remove_legacy_staging(folder)
        if not has_record(folder, "testbed.json"):  # a folder without it fails here, before collecting
            larger = _larger_dataset(cfg, stream)
            if larger is not None:
                log.info("demos: the first %d episodes of %s", cfg.demos.episodes, larger)
                with locked(larger):
                    return first_episodes(load_dataset(larger, cfg.env), cfg.demos.episodes, key)
            episodes, sources = collect_sources(cfg, expert)
            write_dataset(folder, episodes, cfg.env, key, sources, stream)
        return load_dataset(folder, cfg.env)


def dataset_folder(cfg: Config, key: str) -> Path:
    return Path(cfg.cache_dir) / "datasets" / "testbed" / f"{cfg.env.name}-{key[:16]}-v0"


def _larger_dataset(cfg: Config, stream: str | None) -> Path | None:
    """The smallest complete cached dataset of `stream` with more episodes than cfg asks for, if any."""
    if stream is None:
        return None
    found = []
    for record in dataset_folder(cfg, "").parent.glob(f"{cfg.env.name}-*-v0/testbed.json"):
        try:
            meta = read_record(record, rebuild=record.parent)
        except CacheError as exc:  # another dataset's problem: this job collects its own instead
            log.warning("demos: not sharing %s: %s", record.parent, exc)
            continue
        if meta.get("stream") == stream and meta["episodes"] > cfg.demos.episodes:
            found.append((meta["episodes"], record.parent))
    return min(found)[1] if found else None


def first_episodes(demos: Demonstrations, n: int, key: str) -> Demonstrations:
    """The first `n` episodes of `demos` (path and sha256 stay the whole dataset's; `key` is the smaller one's)."""
    end = int(demos.episode_starts[n]) if n < demos.n_episodes else demos.n_transitions
    returns = demos.returns[:n]
    sources = [s | {"episodes": n, "mean_return": float(returns.mean())} for s in demos.sources]
    return replace(
        demos,
        observations=demos.observations[:end],
        actions=demos.actions[:end],
        rewards=demos.rewards[:end],
        terminated=demos.terminated[:end],
        truncated=demos.truncated[:end],
        episode_starts=demos.episode_starts[:n],
        returns=returns,
        key=key,
        sources=sources,
    )


def _remove_legacy_staging(folder: Path) -> None:
    """Older versions staged in `.staging-*` roots (not named after the target); one holding `folder` is stale."""
    for root in folder.parent.glob(".staging-*"):
        if (root / "testbed" / folder.name).exists():
            shutil.rmtree(root, ignore_errors=True)


def collect_sources(cfg: Config, expert: Expert) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    """Episodes of every source in dataset order, and what each source was (its expert included).

    Source j's episodes take the demonstration seeds after those of sources 0..j-1, so no start state repeats.
    """
    episodes: list[dict[str, np.ndarray]] = []
    sources = []
    for j, source in enumerate(demo_sources(cfg.demos)):
        quality = source["expert_quality"]
        actor = expert if quality is None else weaker_expert(cfg, expert, quality)
        log.info(
            "demos: collecting %d episodes (epsilon=%.2f, expert %s, return %.1f)",
            source["episodes"],
            source["epsilon"],
            actor.path.name,
            actor.return_mean,
        )
        eps = collect_episodes(
            cfg.env,
            actor,
            cfg.demos,
            episodes=source["episodes"],
            epsilon=source["epsilon"],
            first=len(episodes),
            stream=j,
        )
        returns = [float(ep["rewards"].sum()) for ep in eps]
        sources.append(
            source
            | {"expert_sha256": actor.sha256, "expert_params_sha256": actor.params_sha256}
            | {"expert_steps": actor.steps, "expert_return": actor.return_mean}
            | {"mean_return": float(np.mean(returns))}
        )
        episodes += [ep | {"source": np.asarray(j)} for ep in eps]
    return episodes, sources


def collect_episodes(
    env_cfg: EnvConfig,
    expert: Expert,
    d: DemosConfig,
    episodes: int | None = None,
    epsilon: float | None = None,
    first: int = 0,
    stream: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Run the expert (with epsilon-random actions) on demonstration seeds; `episodes` and `epsilon` default to d's.

    Episodes use seeds first, first+1, ... of the demonstration range; `stream` > 0 gives a mixed-in source its
    own random numbers for the epsilon choices.
    """
    n = d.episodes if episodes is None else episodes
    epsilon = d.epsilon if epsilon is None else epsilon
    env = make_env(full_observation(env_cfg))  # the expert acts on the whole state ...
    hidden = hidden_indices(env_cfg)  # ... and the dataset keeps what the learner sees
    rng = np.random.default_rng(d.seed if stream == 0 else [d.seed, stream])
    env.action_space.seed(d.seed if stream == 0 else int(rng.integers(2**31)))

    def choose(obs: np.ndarray) -> np.ndarray:
        action, _ = expert.model.predict(obs, deterministic=d.deterministic)
        return env.action_space.sample() if rng.random() < epsilon else action

    seeds = [DEMO_SEED_BASE + DEMO_SEEDS_PER_SET * d.seed + i for i in range(first, first + n)]
    out = [record_episode(env, choose, seed, observe=lambda obs: mask_observation(obs, hidden)) for seed in seeds]
    env.close()
    return out


def record_episode(
    env: gym.Env,
    choose: Callable[[np.ndarray], Any],
    seed: int,
    observe: Callable[[np.ndarray], np.ndarray] = np.asarray,
) -> dict[str, np.ndarray]:
    """One episode from reset(seed) in Minari's fields (FIELDS), plus its seed; `choose` acts on the full
    observation, `observe` is what the dataset keeps of each observation."""
    obs, _ = env.reset(seed=seed)
    ep: dict[str, list] = {name: [] for name in FIELDS}
    ep["observations"].append(observe(obs))
    done = False
    while not done:
        action = choose(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        for name, value in zip(FIELDS, (observe(obs), action, reward, terminated, truncated), strict=True):
            ep[name].append(value)
        done = terminated or truncated
    return {k: np.asarray(v) for k, v in ep.items()} | {"seed": np.asarray(seed)}


@contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    # Minari finds its datasets folder through this variable; point it at our staging area.
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root.resolve())  # Minari joins relative paths twice
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_dataset(
    folder: Path,
    episodes: list[dict[str, np.ndarray]],
    env_cfg: EnvConfig,
    key: str,
    sources: list[dict[str, Any]] | None = None,
    stream: str | None = None,
) -> None:
    """Write a Minari dataset into a temp root, then rename it into place (atomic for readers).

    `sources` describes where the episodes came from; an episode's optional "source" entry indexes it.
    """
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
    staging = new_staging_dir(folder)  # a root for Minari; left behind, the next holder of folder's lock removes it
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # author/permalink nags: this is a local cache
            minari.create_dataset_from_buffers(
                f"testbed/{folder.name}",
                buffers,
                env=None,
                observation_space=env.observation_space,
                action_space=env.action_space,
                algorithm_name=f"{env_cfg.expert_algo} expert",  # SB3 ppo or dqn, or an exact planner
                author="testbed",
                description=f"Expert demonstrations for {env_cfg.id} (testbed cache key {key}).",
            )
        made = staging / "testbed" / folder.name
        returns = [float(ep["rewards"].sum()) for ep in episodes]
        write_record(
            made / "testbed.json",
            {
                "key": key,
                "env_id": env_cfg.id,
                "episodes": len(episodes),
                "returns": returns,
                "mean_return": float(np.mean(returns)),
                "sources": sources or [],
                "stream": stream,  # stream_key: a smaller dataset of the same stream is a prefix of this one
                "episode_sources": [int(ep.get("source", 0)) for ep in episodes],
                "sha256": tree_sha256(made / "data"),
            },
        )
        os.replace(made, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_dataset(folder: Path, env_cfg: EnvConfig) -> Demonstrations:
    """Load and validate a dataset written by `write_dataset` (or any Minari dataset with testbed.json)."""
    from minari import MinariDataset

    meta = read_record(folder / "testbed.json", rebuild=folder)
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
    check_episodes(arrays, env.observation_space, env.action_space, folder / "data" / "main_data.hdf5")
    starts = np.cumsum([0] + [len(a["actions"]) for a in arrays[:-1]])
    cat = {k: np.concatenate([a[k] for a in arrays]) for k in FIELDS[1:]}
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
        sources=meta.get("sources", []),
    )


def _episode_arrays(ep: object) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(ep, k)) for k in FIELDS}


def check_episodes(
    episodes: list[dict[str, np.ndarray]], obs_space: gym.Space, act_space: gym.Space, file: Path
) -> None:
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
