"""The job's results.json (the source of truth) and its only writer: what each stage returns -> one `record_*`
method per stage -> atomic rewrites, then the closing table; the job folder's files: claimed by one job, written
whole or not at all."""

from __future__ import annotations

import logging
import platform
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from testbed.cache import CacheError, atomic_create_json, atomic_write_json, content_hash, read_json
from testbed.config import PolicyConfig

if TYPE_CHECKING:  # types only: reading results (analysis, report) need not import torch
    from testbed.bc import BCResult
    from testbed.compute import StageCompute
    from testbed.config import Config
    from testbed.demonstrations import Demonstrations
    from testbed.expert import Expert

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
# Settings that change where or how a job reports, not what it computes: left out of the config hash.
_NOT_HASHED = ("logger", "output_dir", "progress", "cache_dir", "torch_threads")
# Earlier attempts of the same config that a job may take over in its folder (a rerun after a failure).
RERUNNABLE = ("failed", "interrupted")
# results.json `error.message` of a job stopped by Ctrl-C (Python's KeyboardInterrupt carries none).
INTERRUPTED = "interrupted by the user (Ctrl-C / SIGINT)"
# results.json's top-level keys, in the order written; README.md's `results.json` table lists the same (a test
# compares them). OPTIONAL_KEYS appear only in jobs that run their stage: `voting` with `voting.enabled`.
TOP_LEVEL_KEYS = (
    "schema_version",
    "status",
    "run_name",
    "env_id",
    "variant",
    "seed",
    "config_hash",
    "config",
    "versions",
    "started_at",
    "finished_at",
    "artifacts",
    "references",
    "bc",
    "checkpoints",
    "timings",
    "error",
)
OPTIONAL_KEYS = ("voting",)


# Settings added after results existed, left out of the hash at their neutral value (what every job did before
# they existed), so earlier results keep their identity and a resumed sweep still skips them.
_HASH_NEUTRAL: dict[str, Any] = {
    "bc.checkpoints": [],
    "eval.bc_control": False,
    "eval.memory_probe": False,
    "lr_rule": "fixed",
    "env.kwargs": {},
    "policy": asdict(PolicyConfig()),  # the memoryless learner every result before policy= had
}


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config without reporting-only settings: equal hash, equal result."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data = {k: v for k, v in data.items() if k not in _NOT_HASHED}
    for dotted, neutral in _HASH_NEUTRAL.items():
        *parents, leaf = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf, object()) == neutral:
            del node[leaf]
    return content_hash(data)


# What a job's numbers depend on beyond its config: recorded in results.json (`versions`).
RUN_LIBRARIES = ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy", "hydra-core", "wandb")


def run_versions() -> dict[str, str]:
    """python and the libraries of RUN_LIBRARIES, as installed (requirements.lock pins them)."""
    return {"python": platform.python_version()} | {name: version(name) for name in RUN_LIBRARIES}


def run_name(cfg: Config | DictConfig) -> str:
    """Run identity, the same in folders, wandb and result rows: env + variant + seed."""
    return f"{cfg.env.name}-{cfg.variant}-s{cfg.seed}"


@dataclass(frozen=True)
class Artifact:
    """A file a stage wrote into the job folder."""

    path: Path
    sha256: str  # of the file's bytes

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}


@dataclass(frozen=True)
class ExpertStage:
    """What the expert stage returns: the expert and the normalized score's references."""

    expert: Expert
    references: dict[str, float]  # random_return(_std), expert_return(_std) on the evaluation episodes, ...
    wall_s: float  # getting the expert (trained or cached) plus measuring the references


@dataclass(frozen=True)
class DemosStage:
    """What the demonstrations stage returns."""

    demos: Demonstrations
    wall_s: float


@dataclass(frozen=True)
class BCStage:
    """What behaviour cloning returns (no BC stage at all for RL from scratch)."""

    result: BCResult  # its wall_s is the stage's
    policy: Artifact  # the BC policy's state dict, bc_policy.pt
    compute: StageCompute  # the checkpoint rows' `compute/bc/*`
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # rows at bc.checkpoints (bc.checkpoints)


@dataclass(frozen=True)
class VotingStage:
    """What sampling-and-voting at the BC policy returns (`voting.enabled`)."""

    rows: list[dict[str, Any]]  # one per K in voting.ks: voting/*, eval/*, compute/voting/*
    wall_s: float


@dataclass(frozen=True)
class RLStage:
    """What PPO fine-tuning returns; its checkpoint rows went to `ResultsFile.add_checkpoint` as they came."""

    final_policy: Artifact  # the model at the largest budget, final_model.zip
    wall_s: float  # all of PPO, evaluation and drift at every checkpoint included


class ResultsFile:
    """results.json of one job, rewritten atomically at each stage so a killed job never looks complete.

    Its one writer: each stage's result goes in through one method, which writes the file.
    """

    def __init__(self, folder: Path, cfg: DictConfig):
        self.path = Path(folder) / RESULTS_FILE
        # Every key of TOP_LEVEL_KEYS, in its order; those not set here start as null.
        self.data: dict[str, Any] = dict.fromkeys(TOP_LEVEL_KEYS) | {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "run_name": run_name(cfg),
            "env_id": cfg.env.id,
            "variant": cfg.variant,
            "seed": cfg.seed,
            "config_hash": config_hash(cfg),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "versions": run_versions(),
            "started_at": _now(),
            "artifacts": {},
            "references": {},
            "checkpoints": [],
            "timings": {},
        }
        claim_results(self.path, self.data)

    def record_expert(self, stage: ExpertStage) -> None:
        e = stage.expert
        self._stage(
            "expert",
            stage.wall_s,
            path=str(e.path),
            sha256=e.sha256,
            params_sha256=e.params_sha256,
            source=e.source,
            check_return=e.return_mean,
        )
        self.data["references"] = stage.references
        self.write()

    def record_demos(self, stage: DemosStage) -> None:
        d = stage.demos
        self._stage(
            "demos",
            stage.wall_s,
            path=str(d.path),
            sha256=d.sha256,
            episodes=d.n_episodes,
            transitions=d.n_transitions,
            mean_return=d.mean_return,
        )
        self.write()

    def _stage(self, name: str, wall_s: float, **artifact: Any) -> None:
        """A stage's wall time (timings.<name>_s) and its artifact (artifacts.<name>)."""
        self.data["timings"][f"{name}_s"] = wall_s
        self.data["artifacts"][name] = artifact

    def record_bc(self, stage: BCStage) -> None:
        bc = stage.result
        self.data["artifacts"]["bc_policy"] = stage.policy.as_dict()
        self.data["timings"]["bc_s"] = bc.wall_s
        # `train_loss` and `val_loss` hold NLLs (BCResult's train_nll, val_nll); the keys stay for readers.
        self.data["bc"] = {
            "samples": bc.samples,
            "grad_steps": bc.grad_steps,
            "train_transitions": bc.train_transitions,
            "val_transitions": bc.val_transitions,
            "train_loss": bc.train_nll,
            "val_loss": bc.val_nll,
            "val_agreement": bc.val_agreement,
            "wall_s": bc.wall_s,
            "curve": bc.curve,
            "checkpoints": stage.checkpoints,
        }
        self.write()

    def record_voting(self, stage: VotingStage) -> None:
        self.data["timings"]["voting_s"] = stage.wall_s
        self.data["voting"] = stage.rows
        self.write()

    def add_checkpoint(self, row: dict[str, Any]) -> None:
        self.data["checkpoints"].append(row)
        self.write()

    def record_rl(self, stage: RLStage) -> None:
        self.data["timings"]["rl_total_s"] = stage.wall_s
        self.data["artifacts"]["final_policy"] = stage.final_policy.as_dict()
        self.write()

    def complete(self, tracking_s: float) -> None:
        """Mark the job complete; `tracking_s` is the wall time spent on tracking (wandb)."""
        self.data["timings"]["tracking_s"] = tracking_s
        self.data.update(status="complete", finished_at=_now())
        self.write()

    def fail(self, exc: BaseException) -> None:
        """Record why the job stopped: `interrupted` for KeyboardInterrupt (Ctrl-C, SIGTERM), else `failed`."""
        interrupted = isinstance(exc, KeyboardInterrupt)
        message = str(exc) or (INTERRUPTED if interrupted else "")
        self.data.update(
            status="interrupted" if interrupted else "failed",
            finished_at=_now(),
            error={"type": type(exc).__name__, "message": message, "traceback": traceback.format_exc()},
        )
        try:
            self.write()
        except OSError as inner:  # e.g. the disk that failed the job: its own error is the one to raise
            log.error("could not record the failure in %s: %s", self.path, inner)

    def write(self) -> None:
        try:
            atomic_write_json(self.path, self.data)
        except OSError as exc:  # a full disk: say which file
            raise OSError(exc.errno, f"could not write {self.path}: {exc.strerror or exc}") from exc


def claim_results(path: Path, data: dict[str, Any]) -> None:
    """Write a new job's first results.json to `path`, or raise FileExistsError naming its folder.

    The file is created exclusively and whole (cache.atomic_create_json), so two jobs given one folder never
    share it and no reader sees it empty. One that exists may be taken over only by a rerun of the same config
    after a failed or interrupted attempt.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_create_json(path, data)
        return
    except FileExistsError:
        pass
    try:
        old = read_json(path)
    except (OSError, ValueError, CacheError):
        old = {}  # corrupt: not ours to overwrite
    old = old if isinstance(old, dict) else {}
    if old.get("status") in RERUNNABLE and old.get("config_hash") == data["config_hash"]:
        atomic_write_json(path, data)
        return
    raise FileExistsError(
        f"{path.parent} already holds the results.json of another job ({old.get('run_name', 'unreadable')}, "
        f"status {old.get('status')}); give this job another output_dir (or hydra.run.dir), or delete {path} "
        f"(only a failed or interrupted attempt of the same config is rerun in place)"
    )


def check_writable(folder: Path) -> None:
    """Raise OSError unless files can be made in `folder`, or in its nearest existing parent while it is missing.

    Leaves nothing behind; a probe file, since os.access is wrong for root and for read-only mounts.
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:  # it names the probe file, not the folder
        raise OSError(exc.errno, f"cannot create files in {existing} ({exc.strerror})") from exc


def load_results(path: str | Path) -> dict[str, Any]:
    return read_json(path)


def is_complete(path: str | Path, expected_hash: str) -> bool:
    """True when `path` holds a complete result for a config with `expected_hash`."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return False
    return data.get("status") == "complete" and data.get("config_hash") == expected_hash


def format_table(data: dict[str, Any]) -> str:
    """The checkpoints as a small text table (printed at the end of every job)."""
    head = f"{'rl_steps':>9} {'return':>17} {'normalized':>10} {'success':>7} {'rl_wall_s':>9}"
    lines = [f"{data['run_name']}  ({data['status']})", head]
    for row in data["checkpoints"]:
        success = row.get("eval/success_rate")
        lines.append(
            f"{row['rl_steps']:>9} {row['eval/return_mean']:>9.1f} +- {row['eval/return_std']:>5.1f} "
            f"{row['eval/normalized_score']:>10.3f} {'-' if success is None else f'{success:.2f}':>7} "
            f"{row.get('compute/rl/wall_s', 0.0):>9.1f}"
        )
    return "\n".join(lines)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
