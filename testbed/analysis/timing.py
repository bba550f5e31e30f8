"""A sweep folder -> where its wall time went: core-seconds per stage summed over its jobs, the time outside jobs
and the parallel efficiency, busy core-seconds / (wall x cores); printed, and written to <sweep>/timing.json.

`python -m testbed.analysis.timing <sweep folder> [--wall SECONDS] [--cores N]`

What each number is (all are wall times; anything else running on the machine slows the jobs and so inflates
their stages, not the waiting):

1. A job runs from its start to its end. Start: the mtime of `.hydra/config.yaml`, which Hydra writes in the
   job's worker just before the task (so Hydra's job setup and the validation before `started_at` count as the
   job's); end: the mtime of results.json, last rewritten by `complete()` or `fail()`. Both have ns resolution.
   Where they disagree with results.json's `started_at` / `finished_at` (ISO strings, 1 s resolution: a copied
   folder), those stamps are used instead: +-1 s per job, and the setup before `started_at` counts as waiting.
   A job still running counts up to its last results.json write.
2. Inside a job, from results.json: expert, demonstrations, BC and voting are their `timings`; PPO is the last
   checkpoint's `compute/rl/wall_s` (critic warm-up included), evaluation and drift the sums of the checkpoints'
   `eval/wall_s` (BC checkpoints' included) and `drift/wall_s`, the BC control the sum of `control/wall_s`, the
   memory probes the sum of `memory/wall_s` (BC checkpoints' included). The
   rest of `timings.rl_total_s` is RL bookkeeping: the checkpoint rows, rewriting results.json after each,
   tracking them, saving final_model.zip.
   The rest of the job's time is job setup and the rest: Hydra's job setup, validation, claiming results.json,
   building the env and the PPO model, saving bc_policy.pt, the tracker's start and finish.
   `timings.tracking_s` is spread over both (not a row of its own, so that the rows sum to the busy time).
3. Busy: the sum of the jobs' times. Outside the jobs, in core-seconds: the sweep start (the sweeper composes
   every job's config, before launching any; all cores count, since the jobs wait for it), measured only with
   `--wall` on a finished sweep (its start is then sweep.json's last write minus the wall; the multirun.yaml
   write marks the launch); the worker start (from the launch to each core's first job: the worker processes
   start and import torch; joblib's workers are reused, so later jobs start in-process); between jobs (a job's
   end to the next one's start on its core: the job returns, joblib dispatches the next, Hydra composes its
   config in the worker); and the rest, waiting: idle cores after their last job (the sweep's tail), its end.
4. Wall: `--wall` (the Makefile's measured seconds of the sweep command), else from the launch (or the first
   job's start) to the last job's end. Cores: `--cores`, else the launcher's `n_jobs` (negative as in joblib:
   this machine's cores + 1 + n_jobs), else this machine's cores.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from testbed.cache import CacheError, atomic_write_json, read_json
from testbed.results import RESULTS_FILE
from testbed.sweep import MANIFEST

TIMING_FILE = "timing.json"
TARGET_EFFICIENCY = 0.85
STAMP_S = 1.0  # resolution of results.json's started_at / finished_at
# Core-seconds inside jobs (their sum is the busy time), then outside them (all together: wall x cores).
IN_JOBS = {
    "expert": "expert (train or load, references)",
    "demos": "demonstrations (collect or load)",
    "bc": "BC",
    "voting": "voting",
    "ppo": "PPO (compute/rl/wall_s)",
    "evaluation": "evaluation (eval/wall_s)",
    "drift": "drift (drift/wall_s)",
    "control": "BC control (control/wall_s)",
    "memory": "memory probes (memory/wall_s)",
    "rl_bookkeeping": "RL bookkeeping: rows, results.json, final save",
    "job_rest": "job setup and the rest",
}
OUTSIDE_JOBS = {
    "sweep_start": "sweep start: composing the jobs",
    "worker_start": "worker start: launch to first jobs",
    "between_jobs": "between jobs: exit, dispatch, next's setup",
    "waiting": "waiting: idle cores after their last job, end",
}
_TIMED_STAGES = {"expert": "expert_s", "demos": "demos_s", "bc": "bc_s", "voting": "voting_s"}


class NoJobsRan(ValueError):
    """The sweep folder holds no job that ran (a resumed sweep that skipped all, or one that failed to start)."""


@dataclass(frozen=True)
class JobTime:
    """One job of the sweep folder: when it ran and its seconds per IN_JOBS category."""

    run_name: str
    status: str  # results.json's: complete, failed, interrupted, running
    start: float  # epoch seconds
    end: float  # epoch seconds; a running job's last results.json write
    precise: bool  # start and end from file times (ns), not from the 1 s stamps
    stages: dict[str, float]  # IN_JOBS key -> seconds; they sum to end - start
    tracking_s: float  # timings.tracking_s, inside the stages


@dataclass(frozen=True)
class Timing:
    """Where a sweep's wall x cores went."""

    sweep: Path
    wall_s: float
    wall_source: str
    cores: int
    cores_source: str
    core_s: dict[str, float]  # IN_JOBS and OUTSIDE_JOBS key -> core-seconds; they sum to wall x cores
    jobs_here: dict[str, int]  # the jobs run in this folder by results.json status, and "unreadable"
    jobs_listed: dict[str, int]  # sweep.json's jobs by status ("skipped": complete in an earlier sweep); {} if none
    notes: list[str] = field(default_factory=list)

    @property
    def capacity(self) -> float:
        return self.wall_s * self.cores

    @property
    def busy(self) -> float:
        return sum(self.core_s[k] for k in IN_JOBS)

    @property
    def efficiency(self) -> float:
        return self.busy / self.capacity

    def as_dict(self) -> dict[str, Any]:
        labels = IN_JOBS | OUTSIDE_JOBS
        return {
            "sweep": str(self.sweep),
            "wall_s": self.wall_s,
            "wall_source": self.wall_source,
            "cores": self.cores,
            "cores_source": self.cores_source,
            "capacity_core_s": self.capacity,
            "busy_core_s": self.busy,
            "efficiency": self.efficiency,
            "target_efficiency": TARGET_EFFICIENCY,
            "core_s": {
                k: {"label": labels[k], "core_s": v, "share": v / self.capacity} for k, v in self.core_s.items()
            },
            "jobs_here": self.jobs_here,
            "jobs_listed": self.jobs_listed,
            "notes": self.notes,
        }


def sweep_timing(folder: str | Path, wall_s: float | None = None, cores: int | None = None) -> Timing:
    """Where the wall x cores of the sweep in `folder` went (see the module doc); `wall_s` and `cores` as measured
    or known, else estimated from the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such sweep folder: {folder}")
    if wall_s is not None and wall_s <= 0:
        raise ValueError(f"the wall time must be > 0 s, got {wall_s}")
    jobs, unreadable = read_jobs(folder)
    if not jobs:
        raise NoJobsRan(f"no job ran in {folder}: no readable <job>/{RESULTS_FILE} (all skipped, or none started)")
    launch = _launch_time(folder, jobs)
    n_cores, cores_source = (cores, "--cores") if cores else launcher_cores(folder)
    core_s = {k: sum(j.stages.get(k, 0.0) for j in jobs) for k in IN_JOBS}
    core_s |= outside_jobs(folder, jobs, launch, wall_s, n_cores)
    if wall_s is None:
        wall_s = max(j.end for j in jobs) - (min(j.start for j in jobs) if launch is None else launch)
        wall_source = f"from the {'first job' if launch is None else 'launch'} to the last job's end"
    else:
        wall_source = "measured (--wall)"
    core_s["waiting"] = wall_s * n_cores - sum(core_s.values())
    here = dict(sorted(Counter(j.status for j in jobs).items())) | {"unreadable": unreadable}
    timing = Timing(folder, wall_s, wall_source, n_cores, cores_source, core_s, here, _listed_jobs(folder))
    timing.notes.extend(_notes(timing, jobs, launch))
    return timing


def read_jobs(folder: Path) -> tuple[list[JobTime], int]:
    """The jobs run in `folder` (<sweep>/<job>/results.json), and how many results.json could not be read."""
    jobs, unreadable = [], 0
    for path in sorted(folder.glob(f"*/{RESULTS_FILE}")):
        try:
            job = job_time(path.parent)
        except (OSError, ValueError, CacheError, KeyError, TypeError):
            job = None
        if job is None:
            unreadable += 1
        else:
            jobs.append(job)
    return jobs, unreadable


def job_time(folder: Path) -> JobTime | None:
    """One job's times (module doc, 1 and 2); None when it has no end to count to."""
    path = folder / RESULTS_FILE
    data = read_json(path)
    span = job_span(data, _written(path), _mtime(folder / ".hydra" / "config.yaml"))
    if span is None:
        return None
    start, end, precise = span
    stages = stage_seconds(data)
    stages["job_rest"] = (end - start) - sum(stages.values())
    tracking = float((data.get("timings") or {}).get("tracking_s", 0.0))
    return JobTime(data["run_name"], data["status"], start, end, precise, stages, tracking)


def job_span(
    data: dict[str, Any], results_mtime: float, config_mtime: float | None
) -> tuple[float, float, bool] | None:
    """(start, end, precise) in epoch seconds: the files' mtimes where they fit the 1 s stamps, else the stamps.

    A finished job's results.json was last written within STAMP_S after `finished_at`; Hydra writes the job's
    .hydra/config.yaml before the task starts, so no later than STAMP_S after `started_at`. A running job ends at
    its last write (None when that is before its start: a copied folder).
    """
    started = _epoch(data["started_at"])
    start_ok = config_mtime is not None and config_mtime <= started + STAMP_S
    start = config_mtime if start_ok and config_mtime is not None else started
    if data.get("finished_at") is None:
        return (start, results_mtime, start_ok) if results_mtime >= start else None
    finished = _epoch(data["finished_at"])
    if start_ok and finished <= results_mtime < finished + STAMP_S:
        return start, results_mtime, True
    return started, finished, False  # both from stamps: their floors' difference is the unbiased duration


def stage_seconds(data: dict[str, Any]) -> dict[str, float]:
    """Seconds per in-job stage from results.json (module doc, 2), without the job's rest."""
    timings = data.get("timings") or {}
    rows = data.get("checkpoints") or []
    stages = {k: float(timings[key]) for k, key in _TIMED_STAGES.items() if key in timings}
    stages["ppo"] = float(rows[-1].get("compute/rl/wall_s", 0.0)) if rows else 0.0
    rl_evaluation = sum(float(r.get("eval/wall_s", 0.0)) for r in rows)
    bc_rows = (data.get("bc") or {}).get("checkpoints") or []  # bc.checkpoints: evaluated during BC
    stages["evaluation"] = rl_evaluation + sum(float(r.get("eval/wall_s", 0.0)) for r in bc_rows)
    stages["drift"] = sum(float(r.get("drift/wall_s", 0.0)) for r in rows)
    stages["control"] = sum(float(r.get("control/wall_s", 0.0)) for r in rows)  # eval.bc_control
    rl_memory = sum(float(r.get("memory/wall_s", 0.0)) for r in rows)  # eval.memory_probe
    stages["memory"] = rl_memory + sum(float(r.get("memory/wall_s", 0.0)) for r in bc_rows)
    if "rl_total_s" in timings:  # a running job's RL rest stays in the job's rest
        in_rl = stages["ppo"] + rl_evaluation + stages["drift"] + stages["control"] + rl_memory
        stages["rl_bookkeeping"] = float(timings["rl_total_s"]) - in_rl
    return stages


def outside_jobs(
    folder: Path, jobs: Sequence[JobTime], launch: float | None, measured_wall: float | None, cores: int
) -> dict[str, float]:
    """Core-seconds of the sweep start, the worker start and between jobs (module doc, 3); 0 where not measurable.

    Between jobs: each job after a core's first starts when the job before it on that core has ended (plus the
    gap); which job ran on which core is not recorded, but every end except each core's last (the latest
    `cores` ends) is followed by a start, so the gaps sum to the later starts minus those ends.
    """
    starts, ends = sorted(j.start for j in jobs), sorted(j.end for j in jobs)
    between = sum(starts[cores:]) - sum(ends[:-cores]) if len(jobs) > cores else 0.0
    out = {"sweep_start": 0.0, "worker_start": 0.0, "between_jobs": between}
    if launch is None:
        return out
    out["worker_start"] = sum(s - launch for s in starts[:cores])
    end = _sweep_end(folder, jobs)
    if measured_wall is not None and end is not None and launch >= end - measured_wall:
        out["sweep_start"] = (launch - (end - measured_wall)) * cores
    return out


def launcher_cores(folder: Path) -> tuple[int, str]:
    """The sweep's parallel jobs: the launcher's n_jobs in multirun.yaml, else this machine's cores."""
    machine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    path = folder / "multirun.yaml"
    n_jobs = OmegaConf.select(OmegaConf.load(path), "hydra.launcher.n_jobs") if path.is_file() else None
    if isinstance(n_jobs, int) and n_jobs > 0:
        return n_jobs, f"launcher n_jobs={n_jobs}"
    if isinstance(n_jobs, int) and n_jobs < 0:
        return max(machine + 1 + n_jobs, 1), f"launcher n_jobs={n_jobs}, this machine's {machine} cores"
    return machine, "this machine's cores (no launcher n_jobs)"


def _launch_time(folder: Path, jobs: Sequence[JobTime]) -> float | None:
    """When the sweeper launched the jobs: multirun.yaml's write (None if missing or after the first job)."""
    launch = _mtime(folder / "multirun.yaml")
    return launch if launch is not None and launch <= min(j.start for j in jobs) else None


def _sweep_end(folder: Path, jobs: Sequence[JobTime]) -> float | None:
    """sweep.json's last write, when the sweep has finished: after every job, none of them running."""
    end = _mtime(folder / MANIFEST)
    finished = all(j.status != "running" for j in jobs)
    return end if end is not None and finished and end >= max(j.end for j in jobs) else None


def _listed_jobs(folder: Path) -> dict[str, int]:
    """sweep.json's jobs by status; {} without one."""
    manifest = folder / MANIFEST
    listed = read_json(manifest).get("jobs", []) if manifest.is_file() else []
    return dict(sorted(Counter(str(j.get("status")) for j in listed).items()))


def _notes(timing: Timing, jobs: Sequence[JobTime], launch: float | None) -> list[str]:
    notes = []
    if running := sum(j.status == "running" for j in jobs):
        notes.append(f"{running} job(s) still running, counted up to their last results.json write")
    if stamped := sum(not j.precise for j in jobs):
        notes.append(
            f"{stamped} job(s) timed from started_at/finished_at (1 s stamps; file times missing or not fitting "
            "them): +-1 s each, their setup before started_at counted as waiting"
        )
    if timing.wall_s < (span := max(j.end for j in jobs) - min(j.start for j in jobs)):
        notes.append(f"the wall is shorter than the jobs' own span ({span:.1f} s): is it this sweep's?")
    if launch is None:
        notes.append("no launch time (multirun.yaml missing or written after a job started): worker start in waiting")
    if timing.core_s["sweep_start"] == 0.0:
        notes.append("sweep start not measured (needs --wall and a finished sweep): in waiting")
    if tracking := sum(j.tracking_s for j in jobs):
        notes.append(f"tracking (wandb) {tracking:.1f} core-s, inside RL bookkeeping and job setup")
    return notes


def format_timing(timing: Timing) -> str:
    """The breakdown as a short text table: core-seconds and share of wall x cores, then the efficiency."""
    here = ", ".join(f"{n} {status}" for status, n in timing.jobs_here.items() if n)
    listed = ", ".join(f"{n} {status}" for status, n in timing.jobs_listed.items())
    lines = [
        f"timing of {timing.sweep}: jobs run here: {here}"
        + (f"; sweep.json: {sum(timing.jobs_listed.values())} jobs ({listed})" if listed else ""),
        f"wall {timing.wall_s:.1f} s ({timing.wall_source}) x {timing.cores} cores ({timing.cores_source})",
        f"{'':<48} {'core-s':>9} {'share':>6}",
    ]
    row = "{:<48} {:>9.1f} {:>6.1%}"
    lines.append(row.format("busy (in jobs)", timing.busy, timing.busy / timing.capacity))
    for keys in (IN_JOBS, OUTSIDE_JOBS):  # a stage no job ran (voting, BC of RL from scratch) is left out
        shown = [k for k in keys if keys is OUTSIDE_JOBS or timing.core_s[k] != 0.0]
        lines += [row.format(f"  {keys[k]}", timing.core_s[k], timing.core_s[k] / timing.capacity) for k in shown]
    lines.append(row.format("wall x cores", timing.capacity, 1.0))
    ok = "meets" if timing.efficiency >= TARGET_EFFICIENCY else "below"
    lines.append(
        f"parallel efficiency {timing.efficiency:.3f} = busy / (wall x cores) ({ok} the target {TARGET_EFFICIENCY})"
    )
    return "\n".join(lines + [f"note: {n}" for n in timing.notes])


def _written(path: Path) -> float:
    """Epoch seconds of the file's last write (from ns, correctly rounded, unlike st_mtime)."""
    return path.stat().st_mtime_ns / 10**9


def _mtime(path: Path) -> float | None:
    return _written(path) if path.is_file() else None


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbed.analysis.timing", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", type=Path, help="the sweep folder (multirun/<...>/<sweep>/)")
    parser.add_argument("--wall", type=float, help="the sweep's measured wall seconds (default: from its files)")
    parser.add_argument("--cores", type=int, help="cores the sweep ran on (default: the launcher's n_jobs)")
    args = parser.parse_args(argv)
    try:
        timing = sweep_timing(args.sweep, wall_s=args.wall, cores=args.cores)
    except NoJobsRan as exc:  # e.g. a resumed sweep whose jobs were all complete earlier: nothing to time
        print(f"timing: {exc}")
        return
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"timing: {exc}\n")
    print(format_timing(timing))
    atomic_write_json(args.sweep / TIMING_FILE, timing.as_dict())
    print(f"written: {args.sweep / TIMING_FILE}")


if __name__ == "__main__":
    main()
