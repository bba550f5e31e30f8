"""The job's results.json (the source of truth): schema, atomic updates, and the closing table."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from testbed.cache import atomic_write_json, content_hash, read_json

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
# Settings that change where or how a job reports, not what it computes: left out of the config hash.
_NOT_HASHED = ("logger", "output_dir", "progress", "cache_dir", "torch_threads")


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config without reporting-only settings: equal hash, equal result."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    return content_hash({k: v for k, v in data.items() if k not in _NOT_HASHED})


def run_name(cfg: DictConfig) -> str:
    """Run identity, the same in folders, wandb and result rows: env + variant + seed."""
    return f"{cfg.env.name}-{cfg.variant}-s{cfg.seed}"


class ResultsFile:
    """results.json of one job, rewritten atomically at each stage so a killed job never looks complete."""

    def __init__(self, folder: Path, cfg: DictConfig):
        self.path = Path(folder) / RESULTS_FILE
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "run_name": run_name(cfg),
            "env_id": cfg.env.id,
            "variant": cfg.variant,
            "seed": cfg.seed,
            "config_hash": config_hash(cfg),
            "config": OmegaConf.to_container(cfg, resolve=True),
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
        self.update(
            status="failed",
            finished_at=_now(),
            error={"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()},
        )

    def write(self) -> None:
        atomic_write_json(self.path, self.data)


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
