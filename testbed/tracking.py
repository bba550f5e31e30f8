"""Experiment tracking: one wandb run per job (or none), fed the results the pipeline has just written.

results.json stays the source of truth: a tracker may lose data but never a result. Every wandb call is
guarded; the first failure warns once, finishes the run as failed (its record is incomplete) and turns the
tracker into a no-op for the rest of the job.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol

from testbed.config import Config
from testbed.results import check_writable, run_name

if TYPE_CHECKING:
    from wandb import Run

log = logging.getLogger(__name__)

# Metric prefixes and the step metric they plot against: env steps for RL, BC samples for BC.
STEP_METRICS: dict[str, tuple[str, ...]] = {
    "rl_steps": ("rl/*", "eval/*", "drift/*", "compute/*"),
    "bc/samples": ("bc/*",),
}
DRIFT_TABLE = "drift_table"  # a checkpoint row's per-layer drift: a list of dicts, one per layer
DRIFT_TABLE_KEY = "drift/layers"  # where that table is logged
# results.json artifact name -> wandb artifact type, and whether it is shared by every run of the env
# (named after the env, versioned by content) or belongs to this run (named after the run).
ARTIFACT_TYPES: dict[str, tuple[str, bool]] = {
    "expert": ("model", True),
    "demos": ("dataset", True),
    "bc_policy": ("model", False),
    "final_policy": ("model", False),
}


class Tracker(Protocol):
    """What the pipeline reports to a tracker, stage by stage."""

    wall_s: float  # seconds spent inside the tracker so far (start and finish included)

    def log_bc(self, curve: list[dict[str, float]]) -> None:
        """BC training curve: rows of `bc/...` metrics against `bc/samples`."""

    def log_checkpoint(self, row: dict[str, Any]) -> None:
        """One RL checkpoint row (results.json `checkpoints[i]`): its scalars and its drift table."""

    def log_summary(self, results: dict[str, Any]) -> None:
        """Headline numbers of the finished job (see `summary`)."""

    def log_artifacts(self, artifacts: dict[str, dict[str, Any]]) -> None:
        """results.json `artifacts`: {name: {"path", "sha256", ...}}."""

    def finish(self, exit_code: int = 0) -> None:
        """End the run; a non-zero exit code marks it failed."""


@dataclass
class NoTracker:
    """`logger.backend=none`, or wandb that failed to start: results.json is the only record."""

    wall_s: float = 0.0

    def log_bc(self, curve: list[dict[str, float]]) -> None:
        pass

    def log_checkpoint(self, row: dict[str, Any]) -> None:
        pass

    def log_summary(self, results: dict[str, Any]) -> None:
        pass

    def log_artifacts(self, artifacts: dict[str, dict[str, Any]]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def start(cfg: Config, folder: Path, job_type: str) -> Tracker:
    """The job's tracker: a fresh wandb run (stage `job_type`), or a no-op when tracking is off.

    Off means `logger.backend=none` or wandb mode `disabled`; then wandb is not even imported.
    """
    if cfg.logger.backend == "none" or mode(cfg) == "disabled":
        return NoTracker()
    t = time.perf_counter()
    try:
        run = _init_run(cfg, folder, job_type)
    except Exception as exc:
        _warn("start", exc)
        return NoTracker(wall_s=time.perf_counter() - t)
    tracker = WandbTracker(run, run_name(cfg), cfg.env.name, wall_s=time.perf_counter() - t)
    tracker.define_metrics()
    return tracker


def _init_run(cfg: Config, folder: Path, job_type: str) -> Run:
    wandb_dir = _wandb_dir(cfg, folder)
    import wandb

    return wandb.init(
        project=cfg.logger.project,
        name=run_name(cfg),
        group=cfg.logger.group or sweep_group(),
        job_type=job_type,
        tags=sorted({*cfg.logger.tags, cfg.env.name, cfg.variant}),
        config=asdict(cfg),  # the resolved config, as results.json records it
        dir=wandb_dir,
        mode=mode(cfg),  # type: ignore[arg-type]
        reinit="create_new",  # one run per job: never hand back the previous job's run (wandb issue 1314)
    )


def _wandb_dir(cfg: Config, folder: Path) -> Path:
    """`logger.dir`, else the job folder; raises OSError naming it where wandb could not write (it would
    silently fall back to /tmp/wandb)."""
    path = Path(cfg.logger.dir or folder).resolve()
    try:
        check_writable(path)
    except OSError as exc:
        where = f"logger.dir={path}" if cfg.logger.dir else f"the job folder {path} (logger.dir is null)"
        raise OSError(f"{where} is not writable: {exc}") from exc
    return path


def mode(cfg: Config) -> str:
    """wandb mode: WANDB_MODE when set, else `logger.mode` (offline by default)."""
    return os.environ.get("WANDB_MODE") or cfg.logger.mode


def sweep_group() -> str | None:
    """Under a Hydra multirun, the sweep folder's name, so a sweep's runs are grouped; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None


P = ParamSpec("P")
Method = Callable[Concatenate["WandbTracker", P], None]


def _guarded(method: Method[P]) -> Method[P]:
    """Time the call; on the first failure warn, finish the run as failed and stop tracking."""

    @functools.wraps(method)
    def wrapper(self: WandbTracker, *args: P.args, **kwargs: P.kwargs) -> None:
        if self.run is None:
            return
        t = time.perf_counter()
        try:
            method(self, *args, **kwargs)
        except Exception as exc:
            _warn(method.__name__, exc)
            run, self.run = self.run, None
            if run is not None:  # None when `finish` itself failed
                with contextlib.suppress(Exception):
                    run.finish(exit_code=1)
        finally:
            self.wall_s += time.perf_counter() - t

    return wrapper


class WandbTracker:
    """One wandb run: BC curve, checkpoint rows with their drift table, summary, artifacts."""

    def __init__(self, run: Run, name: str, env_name: str, wall_s: float = 0.0):
        self.run: Run | None = run
        self.name = name  # the run name: env + variant + seed
        self.env_name = env_name
        self.wall_s = wall_s

    @_guarded
    def define_metrics(self) -> None:
        """Plot each metric prefix against its step metric (STEP_METRICS)."""
        assert self.run is not None
        for step, globs in STEP_METRICS.items():
            self.run.define_metric(step)
            for glob in globs:
                self.run.define_metric(glob, step_metric=step)

    @_guarded
    def log_bc(self, curve: list[dict[str, float]]) -> None:
        assert self.run is not None
        for row in curve:
            self.run.log(row)

    @_guarded
    def log_checkpoint(self, row: dict[str, Any]) -> None:
        import wandb

        assert self.run is not None
        metrics: dict[str, Any] = scalars(row)
        if row.get(DRIFT_TABLE):
            columns, data = table(row[DRIFT_TABLE])
            metrics[DRIFT_TABLE_KEY] = wandb.Table(columns=list[str | int](columns), data=data)
        self.run.log(metrics)

    @_guarded
    def log_summary(self, results: dict[str, Any]) -> None:
        assert self.run is not None
        self.run.summary.update(summary(results))

    @_guarded
    def log_artifacts(self, artifacts: dict[str, dict[str, Any]]) -> None:
        import wandb

        assert self.run is not None
        for key, info in artifacts.items():
            kind, shared = ARTIFACT_TYPES.get(key, ("file", False))
            name = f"{key}-{self.env_name if shared else self.name}"
            artifact = wandb.Artifact(name, type=kind, metadata=scalars(info) | {"path": str(info["path"])})
            path = Path(info["path"]).resolve()
            if path.is_dir():  # a cached dataset: referenced with its sha256, not copied
                artifact.add_reference(path.as_uri(), checksum=False)
            else:  # job outputs and cache entries are never rewritten, so wandb need not copy them
                artifact.add_file(str(path), policy="immutable")
            self.run.log_artifact(artifact)

    @_guarded
    def finish(self, exit_code: int = 0) -> None:
        assert self.run is not None
        run, self.run = self.run, None
        run.finish(exit_code=exit_code)


def scalars(row: dict[str, Any]) -> dict[str, Any]:
    """The numeric and string entries of a results row (lists, dicts and None left out)."""
    return {k: v for k, v in row.items() if isinstance(v, numbers.Number | str)}


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns (every key, in order of first appearance) and data (None where a row lacks a column)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, [[row.get(c) for c in columns] for row in rows]


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers of a job from its results.json content.

    `summary/start_*` is the capability at 0 RL steps (the BC policy, or the initial one from scratch),
    `summary/final_*` at the largest budget, `summary/gain` the normalized-score difference, and the
    `drift/*` scalars of the largest budget (wandb's summary would keep them anyway; this makes it explicit).
    """
    rows = sorted(results.get("checkpoints") or [], key=lambda r: r["rl_steps"])
    out: dict[str, Any] = {}
    if not rows:
        return out
    final = rows[-1]
    out |= {"summary/rl_steps": final["rl_steps"], **_capability("final", final)}
    if rows[0]["rl_steps"] == 0:
        out |= _capability("start", rows[0])
        out["summary/gain"] = final["eval/normalized_score"] - rows[0]["eval/normalized_score"]
    if results.get("bc"):
        out |= {f"summary/bc_{k}": results["bc"][k] for k in ("val_agreement", "val_loss", "samples")}
    return out | {k: v for k, v in scalars(final).items() if k.startswith("drift/")}


def _capability(prefix: str, row: dict[str, Any]) -> dict[str, Any]:
    keys = {"return": "eval/return_mean", "score": "eval/normalized_score", "success_rate": "eval/success_rate"}
    return {f"summary/{prefix}_{k}": row[key] for k, key in keys.items() if row.get(key) is not None}


def _warn(where: str, exc: Exception) -> None:
    log.warning(
        "wandb failed in %s (%s: %s); tracking is off for the rest of this job, results.json is complete",
        where,
        type(exc).__name__,
        exc,
    )
