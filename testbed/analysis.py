"""Sweep results -> tidy tables, the imitation frontier, compute-equivalent gain with CIs, comparisons.

Reads every results.json under the given folders (no wandb). Everything here is numbers; `report.py`
draws and writes them. The method, in brief (docs/research.md has the long form):

- A *cell* is a set of jobs that differ only in their seed (with it their demos.seed, where that follows the
  seed, the default; a fixed demos.seed is part of the cell) and in which RL budgets they checkpoint at (a
  checkpoint at budget B equals a separate run of budget B). Capability over seeds is the IQM with
  `stats.aggregate`'s stratified bootstrap CI.
- The *imitation frontier* P_BC(C) is fitted, per env and demonstration source, from every BC snapshot:
  the `rl_steps = 0` checkpoint of every `rl.init=bc` job, BC-only or not (all are BC policies whose cost
  is `compute/bc/flops`). At each distinct cost the best BC configuration (the frontier is the best
  capability that cost buys); where a cost has several, the best is chosen on half of the seeds and scored
  on the other half, both ways (cross-fitting: a choice scored on the seeds that made it is biased up, and
  CEG with it down); then
  weighted isotonic regression (scipy's pool-adjacent-violators) over increasing cost, and linear
  interpolation in log10(cost) between fitted points. Nothing is extrapolated.
- *CEG* of a BC+RL point with capability P: C_eq = P_BC^-1(P), the least BC compute whose fitted
  capability reaches P; CEG = C_eq / C_BC and the cost-charged C_eq / (C_BC + C_RL). P above the fit's
  best but reached by some cost's measured capability maps to the cheapest such cost (never below where the
  fit tops out); P above every measured capability gives a lower bound (C_eq >= the largest cost), below
  the fit's lowest an upper bound. The same inverse on the demonstration-transitions axis gives the
  demonstration-equivalent gain D_eq / D. A cell's BC snapshot (rl_steps = 0) is marked `start`, not given
  a gain: it is a point of the frontier itself.
- *CIs* of the gains: seeds are resampled within every cell (the BC configurations that make the frontier,
  within each cross-fitting half, and the BC+RL cell, with the same draw where they share seeds), the
  frontier is refitted on every resample and the point mapped through it; percentile interval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from scipy.optimize import isotonic_regression

from testbed import config as _config  # noqa: F401  (registers the env-name resolver .hydra/config.yaml uses)
from testbed import stats
from testbed.cache import content_hash
from testbed.results import _NOT_HASHED, RESULTS_FILE, SCHEMA_VERSION
from testbed.sweep import MANIFEST, expand

log = logging.getLogger(__name__)

METRIC = "eval/normalized_score"  # capability: 0 random, 1 expert
CONFIDENCE = stats.CONFIDENCE
N_RESAMPLES = stats.N_RESAMPLES
# Config keys (dotted prefixes) that never split a cell: the seed, where the job reports, which budgets.
_NOT_CELL = (*_NOT_HASHED, "seed", "rl.budgets", "rl.budget", "env.rl_budgets")
# Keys that do not change a BC snapshot: its RL settings and its name.
_NOT_BC = (*_NOT_CELL, "rl", "variant")
# Keys that change what a frontier's capability means (task, expert, demonstration source, evaluation).
# Demonstration count, BC steps and the learner's width (env.net_arch) are the frontier's axes, and the
# learner's PPO settings (env.ppo) only shape RL after the BC snapshot, so none of them are among them; nor is
# demos.seed: which draw of demonstrations a job clones is seed noise of one source, not another source.
FRONTIER_KEYS = ("env.id", "env.max_episode_steps", "env.wrapper", "env.mask_velocity", "env.expert_timesteps",
                 "env.expert_algo", "env.expert_kwargs", "env.expert_net_arch", "env.expert_activation", "expert",
                 "demos.epsilon", "demos.expert_quality", "demos.mix", "demos.deterministic", "eval.episodes",
                 "eval.deterministic", "eval.seed")
# demos.seed in a cell's config where each job's demonstrations follow its seed (the default, `${seed}`).
FOLLOWS_SEED = "${seed}"
# Identity and config columns of the tidy table (before the checkpoint's own columns). `demos_seed` is the
# job's resolved demos.seed; `demos_follow_seed` says whether it follows the job's seed or is fixed.
COLUMNS = ("env", "env_id", "variant", "seed", "rl_init", "run_name", "cell", "label", "bc_hash", "frontier",
           "demos", "grad_steps", "demos_seed", "demos_follow_seed", "config_hash", "folder")


# ---------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Sweep:
    """Every job found under some folders, and the checkpoints of the complete ones."""

    points: pd.DataFrame  # one row per (complete, deduplicated) job x checkpoint: COLUMNS + checkpoint scalars
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
    _label_cells(included)
    for r in included:
        jobs.loc[r["key"], ["cell", "label", "frontier"]] = [r["cell"], r["label"], r["frontier"]]
    points = pd.DataFrame([row for r in included for row in _checkpoint_rows(r)])
    layers = pd.DataFrame([row for r in included for row in _layer_rows(r)])
    if not points.empty:
        points = points.sort_values(["env", "label", "seed", "rl_steps"], ignore_index=True)
    return Sweep(points=points, layers=layers, jobs=jobs.drop(columns=["data"]).reset_index(drop=True))


_JOB_COLUMNS = ["key", "folder", "run_name", "env", "variant", "seed", "status", "config_hash", "finished_at",
                "n_checkpoints", "problem", "cell", "label", "frontier", "data"]


def _read_job(path: Path) -> dict[str, Any]:
    """One results.json as a job record; an unreadable or unknown file is a record with a problem."""
    rec: dict[str, Any] = dict.fromkeys(_JOB_COLUMNS) | {"key": str(path.parent), "folder": str(path.parent)}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return rec | {"status": "unreadable", "problem": f"unreadable results.json: {exc}"}
    rec |= {k: data.get(k) for k in ("run_name", "variant", "seed", "status", "config_hash", "finished_at")}
    rec |= {"env": (data.get("config") or {}).get("env", {}).get("name"), "n_checkpoints": len(
        data.get("checkpoints") or [])}
    if data.get("schema_version") != SCHEMA_VERSION:
        return rec | {"problem": f"schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}"}
    if data.get("status") != "complete":
        error = data.get("error") or {}
        why = f"{error.get('type')}: {error.get('message')}" if error else "incomplete (running, or killed)"
        return rec | {"problem": f"{data.get('status')}: {why}"}
    return rec | {"data": data}


def _read_manifest(path: Path) -> dict[str, Any]:
    """A sweep.json: {"sweep_dir", "jobs": [{overrides, run_name, config_hash, status, results, error}]}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("unreadable %s (%s): its jobs that left no results.json are not listed", path, exc)
        data = {}
    return {"path": path, "sweep_dir": path.parent, "jobs": list(data.get("jobs") or [])}


def _jobs_without_results(folders: Sequence[Path], manifests: list[dict[str, Any]],
                          found: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
                records.append(_missing(multirun.parent, f"{multirun.parent}:{overrides}",
                                        f"never started: {' '.join(overrides)}"))
    return records


def _manifest_missing(manifest: dict[str, Any], job: dict[str, Any], folder: str | None) -> dict[str, Any]:
    """A sweep.json job with no results.json: what the manifest says became of it."""
    status = str(job.get("status"))
    why = {"failed": f"failed: {job.get('error')}",
           "pending": "never ran (pending in sweep.json): the sweep was stopped, or is still running"}.get(
        status, f"{status} in sweep.json, but its results.json is gone: {job.get('results')}")
    rec = _missing(Path(folder or manifest["sweep_dir"]), f"{manifest['path']}:{job['overrides']}",
                   f"{why} ({' '.join(job['overrides'])})")
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
            env, variant, seed = cfg.env.name, cfg.variant, cfg.seed  # resolves ${rl.init}
        except Exception:  # a half-written config: the folder and the problem still say enough
            pass
    return rec | {"key": key, "folder": str(folder), "env": env, "variant": variant, "seed": seed,
                  "status": "missing", "problem": problem}


def _never_started(sweep_dir: Path) -> list[tuple[str, ...]]:
    """Override lists the sweep in `sweep_dir` expands to (params, variants, command line) with no job folder."""
    try:
        cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
        sweeper = cfg.hydra.sweeper
        jobs = expand(sweeper.get("params") or {}, sweeper.get("variants") or {}, list(cfg.hydra.overrides.task),
                      OverridesParser.create())
    except Exception as exc:  # another sweeper's syntax, or glob() over config groups: say so, go on
        log.warning("cannot expand the sweep in %s (%s); jobs that never started are not listed", sweep_dir, exc)
        return []
    expected = {tuple(sorted(job)) for job in jobs}
    found = {tuple(sorted(str(o) for o in OmegaConf.load(path)))  # type: ignore[union-attr]
             for path in sweep_dir.rglob(".hydra/overrides.yaml")}
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


# -------------------------------------------------------------------------------- cells and tidy rows


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {dotted key: value}; lists and empty dicts stay whole values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _without(flat: dict[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    prefixes = tuple(prefixes)
    return {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in prefixes)}


def _only(flat: dict[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    prefixes = tuple(prefixes)
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def _label_cells(records: list[dict[str, Any]]) -> None:
    """Give each record its cell, BC snapshot and frontier hashes and a readable label.

    A label is the variant plus the config values that vary between the env's cells, e.g.
    `bc demos.episodes=4 bc.grad_steps=500`.
    """
    flats = _demos_seed_follows(records)
    for r, flat in zip(records, flats, strict=True):
        # RL from scratch uses neither BC settings nor demonstrations (but for its drift probe): not in its cell.
        scratch = r["data"]["config"]["rl"]["init"] != "bc"
        r["flat"] = _without(flat, (*_NOT_CELL, "bc", "demos") if scratch else _NOT_CELL)
        r["cell"] = content_hash(r["flat"])[:12]
        r["bc_hash"] = content_hash(_without(flat, _NOT_BC))[:12]
        r["frontier_flat"] = _only(flat, FRONTIER_KEYS)
    for env in {r["env"] for r in records}:
        group = [r for r in records if r["env"] == env]
        varying = _varying([r["flat"] for r in group], skip=("variant", "rl.init"))
        frontier_varying = _varying([r["frontier_flat"] for r in group], skip=())
        for r in group:
            keys = [k for k in varying if k in r["flat"]]
            r["label"] = " ".join([str(r["data"]["variant"]), *(f"{k}={_short(r['flat'][k])}" for k in keys)])
            r["frontier"] = " ".join([env, *(f"{k}={_short(r['frontier_flat'][k])}" for k in frontier_varying)])


def _demos_seed_follows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's flat config with demos.seed as FOLLOWS_SEED where it follows the job's seed.

    The config in results.json is resolved, so `demos.seed == seed` is all that tells the default (`${seed}`)
    from a fixed set; a job whose fixed value happens to equal its seed counts as fixed when other jobs of its
    configuration used that value with other seeds. Sets `demos_follow_seed` on every record.
    """
    flats = [flatten(r["data"]["config"]) for r in records]
    config = [content_hash(_without(flat, (*_NOT_CELL, "demos.seed"))) for flat in flats]
    fixed = {(c, flat["demos.seed"]) for c, flat in zip(config, flats, strict=True)
             if "demos.seed" in flat and flat["demos.seed"] != flat["seed"]}
    for r, c, flat in zip(records, config, flats, strict=True):
        r["demos_follow_seed"] = ("demos.seed" in flat and flat["demos.seed"] == flat["seed"]
                                  and (c, flat["demos.seed"]) not in fixed)
        if r["demos_follow_seed"]:
            flat["demos.seed"] = FOLLOWS_SEED
    return flats


def _varying(flats: list[dict[str, Any]], skip: Sequence[str]) -> list[str]:
    keys = dict.fromkeys(k for flat in flats for k in flat if k not in skip)
    return [k for k in keys if len({json.dumps(flat[k], sort_keys=True) for flat in flats if k in flat}) > 1]


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)


def _checkpoint_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    data, config = rec["data"], rec["data"]["config"]
    ident = {
        "env": rec["env"], "env_id": data["env_id"], "variant": data["variant"], "seed": data["seed"],
        "rl_init": config["rl"]["init"], "run_name": data["run_name"], "cell": rec["cell"], "label": rec["label"],
        "bc_hash": rec["bc_hash"], "frontier": rec["frontier"], "demos": config["demos"]["episodes"],
        "grad_steps": config["bc"]["grad_steps"] if config["rl"]["init"] == "bc" else 0,
        "demos_seed": config["demos"].get("seed"), "demos_follow_seed": rec["demos_follow_seed"],
        "config_hash": data["config_hash"], "folder": rec["folder"],
    }
    refs = {f"references/{k}": v for k, v in (data.get("references") or {}).items()}
    return [ident | refs | {k: v for k, v in row.items() if not isinstance(v, list | dict)}
            for row in data["checkpoints"]]


def _layer_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    data = rec["data"]
    ident = {"env": rec["env"], "seed": data["seed"], "cell": rec["cell"], "label": rec["label"],
             "rl_init": data["config"]["rl"]["init"]}
    return [ident | {"rl_steps": row["rl_steps"]} | layer
            for row in data["checkpoints"] for layer in row.get("drift_table") or []]


def cell_points(points: pd.DataFrame) -> pd.DataFrame:
    """One row per cell x seed x rl_steps (the same checkpoint from two jobs of one cell counts once)."""
    return points.drop_duplicates(["cell", "seed", "rl_steps"]).reset_index(drop=True)


def demonstration_sets(points: pd.DataFrame) -> pd.DataFrame:
    """Per env, which demonstrations its BC-started cells cloned: `mode` 'per_seed' (each job seed its own set,
    demos.seed = seed), 'fixed' (one set for all seeds, `fixed_seeds` = [demos.seed]), 'mixed' (cells of both, or
    several fixed sets) or 'unknown' (results without demos.seed); `cells_per_seed`, `cells_fixed`: cell counts."""
    rows = []
    for env, g in points[points["rl_init"] == "bc"].groupby("env", sort=True):
        cells = g.drop_duplicates("cell")
        own = cells["demos_follow_seed"].astype(bool)
        fixed = cells.loc[~own & cells["demos_seed"].notna(), "demos_seed"]
        unknown = len(cells) - own.sum() - len(fixed)  # results.json written before demos.seed existed
        sets = {*(["seed"] if own.any() else []), *fixed, *(["?"] if unknown else [])}
        mode = "mixed" if len(sets) > 1 else {"seed": "per_seed", "?": "unknown"}.get(sets.pop(), "fixed")
        rows.append({"env": env, "mode": mode, "fixed_seeds": sorted(int(s) for s in set(fixed)),
                     "cells_per_seed": int(own.sum()), "cells_fixed": len(fixed)})
    return pd.DataFrame(rows, columns=["env", "mode", "fixed_seeds", "cells_per_seed", "cells_fixed"])


def kinds(points: pd.DataFrame) -> pd.Series:
    """Per cell: 'bc_only' (BC snapshots only), 'bc_rl' (BC then RL) or 'scratch' (RL from scratch)."""
    by_cell = points.groupby("cell").agg(init=("rl_init", "first"), top=("rl_steps", "max"))
    kind = np.where(by_cell["init"] == "scratch", "scratch", np.where(by_cell["top"] > 0, "bc_rl", "bc_only"))
    return pd.Series(kind, index=by_cell.index)


# ------------------------------------------------------------------------------------------ capability


def aggregate(scores: np.ndarray) -> dict[str, float]:
    """`stats.aggregate`, or for a single seed its value with an undefined (NaN) CI."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) >= 2:
        return stats.aggregate(scores)
    value = float(scores[0]) if len(scores) else np.nan
    return {"mean": value, "mean_ci_low": np.nan, "mean_ci_high": np.nan, "iqm": value, "iqm_ci_low": np.nan,
            "iqm_ci_high": np.nan, "n_runs": float(len(scores))}


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """`stats.probability_of_improvement`; the CI is NaN when either side has a single seed."""
    if len(x) >= 2 and len(y) >= 2:
        return stats.probability_of_improvement(x, y)
    return {"prob": float(np.mean((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :]))),
            "ci_low": np.nan, "ci_high": np.nan}


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean (25% trimmed mean, cut as scipy.stats.trim_mean cuts), rliable's IQM, along `axis`."""
    x = np.asarray(x, dtype=np.float64)
    x = x if axis in (-1, x.ndim - 1) else np.moveaxis(x, axis, -1)
    cut = int(0.25 * x.shape[-1])
    return np.asarray(np.sort(x, axis=-1)[..., cut : x.shape[-1] - cut].mean(axis=-1))


def capability_table(points: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per cell and RL budget: seeds, IQM and mean of `metric` with bootstrap CIs, compute, raw return."""
    rows = []
    pts = cell_points(points)
    kind = kinds(pts)
    for (cell, rl_steps), g in pts.groupby(["cell", "rl_steps"], sort=False):
        first = g.iloc[0]
        rows.append({
            "env": first["env"], "frontier": first["frontier"], "label": first["label"], "cell": cell,
            "kind": kind[cell], "rl_steps": rl_steps, "demos": first["demos"], "grad_steps": first["grad_steps"],
            "bc_flops": g["compute/bc/flops"].mean(), "rl_flops": g["compute/rl/flops"].mean(),
            "total_flops": g["compute/total/flops"].mean(),
            "demo_transitions": g["compute/bc/demo_transitions"].mean(),
            "return_mean": g["eval/return_mean"].mean(),
            "success_rate": pd.to_numeric(g["eval/success_rate"], errors="coerce").mean(),  # NaN: no success defined
            **aggregate(g[metric].to_numpy()),
            "seeds": sorted(g["seed"].tolist()),
        })
    return pd.DataFrame(rows).sort_values(["env", "kind", "label", "rl_steps"], ignore_index=True)


# --------------------------------------------------------------------------------------------- frontier


@dataclass(frozen=True)
class Frontier:
    """A monotone fit of capability against cost, piecewise linear in log10(cost), defined on its range only."""

    log_cost: np.ndarray  # (n,) log10 of each distinct cost, strictly increasing
    score: np.ndarray  # (n,) fitted capability, nondecreasing
    measured: np.ndarray  # (n,) each cost's capability before the fit (`fit_frontier`'s step 1)

    def __call__(self, cost: np.ndarray | float) -> np.ndarray:
        """P_BC(cost); NaN outside the fitted range."""
        x = np.log10(np.asarray(cost, dtype=np.float64))
        y = np.interp(x, self.log_cost, self.score)
        return np.where((x < self.log_cost[0]) | (x > self.log_cost[-1]), np.nan, y)

    def inverse(self, score: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(cost, censor): the least cost whose fitted capability reaches `score`.

        1. Up to the fit's best: the fit's inverse (linear in log-cost; a plateau maps to its start).
        2. Above the fit's best, where some cost's `measured` capability reached `score` (the isotonic fit
           pools a dip at the top, so its best can lie below a capability that was measured): finite, the
           cheapest cost that measured at least `score`, or the cost where the fit reaches its best if that is
           larger. The second clause keeps the inverse nondecreasing in `score` (a cheap cost that measured
           high inside a pooled stretch would otherwise map a higher score below a lower one).
        3. Above every measured capability: censored, +1, and cost is a lower bound (the largest cost).
           Below the fit's lowest: censored, -1, an upper bound (the smallest cost). 0 otherwise.
        """
        p = np.atleast_1d(np.asarray(score, dtype=np.float64))
        return _inverse(self.log_cost, self.score, self.measured, p)


def _inverse(x: np.ndarray, y: np.ndarray, measured: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frontier.inverse for many fits at once: x (n,) log costs, y and measured (..., n) broadcast against p (...)."""
    y = np.broadcast_to(y, (*p.shape, len(x)))
    reached = np.broadcast_to(measured, y.shape) >= p[..., None] - _TOL
    over = p > y[..., -1] + _TOL  # above the fit's best
    above, below = over & ~reached.any(axis=-1), p < y[..., 0] - _TOL
    if len(x) == 1:
        out = np.full(p.shape, x[0])
    else:
        # 1. The first fitted point at or above p, and the one before it (so y[j-1] < p <= y[j]).
        j = np.clip(np.sum(y < p[..., None] - _TOL, axis=-1), 1, len(x) - 1)
        y0 = np.take_along_axis(y, j[..., None] - 1, axis=-1)[..., 0]
        y1 = np.take_along_axis(y, j[..., None], axis=-1)[..., 0]
        # 2. Linear interpolation in log-cost between them; a score at a plateau's height maps to its start.
        frac = np.divide(p - y0, y1 - y0, out=np.ones_like(p), where=y1 > y0)
        out = x[j - 1] + np.clip(frac, 0.0, 1.0) * (x[j] - x[j - 1])
        out = np.where(p <= y[..., 0] + _TOL, x[0], out)
    # 3. Above the fit but measured somewhere: the cheapest cost that measured p, not before the fit's best.
    fit_top = np.argmax(y >= y[..., -1:] - _TOL, axis=-1)
    out = np.where(over, x[np.maximum(np.argmax(reached, axis=-1), fit_top)], out)
    # 4. Outside what was measured: the bound, flagged.
    out = np.where(above, x[-1], np.where(below, x[0], out))
    return 10.0**out, np.where(above, 1, np.where(below, -1, 0))


_TOL = 1e-12


def fit_frontier(cost: np.ndarray, scores: Sequence[np.ndarray] | np.ndarray) -> Frontier:
    """Fit P_BC from the per-seed capabilities of BC configurations (`scores[i]`, in seed order) at `cost[i]`.

    A bare number in `scores` is a configuration with a single seed.

    1. At each distinct cost, the capability that cost buys: the best configuration there, chosen on some
       seeds and scored on the others (`_choose_and_score`), so that the seeds' luck that made a
       configuration look best does not also score it (which would bias the frontier up and CEG down).
       At a cost with a single configuration nothing is chosen: its IQM over all seeds.
    2. Weighted isotonic regression (pool adjacent violators) in order of increasing cost; the weight of a
       cost is the number of seeds that scored it.
    """
    samples = [np.atleast_1d(np.asarray(s, dtype=np.float64))[None, :] for s in scores]
    levels, value, weight = _cross_fitted(np.asarray(cost, dtype=np.float64), samples)
    return Frontier(log_cost=np.log10(levels), score=_isotonic(value, weight)[0], measured=value[0])


def _isotonic(value: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted isotonic regression of every row of `value` (rows x costs) over increasing cost."""
    return np.stack([isotonic_regression(v, weights=w, increasing=True).x for v, w in zip(value, weight, strict=True)])


def _cross_fitted(cost: np.ndarray, samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(levels, value, weight): distinct costs and, per row of the samples, each cost's capability and weight.

    `samples[i]` holds configuration i's scores, (rows, seeds) in seed order: rows are the data as measured
    and bootstrap resamples of it; value and weight are (rows, levels).
    """
    if np.any(cost <= 0) or not np.all(np.isfinite(cost)):
        raise ValueError(f"frontier costs must be positive and finite, got {cost}")
    levels, level_of = np.unique(cost, return_inverse=True)
    value = np.empty((samples[0].shape[0], len(levels)))
    weight = np.empty_like(value)
    for j in range(len(levels)):
        value[:, j], weight[:, j] = _choose_and_score([samples[i] for i in np.flatnonzero(level_of == j)])
    return levels, value, weight


def _choose_and_score(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(value, weight) per row: the capability one cost buys, from its configurations' (rows, seeds) scores.

    1. A single configuration: its IQM over all its seeds (weight: its seeds).
    2. Several (two-fold cross-fitting): the even-position seeds choose the configuration with the best IQM
       on them, and the odd ones do the same; the value is the IQM over the pooled seeds of the other half
       of each chosen configuration (weight: the pooled count). When both halves choose the same
       configuration, that is its IQM over all its seeds.
    3. A configuration with one seed cannot be scored on seeds that did not choose it: it is left out when
       another configuration at the cost has two seeds or more; when none has, the best IQM is taken as it is
       (the selection bias that cross-fitting removes stays there).
    """
    rows = samples[0].shape[0]
    if len(samples) == 1:
        return iqm(samples[0]), np.full(rows, samples[0].shape[1], dtype=np.float64)
    usable = [s for s in samples if s.shape[1] >= 2]
    if not usable:
        return np.max(np.stack([iqm(s) for s in samples]), axis=0), np.ones(rows)
    even, odd = [s[:, 0::2] for s in usable], [s[:, 1::2] for s in usable]
    # 1. Each half's choice, per row.
    chosen_even = np.argmax(np.stack([iqm(h) for h in even]), axis=0)
    chosen_odd = np.argmax(np.stack([iqm(h) for h in odd]), axis=0)
    # 2. Each row's two choices, scored on the halves that did not make them: all rows at once where every
    #    configuration has as many seeds, else per distinct pair of choices.
    if len({s.shape[1] for s in usable}) == 1:
        at = np.arange(rows)
        pooled = np.concatenate([np.stack(odd)[chosen_even, at], np.stack(even)[chosen_odd, at]], axis=1)
        return iqm(pooled), np.full(rows, pooled.shape[1], dtype=np.float64)
    value, weight = np.empty(rows), np.empty(rows)
    for a, b in set(zip(chosen_even.tolist(), chosen_odd.tolist(), strict=True)):
        at = (chosen_even == a) & (chosen_odd == b)
        value[at] = iqm(np.concatenate([odd[a][at], even[b][at]], axis=1))
        weight[at] = odd[a].shape[1] + even[b].shape[1]
    return value, weight


def _draws(n: int, n_resamples: int, rng: np.random.Generator, halves: bool) -> np.ndarray:
    """(1 + n_resamples, n) seed positions: row 0 the seeds as measured, then bootstrap resamples.

    With `halves`, seeds are resampled within each cross-fitting half (even and odd positions), so that a
    resample never puts one seed in both halves (which would let the seeds that choose a configuration score it).
    """
    draw = np.tile(np.arange(n), (n_resamples + 1, 1))
    for half in (draw[0, 0::2], draw[0, 1::2]) if halves else (draw[0],):
        if half.size:
            draw[1:, half] = half[rng.integers(0, half.size, size=(n_resamples, half.size))]
    return draw


_CELL_COLUMNS = ["env", "frontier", "bc_hash", "label", "demos", "grad_steps", "bc_flops", "demo_transitions",
                 "n_seeds", "score_iqm", "seeds", "scores"]


def frontier_cells(points: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """The BC snapshots behind the frontier: one row per BC configuration (IQM over its seeds, scores in seed order)."""
    snaps = points[(points["rl_init"] == "bc") & (points["rl_steps"] == 0)].drop_duplicates(["bc_hash", "seed"])
    if snaps.empty:
        return pd.DataFrame(columns=_CELL_COLUMNS)
    snaps = snaps.assign(_config=pd.factorize(snaps["bc_hash"])[0]).sort_values(["_config", "seed"], kind="stable")
    # Each configuration is one run of rows of `snaps`, in seed order: split there (a groupby is slow on big sweeps).
    starts = np.flatnonzero(np.diff(snaps["_config"].to_numpy(), prepend=-1))
    scores = np.split(snaps[metric].to_numpy(dtype=np.float64), starts[1:])
    means = snaps.groupby("_config")[["compute/bc/flops", "compute/bc/demo_transitions"]].mean()
    cells = snaps.iloc[starts][_CELL_COLUMNS[:6]].reset_index(drop=True).assign(
        bc_flops=means["compute/bc/flops"].to_numpy(), demo_transitions=means["compute/bc/demo_transitions"].to_numpy(),
        n_seeds=np.diff([*starts, len(snaps)]), score_iqm=[float(iqm(s)) for s in scores],
        seeds=np.split(snaps["seed"].to_numpy(), starts[1:]), scores=scores)
    return cells.sort_values(["frontier", "bc_flops", "demos"], ignore_index=True)


AXES = {"flops": "bc_flops", "transitions": "demo_transitions"}  # frontier axis -> cost column


def fit_frontiers(cells: pd.DataFrame) -> dict[tuple[str, str], Frontier]:
    """{(frontier, axis): Frontier} for every frontier group, on both axes."""
    return {(name, axis): fit_frontier(g[col].to_numpy(), g["scores"].to_list())
            for name, g in cells.groupby("frontier") for axis, col in AXES.items()}


# ------------------------------------------------------------------------------ compute-equivalent gain


def ceg_table(points: pd.DataFrame, metric: str = METRIC, n_resamples: int = N_RESAMPLES,
              confidence: float = CONFIDENCE, seed: int = stats.SEED) -> pd.DataFrame:
    """Compute- and demonstration-equivalent gain of every BC+RL cell at every budget, with bootstrap CIs.

    Columns per (cell, rl_steps): capability IQM `score`; `bc_flops` C_BC, `rl_flops` C_RL, `flops_eq` C_eq;
    `ceg` = C_eq / C_BC and `ceg_charged` = C_eq / (C_BC + C_RL), each with `_ci_low`/`_ci_high`;
    `ceg_censor` +1 (C_eq is a lower bound), -1 (an upper bound) or 0, shared by both; `ceg_ci_high_censored`
    / `ceg_ci_low_censored` when more than (1 - confidence) / 2 of the resamples were censored that way, so
    that end of the CI is a bound too. The same for demonstrations: `transitions_eq`, `deg` (D_eq / D), ... .
    `start` marks the cell's BC snapshot (rl_steps = 0): a BC configuration of the frontier itself, whose
    gain would be 1 by construction, so it has its `score` and no equivalents or gains (NaN).
    """
    pts = cell_points(points)
    bc_rl = pts["cell"].map(kinds(pts)).eq("bc_rl")
    fcells = frontier_cells(pts, metric)
    rng = np.random.default_rng(seed)
    rows = []
    for name, fc in fcells.groupby("frontier", sort=False):
        targets = pts[bc_rl & (pts["frontier"] == name)]
        if not targets.empty:
            rows += _group_ceg(fc.reset_index(drop=True), targets, metric, n_resamples, confidence, rng)
    return pd.DataFrame(rows)


def _group_ceg(fc: pd.DataFrame, targets: pd.DataFrame, metric: str, n_resamples: int, confidence: float,
               rng: np.random.Generator) -> list[dict[str, Any]]:
    """CEG rows for the BC+RL points of one frontier group, all mapped through the same resampled fits.

    Row 0 of every array below is the data as measured, rows 1... its bootstrap resamples.
    """
    # 1. One draw of seed positions per BC configuration (resampled within its cross-fitting halves).
    draws = {h: _draws(n, n_resamples, rng, halves=True) for h, n in zip(fc["bc_hash"], fc["n_seeds"], strict=True)}
    samples = [s[draws[h]] for h, s in zip(fc["bc_hash"], fc["scores"], strict=True)]
    # 2. Each BC+RL point past its start: its seeds' IQM, resampled with its BC configuration's draw where the
    #    seeds match (which keeps each seed's BC start paired with its RL result).
    groups = list(targets.groupby(["cell", "rl_steps"], sort=False))
    gained = {i: k for k, i in enumerate(i for i, ((_, rl_steps), _) in enumerate(groups) if rl_steps > 0)}
    p = np.zeros((len(gained), n_resamples + 1))
    for i, k in gained.items():
        g = groups[i][1].sort_values("seed")
        scores, h = g[metric].to_numpy(dtype=np.float64), g["bc_hash"].iloc[0]
        shared = h in draws and np.array_equal(g["seed"].to_numpy(), fc.loc[fc["bc_hash"] == h, "seeds"].iloc[0])
        p[k] = iqm(scores[draws[h] if shared else _draws(len(scores), n_resamples, rng, halves=False)])
    # 3. Per axis: map every point through the fitted frontier and through each resample's refit.
    equivalents = {axis: _equivalents(fc[col].to_numpy(), samples, p) for axis, col in AXES.items()}
    rows = []
    for i, ((cell, rl_steps), g) in enumerate(groups):
        first = g.iloc[0]
        bc, rl = g["compute/bc/flops"].mean(), g["compute/rl/flops"].mean()
        trans = g["compute/bc/demo_transitions"].mean()
        row = {"env": first["env"], "frontier": first["frontier"], "label": first["label"], "cell": cell,
               "rl_steps": rl_steps, "start": rl_steps == 0, "n_seeds": len(g), "score": float(iqm(g[metric])),
               "bc_flops": bc, "rl_flops": rl, "total_flops": bc + rl, "demo_transitions": trans}
        if rl_steps == 0:
            rows.append(row | _START)
            continue
        (flops, flops_censor), (trans_eq, trans_censor) = ((eq[gained[i]], censor[gained[i]])
                                                            for eq, censor in equivalents.values())
        row |= {"flops_eq": flops[0], "transitions_eq": trans_eq[0]}
        row |= _gain("ceg", flops, bc, confidence) | _gain("ceg_charged", flops, bc + rl, confidence)
        row |= _censoring("ceg", flops_censor, confidence)
        row |= _gain("deg", trans_eq, trans, confidence) | _censoring("deg", trans_censor, confidence)
        rows.append(row)
    return rows


# A BC snapshot's CEG row: its gain over itself is not a result.
_START = {f"{name}{end}": np.nan for name in ("ceg", "ceg_charged", "deg") for end in ("", "_ci_low", "_ci_high")}
_START |= {"flops_eq": np.nan, "transitions_eq": np.nan, "ceg_censor": 0, "deg_censor": 0}
_START |= {f"{name}_ci_{end}_censored": False for name in ("ceg", "deg") for end in ("low", "high")}


def _equivalents(cost: np.ndarray, samples: list[np.ndarray], p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eq, censor), each (points, 1 + resamples): the points `p` mapped through the fit (column 0) and its refits.

    `samples` are the configurations' (1 + resamples, seeds) scores, `p` the points' (points, 1 + resamples).
    """
    levels, value, weight = _cross_fitted(cost, samples)
    return _inverse(np.log10(levels), _isotonic(value, weight), value, p)


def _gain(name: str, eq: np.ndarray, cost: float, confidence: float) -> dict[str, Any]:
    """`name` = equivalent / cost (`eq[0]`: the data), with the percentile CI of its resamples `eq[1:]`."""
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(eq[1:] / cost, [alpha, 1.0 - alpha])
    return {name: eq[0] / cost, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _censoring(name: str, censor: np.ndarray, confidence: float) -> dict[str, Any]:
    """The point's censoring, and whether a CI end is a bound (over (1 - confidence) / 2 resamples censored)."""
    alpha = (1.0 - confidence) / 2
    return {f"{name}_censor": int(censor[0]), f"{name}_ci_low_censored": bool(np.mean(censor[1:] < 0) > alpha),
            f"{name}_ci_high_censored": bool(np.mean(censor[1:] > 0) > alpha)}


# -------------------------------------------------------------------------------------------- comparisons


def matched_compute_table(points: pd.DataFrame, capability: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """At equal total FLOPs: each BC+RL point against the best BC-only policy of each demonstration count.

    For a BC+RL point that cost C_BC + C_RL, the BC side is, per demonstration count, the BC configuration
    with the highest IQM among those whose BC FLOPs do not exceed C_BC + C_RL. `prob_improvement` is
    P(BC+RL > BC) over seeds (ties half), with its bootstrap CI.
    """
    pts = cell_points(points)
    fcells = frontier_cells(pts, metric)
    rows = []
    for _, t in capability[(capability["kind"] == "bc_rl") & (capability["rl_steps"] > 0)].iterrows():
        rl_scores = _scores(pts, t["cell"], t["rl_steps"], metric)
        pool = fcells[(fcells["frontier"] == t["frontier"]) & (fcells["bc_flops"] <= t["total_flops"] * (1 + 1e-9))]
        for demos, g in pool.groupby("demos"):
            bc = g.loc[g["score_iqm"].idxmax()]
            poi = probability_of_improvement(rl_scores, bc["scores"])
            rows.append({
                "env": t["env"], "label": t["label"], "rl_steps": t["rl_steps"], "total_flops": t["total_flops"],
                "score": t["iqm"], "score_ci_low": t["iqm_ci_low"], "score_ci_high": t["iqm_ci_high"],
                "bc_demos": demos, "bc_grad_steps": bc["grad_steps"], "bc_flops": bc["bc_flops"],
                "bc_label": bc["label"], "bc_score": bc["score_iqm"], "difference": t["iqm"] - bc["score_iqm"],
                "prob_improvement": poi["prob"], "prob_ci_low": poi["ci_low"], "prob_ci_high": poi["ci_high"],
            })
    return pd.DataFrame(rows)


def _scores(pts: pd.DataFrame, cell: str, rl_steps: int, metric: str) -> np.ndarray:
    return pts.loc[(pts["cell"] == cell) & (pts["rl_steps"] == rl_steps), metric].to_numpy(dtype=np.float64)


def scratch_table(capability: pd.DataFrame) -> pd.DataFrame:
    """RL from scratch: the first budget whose IQM reaches each BC and BC+RL point of the same env.

    The budgets are the scratch runs' checkpoints, so the need lies in (previous budget, budget]; a target
    that no checkpoint reaches is "not reached within" the largest scratch budget.
    """
    rows = []
    for env, cap in capability.groupby("env", sort=False):
        scratch = cap[cap["kind"] == "scratch"]
        for _, t in cap[cap["kind"] == "bc_rl"].iterrows():
            for label, s in scratch.groupby("label", sort=False):
                s = s.sort_values("rl_steps")
                hit = s[s["iqm"] >= t["iqm"]]
                reached = not hit.empty
                first = hit.iloc[0] if reached else s.iloc[-1]
                before = s[s["rl_steps"] < first["rl_steps"]]["rl_steps"]
                rows.append({
                    "env": env, "label": t["label"], "rl_steps": t["rl_steps"], "score": t["iqm"],
                    "total_flops": t["total_flops"], "scratch_label": label, "reached": reached,
                    "scratch_steps": first["rl_steps"] if reached else np.nan,
                    "scratch_steps_after": before.max() if reached and not before.empty else 0,
                    "scratch_max_steps": s["rl_steps"].max(), "scratch_best_score": s["iqm"].max(),
                    "scratch_flops": first["total_flops"] if reached else np.nan,
                    "flops_ratio": first["total_flops"] / t["total_flops"] if reached else np.nan,
                })
    return pd.DataFrame(rows)


DRIFT_SUMMARY = {  # trade-off column -> checkpoint column(s) averaged over layers
    "actor_rel_change": "drift/weights/actor/rel_change",
    "all_rel_change": "drift/weights/all/rel_change",
    "cka_demo": "drift/cka/demo/",
    "cka_visited": "drift/cka/visited/",
    "kl_demo": "drift/kl/demo",
    "agreement_demo": "drift/agreement/demo",
}


def tradeoff_table(points: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per BC+RL cell and budget: capability gain over its own BC snapshot (per seed, IQM with CI) and drift.

    Drift columns are IQMs over seeds; `cka_*` first average the hidden layers; `expert_loglik_change` is the
    forgetting probe (log-likelihood of the expert's actions, now minus at the BC snapshot).
    """
    pts = cell_points(points)
    pts = pts[pts["cell"].map(kinds(pts)).eq("bc_rl")]
    rows = []
    for cell, g in pts.groupby("cell", sort=False):
        start = g[g["rl_steps"] == 0].set_index("seed")[metric]
        for rl_steps, b in g[g["rl_steps"] > 0].groupby("rl_steps"):
            b = b.set_index("seed")
            gain = (b[metric] - start.reindex(b.index)).dropna().to_numpy()
            row = {"env": b["env"].iloc[0], "label": b["label"].iloc[0], "cell": cell, "rl_steps": rl_steps,
                   "n_seeds": len(b)}
            if len(gain):
                agg = aggregate(gain)
                row |= {"gain": agg["iqm"], "gain_ci_low": agg["iqm_ci_low"], "gain_ci_high": agg["iqm_ci_high"]}
            for name, key in DRIFT_SUMMARY.items():
                cols = [c for c in b.columns if c == key or (key.endswith("/") and c.startswith(key))]
                values = b[cols].mean(axis=1).dropna().to_numpy() if cols else np.array([])
                row[name] = float(iqm(values)) if len(values) else np.nan
            if {"drift/expert_loglik", "drift/expert_loglik_bc"} <= set(b.columns):
                row["expert_loglik_change"] = float(iqm((b["drift/expert_loglik"] - b["drift/expert_loglik_bc"])
                                                        .dropna().to_numpy()))
            rows.append(row)
    return pd.DataFrame(rows)


def layer_table(layers: pd.DataFrame) -> pd.DataFrame:
    """Per cell, budget and layer: the IQM over seeds of every drift_table column."""
    if layers.empty:
        return layers
    layers = layers.drop_duplicates(["cell", "seed", "rl_steps", "layer"])
    numeric = [c for c in layers.columns if c not in ("env", "seed", "cell", "label", "rl_init", "rl_steps", "layer")]
    keys = ["env", "label", "cell", "rl_init", "rl_steps", "layer"]
    out = layers.groupby(keys, sort=False)[numeric].agg(
        lambda s: float(iqm(s.dropna().to_numpy())) if s.notna().any() else np.nan)
    return out.reset_index()


# ----------------------------------------------------------------------------------------------- all of it


@dataclass(frozen=True)
class Analysis:
    """Every table of a report; the frontiers keyed by (frontier group, axis)."""

    sweep: Sweep
    metric: str
    capability: pd.DataFrame
    frontier_cells: pd.DataFrame
    frontiers: dict[tuple[str, str], Frontier]
    ceg: pd.DataFrame
    matched: pd.DataFrame
    scratch: pd.DataFrame
    tradeoff: pd.DataFrame
    layers: pd.DataFrame
    n_resamples: int = N_RESAMPLES  # bootstrap resamples behind the gains' CIs


def analyse(sweep: Sweep, metric: str = METRIC, n_resamples: int = N_RESAMPLES) -> Analysis:
    """Every table the report shows, from a loaded sweep."""
    pts = sweep.points
    if pts.empty:
        empty = pd.DataFrame()
        return Analysis(sweep, metric, empty, empty, {}, empty, empty, empty, empty, empty, n_resamples)
    capability = capability_table(pts, metric)
    fcells = frontier_cells(cell_points(pts), metric)
    return Analysis(
        sweep=sweep, metric=metric, capability=capability, frontier_cells=fcells,
        frontiers=fit_frontiers(fcells), ceg=ceg_table(pts, metric, n_resamples),
        matched=matched_compute_table(pts, capability, metric), scratch=scratch_table(capability),
        tradeoff=tradeoff_table(pts, metric), layers=layer_table(sweep.layers), n_resamples=n_resamples,
    )
