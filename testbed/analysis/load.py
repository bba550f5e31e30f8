"""Sweep folders -> jobs: every results.json (and sweep.json) under them, each complete job's checkpoint and
layer rows, and every job the analysis leaves out, with why."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from testbed import config as _config  # noqa: F401  (registers the env-name resolver .hydra/config.yaml uses)
from testbed.analysis.cells import _checkpoint_rows, _label_cells, _layer_rows
from testbed.results import RESULTS_FILE, SCHEMA_VERSION
from testbed.sweep import MANIFEST, expand

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    """Every job found under some folders, and the checkpoints of the complete ones."""

    points: pd.DataFrame  # one row per (complete, deduplicated) job x checkpoint: cells.COLUMNS + checkpoint scalars
    layers: pd.DataFrame  # one row per job x checkpoint x layer: the checkpoints' drift_table
    jobs: pd.DataFrame  # one row per job found or expected: identity, status, `included`, `problem`

    @property
    def problems(self) -> pd.DataFrame:
        """Jobs left out of the analysis (failed, incomplete, unreadable, missing, duplicate), with why."""
        return self.jobs[~self.jobs["included"]]


def load(folders: Iterable[str | Path]) -> Sweep:
    """Read every results.json under `folders` into tidy tables; list every job the analysis leaves out.

    A sweep's sweep.json (testbed.sweep) also brings in the results of jobs it skipped because an earlier
    sweep had completed them, wherever those lie, and names the jobs that never produced a result.
    """
    roots = [Path(f) for f in folders]
    for folder in roots:
        if not folder.is_dir():
            raise FileNotFoundError(f"no such sweep folder: {folder}")
    manifests = [_read_manifest(m) for folder in roots for m in sorted(folder.rglob(MANIFEST))]
    paths = {p.resolve(): p for folder in roots for p in sorted(folder.rglob(RESULTS_FILE))}
    for manifest in manifests:
        for job in manifest["jobs"]:
            path = Path(job.get("results") or "")
            if job.get("results") and path.is_file():
                paths.setdefault(path.resolve(), path)
    records = [_read_job(path) for path in paths.values()]
    records += _jobs_without_results(roots, manifests, records)
    jobs = _dedupe(pd.DataFrame(records, columns=_JOB_COLUMNS))
    included = [r for r in records if r["data"] is not None and jobs.loc[r["key"], "included"]]
    snapshots = [s for r in included for s in _bc_checkpoint_records(r)]
    _label_cells(included + snapshots)
    for r in included:
        jobs.loc[r["key"], ["cell", "label", "frontier"]] = [r["cell"], r["label"], r["frontier"]]
    points = pd.DataFrame([row for r in included + snapshots for row in _checkpoint_rows(r)])
    layers = pd.DataFrame([row for r in included for row in _layer_rows(r)])
    if not points.empty:
        points = points.sort_values(["env", "label", "seed", "rl_steps"], ignore_index=True)
    return Sweep(points=points, layers=layers, jobs=jobs.drop(columns=["data"]).reset_index(drop=True))


_JOB_COLUMNS = [
    "key",
    "folder",
    "run_name",
    "env",
    "variant",
    "seed",
    "status",
    "config_hash",
    "finished_at",
    "n_checkpoints",
    "problem",
    "cell",
    "label",
    "frontier",
    "data",
]


def _read_job(path: Path) -> dict[str, Any]:
    """One results.json as a job record; an unreadable or unknown file is a record with a problem."""
    rec: dict[str, Any] = dict.fromkeys(_JOB_COLUMNS) | {"key": str(path.parent), "folder": str(path.parent)}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return rec | {"status": "unreadable", "problem": f"unreadable results.json: {exc}"}
    rec |= {k: data.get(k) for k in ("run_name", "variant", "seed", "status", "config_hash", "finished_at")}
    rec |= {
        "env": (data.get("config") or {}).get("env", {}).get("name"),
        "n_checkpoints": len(data.get("checkpoints") or []),
    }
    if data.get("schema_version") != SCHEMA_VERSION:
        return rec | {"problem": f"schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}"}
    if data.get("status") != "complete":
        error = data.get("error") or {}
        why = f"{error.get('type')}: {error.get('message')}" if error else "incomplete (running, or killed)"
        return rec | {"problem": f"{data.get('status')}: {why}"}
    return rec | {"data": data}


def _bc_checkpoint_records(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's BC checkpoints (`bc.checkpoints`) as records of their own: its config with bc.grad_steps = k and the
    checkpoint as the only (budget-0) row, the BC snapshot a separate run of k steps makes (it equals one), so
    cells, labels and the frontier take it as that run."""
    data = rec["data"]
    out = []
    for row in (data.get("bc") or {}).get("checkpoints") or []:
        k = int(row["bc/grad_steps"])
        config = copy.deepcopy(data["config"])
        config["bc"]["grad_steps"] = k
        # The demonstrations are the job's own: their size, where the row predates carrying it (first version).
        row = {"compute/bc/demo_transitions": data["checkpoints"][0].get("compute/bc/demo_transitions")} | row
        snapshot = data | {"config": config, "checkpoints": [row]}
        out.append(rec | {"key": f"{rec['key']}#bc{k}", "data": snapshot})
    return out


def _read_manifest(path: Path) -> dict[str, Any]:
    """A sweep.json: {"sweep_dir", "jobs": [{overrides, run_name, config_hash, status, results, error}]}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("unreadable %s (%s): its jobs that left no results.json are not listed", path, exc)
        data = {}
    return {"path": path, "sweep_dir": path.parent, "jobs": list(data.get("jobs") or [])}


def _jobs_without_results(
    folders: Sequence[Path], manifests: list[dict[str, Any]], found: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Jobs that should have a results.json and have none.

    1. Hydra job folders (with .hydra/) that hold no results.json.
    2. Jobs of a sweep.json whose config hash has no result among those read (killed or never launched).
    3. Sweeps without sweep.json (Hydra's basic sweeper): the jobs multirun.yaml expands to that have no
       job folder.
    """
    records = []
    for folder in folders:
        for hydra_dir in sorted(folder.rglob(".hydra")):
            job = hydra_dir.parent
            if not (job / RESULTS_FILE).exists() and (hydra_dir / "config.yaml").exists():
                records.append(_missing(job, str(job), "no results.json (the job died before its first stage)"))
    seen = {r["config_hash"] for r in found} | {r["folder"] for r in found + records}
    for manifest in manifests:
        for job in manifest["jobs"]:
            job_dir = str(Path(job["results"]).parent) if job.get("results") else None
            if job.get("config_hash") in seen or job_dir in seen:
                continue
            records.append(_manifest_missing(manifest, job, job_dir))
    with_manifest = {m["sweep_dir"] for m in manifests}
    for folder in folders:
        for multirun in sorted(folder.rglob("multirun.yaml")):
            if multirun.parent in with_manifest:
                continue
            for overrides in _never_started(multirun.parent):
                records.append(
                    _missing(multirun.parent, f"{multirun.parent}:{overrides}", f"never started: {' '.join(overrides)}")
                )
    return records


def _manifest_missing(manifest: dict[str, Any], job: dict[str, Any], folder: str | None) -> dict[str, Any]:
    """A sweep.json job with no results.json: what the manifest says became of it."""
    status = str(job.get("status"))
    why = {
        "failed": f"failed: {job.get('error')}",
        "pending": "never ran (pending in sweep.json): the sweep was stopped, or is still running",
    }.get(status, f"{status} in sweep.json, but its results.json is gone: {job.get('results')}")
    rec = _missing(
        Path(folder or manifest["sweep_dir"]),
        f"{manifest['path']}:{job['overrides']}",
        f"{why} ({' '.join(job['overrides'])})",
    )
    name = str(job.get("run_name") or "")
    if rec["env"] is None and name.count("-") >= 2:  # run name: env-variant-s<seed>
        env, variant, seed = name.rsplit("-", 2)
        rec |= {"env": env, "variant": variant, "seed": int(seed[1:]) if seed[1:].isdigit() else None}
    return rec | {"run_name": name or None, "config_hash": job.get("config_hash")}


def _missing(folder: Path, key: str, problem: str) -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(_JOB_COLUMNS)
    env = variant = seed = None
    config = folder / ".hydra" / "config.yaml"
    if config.exists():
        try:
            cfg = OmegaConf.load(config)
            env, variant, seed = cfg.env.name, cfg.variant, cfg.seed  # resolves the variant and env-name interpolations
        except Exception:  # a half-written config: the folder and the problem still say enough
            pass
    return rec | {
        "key": key,
        "folder": str(folder),
        "env": env,
        "variant": variant,
        "seed": seed,
        "status": "missing",
        "problem": problem,
    }


def _never_started(sweep_dir: Path) -> list[tuple[str, ...]]:
    """Override lists the sweep in `sweep_dir` expands to (params, variants, command line) with no job folder."""
    try:
        cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
        sweeper = cfg.hydra.sweeper
        jobs = expand(
            sweeper.get("params") or {},
            sweeper.get("variants") or {},
            list(cfg.hydra.overrides.task),
            OverridesParser.create(),
        )
    except Exception as exc:  # another sweeper's syntax, or glob() over config groups: say so, go on
        log.warning("cannot expand the sweep in %s (%s); jobs that never started are not listed", sweep_dir, exc)
        return []
    expected = {tuple(sorted(job)) for job in jobs}
    found = {
        tuple(sorted(str(o) for o in OmegaConf.load(path)))  # type: ignore[union-attr]
        for path in sweep_dir.rglob(".hydra/overrides.yaml")
    }
    return sorted(expected - found)


def _dedupe(jobs: pd.DataFrame) -> pd.DataFrame:
    """Keep one complete copy of each config_hash (the latest finished); list the others as duplicates."""
    jobs = jobs.set_index("key", drop=False)
    jobs["included"] = jobs["data"].notna()
    complete = jobs[jobs["included"]].sort_values(["finished_at", "folder"], ascending=[False, True])
    kept = complete.drop_duplicates("config_hash")
    for key, row in complete.iterrows():
        if key not in kept.index:
            first = kept.loc[kept["config_hash"] == row["config_hash"], "folder"].iloc[0]
            jobs.loc[key, ["included", "problem"]] = [False, f"duplicate of {first} (same config_hash)"]
    for key, row in jobs[~jobs["included"] & (jobs["status"] != "complete")].iterrows():
        if row["config_hash"] in set(kept["config_hash"]):
            jobs.loc[key, "problem"] = f"{row['problem']} (a complete copy is included)"
    return jobs
