"""The job's results.json (the source of truth): schema, atomic updates, and the closing table; the job folder's
files: claimed by one job, written whole or not at all."""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import traceback
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from testbed.cache import CacheError, atomic_write_json, content_hash, read_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
# Settings that change where or how a job reports, not what it computes: left out of the config hash.
_NOT_HASHED = ("logger", "output_dir", "progress", "cache_dir", "torch_threads")
# Earlier attempts of the same config that a job may take over in its folder (a rerun after a failure).
RERUNNABLE = ("failed", "interrupted")
# results.json `error.message` of a job stopped by Ctrl-C (Python's KeyboardInterrupt carries none).
INTERRUPTED = "interrupted by the user (Ctrl-C / SIGINT)"


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config without reporting-only settings: equal hash, equal result."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    return content_hash({k: v for k, v in data.items() if k not in _NOT_HASHED})


# What a job's numbers depend on beyond its config: recorded in results.json (`versions`).
RUN_LIBRARIES = ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy", "hydra-core", "wandb")


def run_versions() -> dict[str, str]:
    """python and the libraries of RUN_LIBRARIES, as installed (requirements.lock pins them)."""
    return {"python": platform.python_version()} | {name: version(name) for name in RUN_LIBRARIES}


def run_name(cfg: DictConfig) -> str:
    """Run identity, the same in folders, wandb and result rows: env + variant + seed."""
    return f"{cfg.env.name}-{cfg.variant}-s{cfg.seed}"


class ResultsFile:
    """results.json of one job, rewritten atomically at each stage so a killed job never looks complete."""

    def __init__(self, folder: Path, cfg: DictConfig):
        self.path = Path(folder) / RESULTS_FILE
        claim_results(self.path, config_hash(cfg))
        self.data: dict[str, Any] = {
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
            "finished_at": None,
            "artifacts": {},
            "references": {},
            "bc": None,
            "checkpoints": [],
            "timings": {},
            "error": None,
        }
        self.write()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def add_checkpoint(self, row: dict[str, Any]) -> None:
        self.data["checkpoints"].append(row)
        self.write()

    def complete(self) -> None:
        self.update(status="complete", finished_at=_now())

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


def claim_results(path: Path, expected_hash: str) -> None:
    """Make `path` (a results.json) this job's, or raise FileExistsError naming its folder.

    The file is created exclusively (O_EXCL is atomic), so two jobs given one folder never share it. One that
    exists may be taken over only by a rerun of the same config after a failed or interrupted attempt.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        return
    except FileExistsError:
        pass
    try:
        old = read_json(path)
    except (OSError, ValueError, CacheError):
        old = {}  # empty (another job is just claiming it) or corrupt: not ours to overwrite
    old = old if isinstance(old, dict) else {}
    if old.get("status") in RERUNNABLE and old.get("config_hash") == expected_hash:
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
