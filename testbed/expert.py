"""Train or load the SB3 expert (PPO, or DQN where PPO cannot), cached by a content hash of what determines it."""

from __future__ import annotations

import inspect
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from testbed.cache import (
    CacheError,
    content_hash,
    file_sha256,
    has_record,
    library_versions,
    locked,
    read_record,
    staging_dir,
    write_record,
)
from testbed.config import Config, EnvConfig
from testbed.envs import env_key_fields, full_observation, make_env, make_vec_env
from testbed.evaluate import Capability, evaluate, normalized_score, policy_act, random_act
from testbed.planners import PlannerModel, source_sha256
from testbed.policy import ACTIVATIONS, expert_policy_kwargs, params_sha256

log = logging.getLogger(__name__)

# SB3 algorithms an expert may use (env.expert_algo); BC and fine-tuning always use PPO.
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN}
# How training envs are seeded (envs.train_env_seeds): part of the key, since it changes what training sees.
TRAIN_SEEDING = "seedsequence-v1"
# Evenly spaced training checkpoints kept beside each trained expert: the weaker experts of demos.expert_quality.
N_CHECKPOINTS = 20


class ExpertRejected(RuntimeError):
    """The trained expert did not reach the env's reference return."""


@dataclass(frozen=True)
class Expert:
    """An SB3 expert and what is known about it."""

    model: BaseAlgorithm | PlannerModel  # PPO unless env.expert_algo says otherwise
    path: Path  # the SB3 zip (a planner's: testbed/planners.py)
    sha256: str  # of the zip's bytes: its integrity on disk, not its identity (see params_sha256)
    key: str  # cache key (content hash of its config); its params_sha256 for a user's own expert
    return_mean: float  # on the expert's own check episodes (expert.eval_episodes): the reference check
    return_std: float
    source: str  # "trained" | "cache" | "user" | "checkpoint" (a weaker, earlier expert) | "planner"
    steps: int | None = None  # training env steps behind this model, where known

    @property
    def params_sha256(self) -> str:
        """Its identity: a hash of its parameters (equal for identical trainings, unlike the zip's bytes); a
        planner's is the hash of the planners' source."""
        if isinstance(self.model, PlannerModel):
            return self.sha256
        return params_sha256(self.model.policy)


def expert_key(cfg: Config) -> str:
    """Content hash of what trains the expert, and nothing else: the learner's settings and the evaluation
    episodes are not in it, so a fine-tuning or width sweep shares one expert."""
    env = cfg.env
    return content_hash(
        {
            "env": env_key_fields(env),
            "algo": env.expert_algo,
            **(_planner_key(env) if env.expert_algo == "planner" else {}),
            "kwargs": expert_kwargs(env),
            "net_arch": None if env.expert_net_arch is None else list(env.expert_net_arch),
            "activation": env.expert_activation,
            "timesteps": env.expert_timesteps,
            "seed": cfg.expert.seed,
            "seeding": TRAIN_SEEDING,
            "versions": library_versions(),
        }
    )


def _planner_key(env: EnvConfig) -> dict[str, Any]:
    return {"planner": env.expert_planner, "planner_sha256": source_sha256()}


def expert_view(cfg: Config) -> Config:
    """The job's config as its expert sees it: full observations, so a velocity-masked job imitates (and is
    normalized against) an expert that sees the whole state, and shares it with the unmasked job."""
    return replace(cfg, env=full_observation(cfg.env)) if cfg.env.mask_velocity else cfg


def get_expert(cfg: Config) -> Expert:
    """The user's expert if `expert.path` is set, else the cached one, trained here on a cache miss."""
    cfg = expert_view(cfg)
    if cfg.expert.path:
        return _load_user_expert(cfg)
    if cfg.env.expert_algo == "planner":
        return _planner_expert(cfg)
    key = expert_key(cfg)
    folder = Path(cfg.cache_dir) / "experts" / f"{cfg.env.name}-{key[:16]}"
    with locked(folder):  # parallel jobs asking for the same expert train it once
        if not has_record(folder, "meta.json"):  # a folder without it fails here, before training
            _train_into(folder, cfg, key)
            source = "trained"
        else:
            source = "cache"
        return _load_cached(folder, cfg, source)


def _planner_expert(cfg: Config) -> Expert:
    """The exact planner env.expert_planner; its return on the check episodes is measured once and cached."""
    model = PlannerModel(str(cfg.env.expert_planner))
    key = expert_key(cfg)
    path = Path(cfg.cache_dir) / "experts" / f"{cfg.env.name}-planner-{key[:16]}.json"
    stats = _cached_return(path, lambda: evaluate(cfg.env, policy_act(model), cfg.expert.eval_episodes))
    if cfg.expert.check_reference and stats["return_mean"] < cfg.env.reference_return:
        raise ExpertRejected(
            f"Planner '{model.name}' reached {stats['return_mean']:.2f} on {cfg.env.id}, below "
            f"env.reference_return={cfg.env.reference_return}."
        )
    planner_file = Path(sys.modules[PlannerModel.__module__].__file__ or "")
    return Expert(model, planner_file, source_sha256(), key, stats["return_mean"], stats["return_std"], "planner", 0)


class _SaveCheckpoints(BaseCallback):
    """Save the model into `root`/checkpoints each time training passes another `every` env steps.

    Saving draws no randomness, so an expert trained with checkpoints equals one trained without.
    """

    def __init__(self, root: Path, every: int):
        super().__init__()
        self.root, self.every = root, max(1, every)
        self.saved: list[dict[str, Any]] = []  # [{steps, file, sha256}], in training order
        (root / "checkpoints").mkdir(parents=True, exist_ok=True)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.every * (len(self.saved) + 1):
            name = f"checkpoints/step_{self.num_timesteps:09d}.zip"
            self.model.save(self.root / name)
            self.saved.append({"steps": self.num_timesteps, "file": name, "sha256": file_sha256(self.root / name)})
        return True


def check_expert_kwargs(cfg: EnvConfig) -> None:
    """Fail at startup, naming the key, on an unknown env.expert_algo or an argument it would reject."""
    if cfg.expert_algo == "planner":
        PlannerModel(str(cfg.expert_planner))  # names env.expert_planner when unknown
        return
    if cfg.expert_algo not in ALGOS:
        raise ValueError(f"env.expert_algo='{cfg.expert_algo}' is not one of {sorted([*ALGOS, 'planner'])}")
    if cfg.expert_activation is not None and cfg.expert_activation not in ACTIVATIONS:
        raise ValueError(f"env.expert_activation='{cfg.expert_activation}' is not one of {sorted(ACTIVATIONS)}")
    if "policy_kwargs" in cfg.expert_kwargs:
        raise ValueError("env.expert_kwargs.policy_kwargs: set env.expert_net_arch / env.expert_activation instead")
    reserved = {"self", "policy", "env", "seed", "verbose", "device", "_init_setup_model", "tensorboard_log"}
    allowed = set(inspect.signature(ALGOS[cfg.expert_algo].__init__).parameters) - reserved
    unknown = sorted(set(cfg.expert_kwargs) - allowed)
    if unknown:
        raise ValueError(f"env.expert_kwargs has unknown {cfg.expert_algo.upper()} argument(s) {unknown}")


def expert_kwargs(cfg: EnvConfig) -> dict[str, Any]:
    """env.expert_kwargs, a copy: SB3 keeps what it is given, and the config stays the job's."""
    return dict(cfg.expert_kwargs)


def build_expert(cfg: EnvConfig, seed: int) -> BaseAlgorithm:
    """An untrained expert: PPO on the env's vector env, or an off-policy algorithm on one env (as rl-zoo3)."""
    n_envs = None if cfg.expert_algo == "ppo" else 1
    return ALGOS[cfg.expert_algo](
        "MlpPolicy",
        make_vec_env(cfg, seed=seed, n_envs=n_envs),
        seed=seed,
        policy_kwargs=expert_policy_kwargs(cfg),
        device="cpu",
        verbose=0,
        **expert_kwargs(cfg),
    )


def _train_into(folder: Path, cfg: Config, key: str) -> None:
    start = time.perf_counter()
    log.info(
        "expert: training %s on %s for %d steps (cache miss)",
        cfg.env.expert_algo.upper(),
        cfg.env.id,
        cfg.env.expert_timesteps,
    )
    cpu_start = time.process_time()
    model = build_expert(cfg.env, seed=cfg.expert.seed)
    with staging_dir(folder) as tmp:
        saver = _SaveCheckpoints(tmp, cfg.env.expert_timesteps // N_CHECKPOINTS)
        model.learn(cfg.env.expert_timesteps, callback=saver, progress_bar=cfg.progress and sys.stderr.isatty())
        # CPU seconds beside wall seconds: on a shared machine the wall clock measures the neighbours too.
        train = {"train_seconds": time.perf_counter() - start, "train_cpu_seconds": time.process_time() - cpu_start}
        _finish(tmp, model, saver.saved, cfg, key, train)


def _finish(
    tmp: Path, model: BaseAlgorithm, checkpoints: list[dict[str, Any]], cfg: Config, key: str, train: dict[str, float]
) -> None:
    """Check the trained expert against the reference, then write it and its meta.json into `tmp`."""
    start = time.perf_counter()
    cap = evaluate(cfg.env, policy_act(model.policy), cfg.expert.eval_episodes)
    wall = train["train_seconds"] + time.perf_counter() - start
    log.info("expert: return %.1f +- %.1f after %.0f s", cap.mean, cap.std, wall)
    if cfg.expert.check_reference and cap.mean < cfg.env.reference_return:
        raise ExpertRejected(
            f"Expert for {cfg.env.id} reached {cap.mean:.1f}, below env.reference_return="
            f"{cfg.env.reference_return} after {cfg.env.expert_timesteps} steps; raise env.expert_timesteps "
            "or tune env.expert_kwargs (nothing was cached)."
        )
    model.save(tmp / "model.zip")
    write_record(
        tmp / "meta.json",
        {
            "key": key,
            "sha256": file_sha256(tmp / "model.zip"),
            "env_id": cfg.env.id,
            "algo": cfg.env.expert_algo,
            "return_mean": cap.mean,
            "return_std": cap.std,
            "timesteps": cfg.env.expert_timesteps,
            **train,  # learning only: wall and CPU seconds
            "total_seconds": wall,  # learning and the reference check
            "checkpoints": checkpoints,  # [{steps, file, sha256}], in training order
            "versions": library_versions(),
        },
    )


def _load_cached(folder: Path, cfg: Config, source: str) -> Expert:
    meta = read_record(folder / "meta.json", rebuild=folder)
    zip_path = folder / "model.zip"
    if not zip_path.exists() or file_sha256(zip_path) != meta["sha256"]:
        raise CacheError(
            f"Cached expert {zip_path} is missing or does not match its hash in meta.json; "
            f"delete {folder} to retrain it."
        )
    _check_cached_reference(folder, cfg, meta["return_mean"])
    model = ALGOS[meta.get("algo", "ppo")].load(zip_path, device="cpu")
    return Expert(
        model,
        zip_path,
        meta["sha256"],
        meta["key"],
        meta["return_mean"],
        meta["return_std"],
        source,
        meta["timesteps"],
    )


def _check_cached_reference(folder: Path, cfg: Config, return_mean: float) -> None:
    """The reference check of `_finish`, for an expert cached by a job that skipped it: same command, same outcome."""
    if cfg.expert.check_reference and return_mean < cfg.env.reference_return:
        raise ExpertRejected(
            f"Cached expert {folder} for {cfg.env.id} reached {return_mean:.1f}, below env.reference_return="
            f"{cfg.env.reference_return} (it was cached by a job with expert.check_reference=false); raise "
            "env.expert_timesteps or tune env.expert_kwargs for a better one, or set expert.check_reference=false "
            "to use this one (nothing was deleted)."
        )


def _load_user_expert(cfg: Config) -> Expert:
    path = Path(cfg.expert.path)  # type: ignore[arg-type]
    model = load_user_expert_zip(path, cfg.env.expert_algo)
    sha = file_sha256(path)
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
            write_record(ref, {"return_mean": cap.mean, "return_std": cap.std})
        stats = read_record(ref)
    return Expert(model, path, sha, params_sha256(model.policy), stats["return_mean"], stats["return_std"], "user")


def weaker_expert(cfg: Config, expert: Expert, quality: float) -> Expert:
    """The first training checkpoint whose normalized score reaches `quality` (the final expert scores 1).

    Each checkpoint is evaluated on the expert's evaluation episodes, in training order, until one reaches the
    target; the returns are cached in the expert's folder so the choice is made once.
    """
    if quality >= 1.0:
        return expert
    if expert.source == "planner":
        raise ValueError(
            f"demos.expert_quality={quality}: a planner expert (env.expert_algo=planner) has no training checkpoints "
            "to be weaker with; use demos.epsilon for imperfect demonstrations."
        )
    cfg = expert_view(cfg)
    folder = expert.path.parent
    meta = read_record(folder / "meta.json", rebuild=folder) if expert.source != "user" else {}
    if not meta.get("checkpoints"):
        raise CacheError(
            f"demos.expert_quality={quality} needs the expert's training checkpoints, and {folder} has none "
            "(a user's expert, or one trained before checkpoints were kept: delete the folder to retrain it)."
        )
    # The same episodes on both ends: the checkpoints and the final expert's return are on the check episodes.
    random_return = random_reference(cfg.env, cfg.cache_dir, cfg.expert.eval_episodes, seed=0)["return_mean"]
    scores_path = folder / f"checkpoint_returns-{cfg.expert.eval_episodes}.json"
    with locked(scores_path):
        scores = read_record(scores_path) if scores_path.exists() else {}
        for ckpt in meta["checkpoints"]:
            if ckpt["file"] not in scores:
                model = ALGOS[meta.get("algo", "ppo")].load(folder / ckpt["file"], device="cpu")
                cap = evaluate(cfg.env, policy_act(model.policy), cfg.expert.eval_episodes)
                scores[ckpt["file"]] = {"return_mean": cap.mean, "return_std": cap.std}
                write_record(scores_path, scores)
            ret = scores[ckpt["file"]]["return_mean"]
            if normalized_score(ret, random_return, expert.return_mean) >= quality:
                return _load_checkpoint(folder, meta, ckpt, scores[ckpt["file"]])
    log.info("demos: no checkpoint reaches expert_quality=%.2f; using the final expert", quality)
    return expert


def _load_checkpoint(folder: Path, meta: dict[str, Any], ckpt: dict[str, Any], score: dict[str, float]) -> Expert:
    path = folder / ckpt["file"]
    if file_sha256(path) != ckpt["sha256"]:
        raise CacheError(f"Checkpoint {path} does not match its hash in meta.json; delete {folder} to retrain.")
    model = ALGOS[meta.get("algo", "ppo")].load(path, device="cpu")
    log.info("demos: weaker expert %s (%d steps), return %.1f", path.name, ckpt["steps"], score["return_mean"])
    return Expert(
        model, path, ckpt["sha256"], meta["key"], score["return_mean"], score["return_std"], "checkpoint", ckpt["steps"]
    )


def load_user_expert_zip(path: str | Path, algo: str) -> BaseAlgorithm:
    """The SB3 model at the user's expert.path, or an error naming the key and the file (validate calls it, so a
    bad file fails before anything trains)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expert.path={path} does not exist")
    try:
        return ALGOS[algo].load(path, device="cpu")
    except Exception as exc:  # SB3 says "No data found in the saved file" or "wasn't a zip-file", naming neither
        raise ValueError(
            f"expert.path={path}: cannot load it as an SB3 {algo.upper()} model (env.expert_algo={algo}), "
            f"{type(exc).__name__}: {exc}. It must be a zip saved by SB3's model.save()."
        ) from exc


def reference_returns(cfg: Config, expert: Expert) -> dict[str, float]:
    """The normalized score's 0 (a uniformly random policy) and 1 (the expert, acting by its mode), both measured
    on the job's own evaluation episodes (eval.episodes at eval.seed) and cached, so both ends and the scored
    policy see the same start states. The expert acts on full observations, as when it made the demonstrations."""
    env = expert_view(cfg).env
    random = random_reference(env, cfg.cache_dir, cfg.eval.episodes, cfg.eval.seed)
    fields = {
        "expert": expert.params_sha256,
        "env": env_key_fields(env),
        "episodes": cfg.eval.episodes,
        "seed": cfg.eval.seed,
    }
    path = Path(cfg.cache_dir) / "references" / f"{cfg.env.name}-expert-{content_hash(fields)[:16]}.json"
    ret = _cached_return(path, lambda: evaluate(env, policy_act(expert.model), cfg.eval.episodes, cfg.eval.seed))
    return {
        "random_return": random["return_mean"],
        "random_return_std": random["return_std"],
        "expert_return": ret["return_mean"],
        "expert_return_std": ret["return_std"],
        "episodes": cfg.eval.episodes,
        "eval_seed": cfg.eval.seed,
    }


def random_reference(env: EnvConfig, cache_dir: str, episodes: int, seed: int) -> dict[str, float]:
    """A uniformly random policy's return on evaluation episodes `episodes` at `seed`, measured once and cached."""
    fields = {"env": env_key_fields(env), "episodes": episodes, "seed": seed}
    path = Path(cache_dir) / "references" / f"{env.name}-random-{content_hash(fields)[:16]}.json"
    return _cached_return(path, lambda: evaluate(env, random_act(env, seed=seed), episodes, seed))


def _cached_return(path: Path, measure: Callable[[], Capability]) -> dict[str, float]:
    with locked(path):
        if not path.exists():
            cap = measure()
            write_record(path, {"return_mean": cap.mean, "return_std": cap.std})
        return read_record(path)
