"""Sweeps that survive real use: Hydra's basic sweeper plus variants, resume and a failure summary.

Takes the sweep's overrides (hydra.sweeper.params, hydra.sweeper.variants, the command line) and returns
Hydra's job returns; on the way it writes sweep.json, one line per job, into the sweep folder:

1. Variants: `variants: {name: {key: values}}` is a union of grids; each is crossed with `params` and the
   command line and sets `variant=name` (unless its grid sets `variant`), so one sweep can hold a BC-only
   frontier, BC+RL and RL from scratch, or several envs.
2. A folder of its own: `hydra.sweep.dir` is created exclusively (suffixed _2, _3 ... when taken), so two
   sweeps started in the same second never share one.
3. Resume: a job whose config hash already has a complete results.json in any sweep folder beside this one
   (the "sweep root", e.g. multirun/<env>/) is skipped, not launched; a killed job's results.json still says
   "running", so it is run again.
4. Failure isolation: every job runs even when some fail; the summary names each failed job and why, and
   the sweep exits non-zero.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

# Private Hydra APIs (this import, JobReturn._return_value below): stable because requirements.lock pins
# hydra-core; tests/integration/test_sweeps.py runs real sweeps through both, so `make lock` cannot break them silently.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from testbed.cache import CacheError, atomic_write_json, read_json
from testbed.results import RESULTS_FILE, config_hash, run_name

log = logging.getLogger(__name__)

MANIFEST = "sweep.json"  # the sweep's jobs, their status and where each result lies


class SweepFailed(CompactHydraException):
    """Some jobs of a sweep failed; the others ran to the end."""


@dataclass
class Job:
    """One job of a sweep and what became of it."""

    overrides: list[str]  # Hydra overrides that make this job
    run_name: str  # env-variant-seed
    config_hash: str | None  # results.config_hash of its config; None when it could not be resolved here
    status: str = "pending"  # "pending" | "skipped" (complete earlier) | "complete" | "failed"
    results: str | None = None  # its results.json; for a skipped job the earlier complete one
    error: str | None = None  # "Type: message" of a failed job

    def line(self, num: int | None) -> str:
        """One line of the summary: number in this sweep (- when skipped), run name, status, why, where."""
        why = {"skipped": "complete earlier", "failed": self.error}.get(self.status)
        parts = [f"{'-' if num is None else f'#{num}':>4} {self.run_name:<28} {self.status:<8}", why, self.results]
        return "  " + "  ".join(part for part in parts if part)


class Sweeper(BasicSweeper):
    """Hydra's basic sweeper with variants, resume and a per-job failure summary (see the module doc).

    Hydra loads it as hydra_plugins.testbed_sweeper.TestbedSweeper (plugins must be defined there).
    """

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, Any] | DictConfig | None = None,
        variants: dict[str, dict[str, Any]] | DictConfig | None = None,
        resume: bool = True,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=_plain(params))
        self.variants: dict[str, dict[str, Any]] = _plain(variants)
        self.resume = resume

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        # 1. Every job: the union over variants of each grid crossed with params and the command line.
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = [self._job(o) for o in expand(self.params, self.variants, arguments, parser)]
        # 2. A sweep folder no other sweep holds, pinned so every job (in any process) writes under it.
        sweep_dir = claim_dir(Path(str(self.config.hydra.sweep.dir)).absolute())
        pin_sweep_dir(self.config, sweep_dir)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        # 3. Resume: skip jobs with a complete result for the same config hash in any sweep beside this one.
        if self.resume:
            done = complete_results(sweep_dir.parent)
            for job in jobs:
                if job.config_hash in done:
                    job.status, job.results = "skipped", str(done[job.config_hash])
        pending = [job for job in jobs if job.status == "pending"]
        write_manifest(sweep_dir, jobs)
        log.info("%d jobs: %d to run, %d complete earlier (resume)", len(jobs), len(pending), len(jobs) - len(pending))
        # 4. Launch the rest batch by batch; a failed job never stops the others.
        returns = self._launch(pending)
        # 5. One line per job; non-zero exit when any failed.
        write_manifest(sweep_dir, jobs)
        report(jobs, pending, sweep_dir)
        return returns

    def _job(self, overrides: list[str]) -> Job:
        """Compose the job's config as its process will, to know its run name and config hash."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]  # what Hydra's run_job hands to the task function
        try:
            return Job(list(overrides), run_name(cfg), config_hash(cfg))
        except Exception as exc:  # e.g. an interpolation only the job's own process can resolve
            log.warning("cannot hash job %s here (%s): it will run, never be skipped", overrides, exc)
            return Job(list(overrides), " ".join(overrides), None)

    def _launch(self, pending: list[Job]) -> list[list[JobReturn]]:
        assert self.launcher is not None
        size = self.max_batch_size or max(len(pending), 1)
        returns = []
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            try:
                results = list(self.launcher.launch([job.overrides for job in batch], initial_job_idx=start))
            except Exception as exc:  # the launcher itself broke (a worker killed by the OOM killer, ...)
                for job in batch:
                    job.status, job.error = "failed", f"launcher: {one_line(exc)}"
                continue
            for job, ret in zip(batch, results, strict=True):
                record(job, ret)
            returns.append(results)
        return returns


def expand(
    params: dict[str, Any], variants: dict[str, dict[str, Any]], arguments: list[str], parser: OverridesParser
) -> list[list[str]]:
    """The jobs' override lists: for each variant (or once without), params x variant grid x command line.

    Later sources win for the same key (command line over variant over params), as in Hydra's basic sweeper.
    """
    # A variant's grid may name its jobs' variant itself, so variants of different envs can share a name.
    grids = [[f"variant={name}", *as_overrides(grid)] for name, grid in variants.items()] or [[]]
    jobs: list[list[str]] = []
    for grid in grids:
        overrides = parser.parse_overrides([*as_overrides(params), *grid, *arguments])
        jobs += BasicSweeper.split_arguments(overrides, None)[0]
    return jobs


def as_overrides(grid: dict[str, Any] | DictConfig | None) -> list[str]:
    """{key: values} -> ["key=values"]; YAML lists and numbers become override syntax ([0] -> "[0]")."""
    return [f"{key}={_override_value(value)}" for key, value in _plain(grid).items()]


def _plain(node: dict[str, Any] | DictConfig | None) -> dict[str, Any]:
    """A config node from Hydra as plain dicts and lists ({} for None)."""
    if isinstance(node, DictConfig):
        return cast(dict[str, Any], OmegaConf.to_container(node))
    return dict(node or {})


def _override_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def claim_dir(base: Path) -> Path:
    """Create `base`, or base_2, base_3 ... when taken: mkdir is atomic, so no two sweeps get the same folder."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def pin_sweep_dir(config: DictConfig, path: Path) -> None:
    """Make `path` the sweep folder for the launcher and for every job it composes (in any process)."""
    override = "hydra.sweep.dir='" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep.dir = str(path)
        others = [o for o in config.hydra.overrides.hydra if not o.startswith("hydra.sweep.dir=")]
        config.hydra.overrides.hydra = [*others, override]


def complete_results(root: Path) -> dict[str, Path]:
    """Config hash -> a complete results.json in any sweep folder under `root` (<root>/<sweep>/<job>/)."""
    found: dict[str, Path] = {}
    for path in sorted(root.glob(f"*/*/{RESULTS_FILE}")):
        try:
            data = read_json(path)
        except (OSError, ValueError, CacheError):
            continue
        if data.get("status") == "complete" and data.get("config_hash"):
            found.setdefault(data["config_hash"], path)
    return found


def record(job: Job, ret: JobReturn) -> None:
    """What became of a launched job, from Hydra's job return."""
    if ret.hydra_cfg is not None:
        job.results = str(Path(ret.hydra_cfg.hydra.runtime.output_dir) / RESULTS_FILE)
    if ret.status == JobStatus.COMPLETED:
        job.status = "complete"
    else:
        job.status, job.error = "failed", one_line(ret._return_value)


def one_line(exc: object) -> str:
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else text
    return first[:300]


def write_manifest(sweep_dir: Path, jobs: list[Job]) -> None:
    atomic_write_json(sweep_dir / MANIFEST, {"sweep_dir": str(sweep_dir), "jobs": [asdict(job) for job in jobs]})


def report(jobs: list[Job], launched: list[Job], sweep_dir: Path) -> None:
    """Log one line per job; raise SweepFailed (Hydra exits 1) naming the failed ones."""
    nums = {id(job): i for i, job in enumerate(launched)}
    counts = {s: sum(job.status == s for job in jobs) for s in ("complete", "skipped", "failed")}
    head = (
        f"sweep {sweep_dir}: {len(jobs)} jobs, {counts['complete']} complete, "
        f"{counts['skipped']} complete earlier, {counts['failed']} failed"
    )
    log.info("\n".join([head, *(job.line(nums.get(id(job))) for job in jobs)]))
    failed = [job for job in jobs if job.status == "failed"]
    if failed:
        lines = "\n".join(job.line(nums.get(id(job))) for job in failed)
        raise SweepFailed(f"{len(failed)} of {len(jobs)} jobs failed (the others ran; rerun to retry):\n{lines}")
