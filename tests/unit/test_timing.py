"""Sweep timing on a synthetic sweep folder whose answers are known: the breakdown, its sum and the efficiency.

Every time is a whole or dyadic number of seconds from T0, so the sums and the efficiency are exact in floats.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from testbed.analysis import timing
from testbed.analysis.timing import IN_JOBS, OUTSIDE_JOBS, NoJobsRan, stage_seconds, sweep_timing

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, whole seconds: the 1 s stamps are exact
WALL = 100.0  # the measured wall: the sweep process ran from T0 - 1 to T0 + 99, sweep.json's last write


def at(path: Path, offset: float) -> None:
    """Set `path`'s mtime to T0 + offset, exactly (offsets are dyadic)."""
    ns = T0 * 10**9 + round(offset * 10**9)
    os.utime(path, ns=(ns, ns))


def stamp(offset: float) -> str:
    """results.json's 1 s stamp of T0 + offset (truncated, as datetime.isoformat(timespec="seconds") does)."""
    return datetime.fromtimestamp(T0 + offset, UTC).isoformat(timespec="seconds")


def checkpoint(ppo: float, evaluation: float, drift: float | None) -> dict[str, Any]:
    row = {"rl_steps": 0, "compute/rl/wall_s": ppo, "eval/wall_s": evaluation}
    return row | ({} if drift is None else {"drift/wall_s": drift})


def write_job(
    sweep: Path,
    name: str,
    *,
    config_at: float,
    started: float,
    written: float,
    finished: float | None,
    timings: dict[str, float],
    checkpoints: list[dict[str, Any]],
) -> None:
    """A job folder: .hydra/config.yaml written at `config_at`, results.json last written at `written`."""
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    data = {
        "status": "running" if finished is None else "complete",
        "run_name": name,
        "started_at": stamp(started),
        "finished_at": None if finished is None else stamp(finished),
        "checkpoints": checkpoints,
        "timings": timings,
    }
    (folder / "results.json").write_text(json.dumps(data))
    at(folder / ".hydra" / "config.yaml", config_at)
    at(folder / "results.json", written)


# Per job: (config.yaml, started_at, results.json written, finished_at); stages in seconds.
# a: 12.0 -> 60.5 = 48.5 s: expert 2, demos 1, BC 5, PPO 16, evaluation 8.5, drift 0.5, bookkeeping 30 - 25 = 5,
#    rest 48.5 - 38 = 10.5
# b (from scratch, no drift): 14.0 -> 90.25 = 76.25 s: expert 1, demos 0.5, PPO 60, evaluation 6, bookkeeping
#    70 - 66 = 4, rest 76.25 - 71.5 = 4.75
# c (voting): 61.0 -> 95.0 = 34 s: expert 1, demos 1, BC 4, voting 2, PPO 12, evaluation 4, drift 1,
#    bookkeeping 20 - 17 = 3, rest 34 - 28 = 6
JOBS: dict[str, dict[str, Any]] = {
    "0_bc_s0": {
        "config_at": 12.0,
        "started": 13.0,
        "written": 60.5,
        "finished": 60.0,
        "timings": {"expert_s": 2.0, "demos_s": 1.0, "bc_s": 5.0, "rl_total_s": 30.0, "tracking_s": 0.25},
        "checkpoints": [checkpoint(0.0, 4.0, 0.25), checkpoint(16.0, 4.5, 0.25)],
    },
    "1_scratch_s0": {
        "config_at": 14.0,
        "started": 14.0,
        "written": 90.25,
        "finished": 90.0,
        "timings": {"expert_s": 1.0, "demos_s": 0.5, "rl_total_s": 70.0},
        "checkpoints": [checkpoint(0.0, 3.0, None), checkpoint(60.0, 3.0, None)],
    },
    "2_bc_s1": {
        "config_at": 61.0,
        "started": 61.0,
        "written": 95.0,
        "finished": 95.0,
        "timings": {"expert_s": 1.0, "demos_s": 1.0, "bc_s": 4.0, "voting_s": 2.0, "rl_total_s": 20.0},
        "checkpoints": [checkpoint(0.0, 2.0, 0.5), checkpoint(12.0, 2.0, 0.5)],
    },
}
IN_JOB_CORE_S = {
    "expert": 4.0,
    "demos": 2.5,
    "bc": 9.0,
    "voting": 2.0,
    "ppo": 88.0,
    "evaluation": 18.5,
    "drift": 1.5,
    "control": 0.0,  # no job ran the BC control
    "memory": 0.0,  # nor the memory probes
    "rl_bookkeeping": 12.0,
    "job_rest": 21.25,
}
BUSY = 48.5 + 76.25 + 34.0
LAUNCH = 10.0  # multirun.yaml's write: the sweeper launches the jobs


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Three jobs run here on 2 cores, one more skipped (complete in an earlier sweep), the sweep finished."""
    folder = tmp_path / "multirun" / "synth" / "sweep"
    folder.mkdir(parents=True)
    for name, job in JOBS.items():
        write_job(folder, name, **job)
    (folder / "multirun.yaml").write_text("hydra:\n  launcher:\n    n_jobs: 2\n")
    statuses = ["complete", "complete", "complete", "skipped"]
    (folder / "sweep.json").write_text(json.dumps({"jobs": [{"status": s} for s in statuses]}))
    at(folder / "multirun.yaml", LAUNCH)
    at(folder / "sweep.json", 99.0)
    return folder


def test_the_breakdown_sums_to_wall_x_cores_and_gives_the_efficiency(sweep: Path) -> None:
    t = sweep_timing(sweep, wall_s=WALL)
    assert (t.wall_s, t.cores, t.cores_source) == (WALL, 2, "launcher n_jobs=2")
    assert {k: t.core_s[k] for k in IN_JOBS} == IN_JOB_CORE_S
    assert t.busy == sum(IN_JOB_CORE_S.values()) == BUSY
    # The sweep started at 99 - 100 = -1 and launched at 10: 11 s x 2 cores. Workers: 12 - 10 and 14 - 10.
    assert t.core_s["sweep_start"] == 22.0
    assert t.core_s["worker_start"] == 6.0
    assert t.core_s["between_jobs"] == 61.0 - 60.5  # c started on the core a freed
    assert t.core_s["waiting"] == 200.0 - BUSY - 22.0 - 6.0 - 0.5
    assert sum(t.core_s.values()) == t.capacity == 200.0
    assert list(t.core_s) == [*IN_JOBS, *OUTSIDE_JOBS]
    assert t.efficiency == BUSY / 200.0
    assert t.jobs_here == {"complete": 3, "unreadable": 0}
    assert t.jobs_listed == {"complete": 3, "skipped": 1}


def test_without_a_measured_wall_it_runs_from_the_launch_to_the_last_end(sweep: Path) -> None:
    t = sweep_timing(sweep, cores=4)
    assert (t.wall_s, t.cores, t.cores_source) == (95.0 - LAUNCH, 4, "--cores")
    assert t.core_s["sweep_start"] == 0.0  # not measurable without the sweep's own wall
    assert t.core_s["worker_start"] == 2.0 + 4.0 + 51.0  # three first jobs for four cores
    assert t.core_s["between_jobs"] == 0.0
    assert t.efficiency == BUSY / (85.0 * 4)
    assert any("sweep start not measured" in n for n in t.notes)


def test_file_times_that_do_not_fit_the_stamps_fall_back_to_them(sweep: Path) -> None:
    """A copied job (file times of the copy) is timed from its 1 s stamps: 13 -> 60 instead of 12 -> 60.5."""
    at(sweep / "0_bc_s0" / "results.json", 500.0)
    t = sweep_timing(sweep, wall_s=WALL)
    assert t.core_s["job_rest"] == IN_JOB_CORE_S["job_rest"] - 1.5
    assert t.busy == BUSY - 1.5
    assert t.core_s["worker_start"] == 3.0 + 4.0  # its start is now started_at's 13
    assert t.core_s["between_jobs"] == 61.0 - 60.0  # its end is finished_at's 60
    assert any("1 job(s) timed from started_at" in n for n in t.notes)


def test_a_running_job_counts_to_its_last_write_and_the_sweep_start_is_not_guessed(sweep: Path) -> None:
    data = json.loads((sweep / "2_bc_s1" / "results.json").read_text())
    data.update(status="running", finished_at=None, checkpoints=data["checkpoints"][:1])
    del data["timings"]["rl_total_s"]
    (sweep / "2_bc_s1" / "results.json").write_text(json.dumps(data))
    # 61 -> 80: 19 s, of them expert 1, demos 1, BC 4, voting 2, evaluation 2, drift 0.5; the rest is its rest,
    # since without rl_total_s its RL bookkeeping so far cannot be told apart.
    at(sweep / "2_bc_s1" / "results.json", 80.0)
    t = sweep_timing(sweep, wall_s=WALL)
    assert t.core_s["rl_bookkeeping"] == 5.0 + 4.0
    assert t.core_s["job_rest"] == 10.5 + 4.75 + (19.0 - 10.5)
    assert t.busy == 48.5 + 76.25 + 19.0
    assert t.core_s["sweep_start"] == 0.0  # sweep.json's last write is not the end of a sweep still running
    assert t.jobs_here == {"complete": 2, "running": 1, "unreadable": 0}


@pytest.mark.parametrize(("n_jobs", "cores"), [("3", 3), ("-1", None), ("null", None)])
def test_cores_come_from_the_launcher(sweep: Path, n_jobs: str, cores: int | None) -> None:
    (sweep / "multirun.yaml").write_text(f"hydra:\n  launcher:\n    n_jobs: {n_jobs}\n")
    machine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert timing.launcher_cores(sweep)[0] == (cores or machine)


def test_the_cli_prints_the_table_and_writes_timing_json(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timing.main([str(sweep), "--wall", str(WALL)])
    out = capsys.readouterr().out
    assert f"parallel efficiency {BUSY / 200:.3f}" in out and "below the target 0.85" in out
    assert "sweep.json: 4 jobs (3 complete, 1 skipped)" in out
    written = json.loads((sweep / timing.TIMING_FILE).read_text())
    assert written["efficiency"] == BUSY / 200.0
    assert written["core_s"]["ppo"] == {"label": IN_JOBS["ppo"], "core_s": 88.0, "share": 0.44}


def test_a_sweep_that_ran_no_job_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NoJobsRan):
        sweep_timing(tmp_path)
    timing.main([str(tmp_path)])
    assert "no job ran" in capsys.readouterr().out
    assert not (tmp_path / timing.TIMING_FILE).exists()


def test_a_wall_shorter_than_the_jobs_is_flagged(sweep: Path) -> None:
    assert any("shorter than the jobs' own span (83.0 s)" in n for n in sweep_timing(sweep, wall_s=50.0).notes)
    assert not any("shorter" in n for n in sweep_timing(sweep, wall_s=WALL).notes)


def test_bc_checkpoint_evaluations_the_control_and_the_probes_are_not_rl_bookkeeping() -> None:
    data = {
        "timings": {"bc_s": 5.0, "rl_total_s": 30.0},
        "bc": {"checkpoints": [{"eval/wall_s": 1.5}, {"eval/wall_s": 2.0, "memory/wall_s": 0.5}]},
        "checkpoints": [
            {"compute/rl/wall_s": 0.0, "eval/wall_s": 4.0, "drift/wall_s": 0.25, "memory/wall_s": 1.0},
            {"compute/rl/wall_s": 16.0, "eval/wall_s": 4.5, "drift/wall_s": 0.25, "control/wall_s": 3.0},
        ],
    }
    stages = stage_seconds(data)
    assert stages["evaluation"] == 4.0 + 4.5 + 1.5 + 2.0 and stages["control"] == 3.0
    assert stages["memory"] == 1.0 + 0.5
    assert stages["rl_bookkeeping"] == 30.0 - 16.0 - 8.5 - 0.5 - 3.0 - 1.0
