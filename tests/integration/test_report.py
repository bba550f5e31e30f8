"""The report of a real fast multirun (BC+RL over two seeds plus a BC-only pair), built through the CLIs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.test_tracking import records_of, run_records, wandb_home  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def run_module(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`python -m <module> args` in a subprocess, as a user would run it; fails the test with its output."""
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONHASHSEED": "0"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """Two fast sweeps under one folder: BC then PPO to 512 steps (seeds 0, 1), and BC only at 50 and 200
    gradient steps. The second BC-only job's folder is then deleted, as if lost."""
    root = tmp_path_factory.mktemp("report")
    common = [
        "testbed.cli",
        "-m",
        "env=cartpole",
        "debug=fast",
        f"cache_dir={cache_dir}",
        "logger=none",
        "hydra.launcher.n_jobs=1",
    ]  # in-process jobs: two cores shared, no worker start-up
    run_module(*common, "seed=0,1", "rl.budgets=[0,512]", f"hydra.sweep.dir={root / 'sweeps' / 'rl'}")
    run_module(*common, "rl.budgets=[0]", "bc.grad_steps=50,200", f"hydra.sweep.dir={root / 'sweeps' / 'bc'}")
    lost = json.loads((root / "sweeps" / "bc" / "sweep.json").read_text())["jobs"][1]["results"]
    shutil.rmtree(Path(lost).parent)
    return root / "sweeps"


def test_report_builds_from_a_real_sweep(sweeps: Path) -> None:
    out = run_module("testbed.report", str(sweeps), "--resamples", "500").stdout  # wandb: on by default
    report = sweeps / "report"
    assert f"report: {report / 'index.html'}" in out

    # 1. Every figure: a valid, non-empty PNG, embedded in the page.
    figures = sorted(report.glob("*.png"))
    assert {f.stem for f in figures} >= {
        f"cartpole_{k}" for k in ("capability", "frontier", "ceg", "drift_layers", "cka_layers", "matched_compute")
    }
    page = (report / "index.html").read_text()
    for figure in figures:
        data = figure.read_bytes()
        assert data[:8] == PNG and len(data) > 1024, figure
    assert page.count("data:image/png;base64,") == len(figures)

    # 2. The tidy table: one row per job x checkpoint of the three jobs left; the lost one is listed.
    points = pd.read_csv(report / "tables" / "points.csv")
    assert len(points) == 2 * 2 + 1 and set(points["variant"]) == {"bc"}
    jobs = pd.read_csv(report / "tables" / "jobs.csv")
    (lost,) = jobs[~jobs["included"]].itertuples()
    assert lost.status == "missing" and "bc.grad_steps=200" in lost.problem and lost.problem in page
    assert "not in the analysis" in out

    # 3. The frontier has the two BC-only points and the BC+RL start; CEG rows for every BC+RL checkpoint.
    summary = json.loads((report / "summary.json").read_text())
    assert {row["rl_steps"] for row in summary["ceg"]} == {0, 512} and summary["headline"]
    (start,) = [row for row in summary["ceg"] if row["rl_steps"] == 0]
    assert start["start"] and start["ceg"] is None  # the BC start: a point of the frontier, not a gain
    assert "| start | start | start |" in (report / "report.md").read_text()
    frontier = pd.read_csv(report / "tables" / "frontier_cells.csv")
    assert sorted(frontier["grad_steps"]) == [50, 200]  # 200: the BC+RL jobs' own BC snapshots (2 seeds)
    assert frontier.set_index("grad_steps").loc[200, "n_seeds"] == 2  # demos.seed follows the seed: one cell

    # 4. Which demonstrations the seeds cloned: the default, each seed its own set.
    assert summary["demonstrations"]["cartpole"]["mode"] == "per_seed"
    assert "cartpole: demonstrations: each seed its own set (demos.seed = seed)" in page

    # 5. The same figures went to an offline wandb run of job type `report`.
    records = run_records(report)
    (run,) = records_of(records, "run")
    assert run["job_type"] == "report"
    logged = {key.split(".")[0] for history in records_of(records, "history") for key in history["item"]}
    assert {f"report/{f.stem}" for f in figures} <= logged
