"""Train or load the SB3 PPO expert, cached on disk by a content hash of everything that determines it."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stable_baselines3 import PPO

from testbed.cache import (
    CacheError,
    atomic_write_json,
    content_hash,
    file_sha256,
    library_versions,
    locked,
    read_json,
    staging_dir,
)
from testbed.config import Config, EnvConfig
from testbed.envs import make_env, make_vec_env
from testbed.evaluate import evaluate, policy_act
from testbed.policy import build_ppo

log = logging.getLogger(__name__)


class ExpertRejected(RuntimeError):
    """The trained expert did not reach the env's reference return."""


@dataclass(frozen=True)
class Expert:
    """A PPO expert and what is known about it."""

    model: PPO
    path: Path  # the SB3 zip
    sha256: str  # of the zip
    key: str  # cache key (content hash of its config); the zip's hash for a user's own expert
    return_mean: float  # on the evaluation seeds; the normalized score's 1
    return_std: float
    source: str  # "trained" | "cache" | "user"


def env_key_fields(cfg: EnvConfig) -> dict:
    """The env settings that change what an env is (not its budgets or names)."""
    return {
        "id": cfg.id,
        "max_episode_steps": cfg.max_episode_steps,
        "wrapper": cfg.wrapper,
        "mask_velocity": cfg.mask_velocity,
    }


def expert_key(cfg: Config) -> str:
    return content_hash(
        {
            "env": env_key_fields(cfg.env),
            "timesteps": cfg.env.expert_timesteps,
            "ppo": dict(cfg.env.ppo),
            "net_arch": list(cfg.env.net_arch),
            "activation": cfg.env.activation,
            "seed": cfg.expert.seed,
            "eval_episodes": cfg.expert.eval_episodes,
            "versions": library_versions(),
        }
    )


def get_expert(cfg: Config) -> Expert:
    """The user's expert if `expert.path` is set, else the cached one, trained here on a cache miss."""
    if cfg.expert.path:
        return _load_user_expert(cfg)
    key = expert_key(cfg)
    folder = Path(cfg.cache_dir) / "experts" / f"{cfg.env.name}-{key[:16]}"
    with locked(folder):  # parallel jobs asking for the same expert train it once
        if not (folder / "meta.json").exists():
            _train_into(folder, cfg, key)
            source = "trained"
        else:
            source = "cache"
        return _load_cached(folder, cfg, source)


def _train_into(folder: Path, cfg: Config, key: str) -> None:
    start = time.perf_counter()
    log.info("expert: training PPO on %s for %d steps (cache miss)", cfg.env.id, cfg.env.expert_timesteps)
    venv = make_vec_env(cfg.env, seed=cfg.expert.seed)
    model = build_ppo(cfg.env, venv, seed=cfg.expert.seed)
    model.learn(cfg.env.expert_timesteps, progress_bar=cfg.progress and sys.stderr.isatty())
    cap = evaluate(cfg.env, policy_act(model.policy), cfg.expert.eval_episodes)
    wall = time.perf_counter() - start
    log.info("expert: return %.1f +- %.1f after %.0f s", cap.mean, cap.std, wall)
    if cfg.expert.check_reference and cap.mean < cfg.env.reference_return:
        raise ExpertRejected(
            f"Expert for {cfg.env.id} reached {cap.mean:.1f}, below env.reference_return="
            f"{cfg.env.reference_return} after {cfg.env.expert_timesteps} steps; raise env.expert_timesteps "
            "or tune env.ppo (nothing was cached)."
        )
    with staging_dir(folder) as tmp:
        model.save(tmp / "model.zip")
        atomic_write_json(
            tmp / "meta.json",
            {
                "key": key,
                "sha256": file_sha256(tmp / "model.zip"),
                "env_id": cfg.env.id,
                "return_mean": cap.mean,
                "return_std": cap.std,
                "timesteps": cfg.env.expert_timesteps,
                "train_seconds": wall,
                "versions": library_versions(),
            },
        )


def _load_cached(folder: Path, cfg: Config, source: str) -> Expert:
    meta = read_json(folder / "meta.json")
    zip_path = folder / "model.zip"
    if not zip_path.exists() or file_sha256(zip_path) != meta["sha256"]:
        raise CacheError(
            f"Cached expert {zip_path} is missing or does not match its hash in meta.json; "
            f"delete {folder} to retrain it."
        )
    model = PPO.load(zip_path, device="cpu")
    return Expert(model, zip_path, meta["sha256"], meta["key"], meta["return_mean"], meta["return_std"], source)


def _load_user_expert(cfg: Config) -> Expert:
    path = Path(cfg.expert.path)  # type: ignore[arg-type]
    if not path.exists():
        raise FileNotFoundError(f"expert.path={path} does not exist")
    sha = file_sha256(path)
    model = PPO.load(path, device="cpu")
    env = make_env(cfg.env)
    if model.observation_space != env.observation_space or model.action_space != env.action_space:
        raise ValueError(
            f"expert.path={path}: its spaces {model.observation_space}, {model.action_space} do not "
            f"match env '{cfg.env.id}' ({env.observation_space}, {env.action_space})"
        )
    # The user's expert return is measured once per file and cached by its hash.
    ref = Path(cfg.cache_dir) / "experts" / f"user-{sha[:16]}-{cfg.expert.eval_episodes}.json"
    with locked(ref):
        if not ref.exists():
            cap = evaluate(cfg.env, policy_act(model.policy), cfg.expert.eval_episodes)
            atomic_write_json(ref, {"return_mean": cap.mean, "return_std": cap.std})
        stats = read_json(ref)
    return Expert(model, path, sha, sha, stats["return_mean"], stats["return_std"], "user")
