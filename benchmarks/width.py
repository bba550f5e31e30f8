"""Wall time of one short job with a wide learner (width 1024, depth 2 and 4) against the default width 64, and the
stages that time goes to (BC, RL fine-tuning, evaluation plus drift).

Each job is the real command (`python -m testbed.cli env=<env> env.net_arch=[...] ...`) in its own process, with
small budgets (100 BC steps, one 4096-step PPO rollout, 5 evaluation episodes) so the warm-up and the three jobs
take about 3 minutes on 2 busy cores (at width 1024 and depth 4, BC costs about 0.3 s a step there). The baseline,
measured in the same run, is the width-64 job: the ratios are what the scale study pays per job for width. The
expert and demonstrations are the same for every width (the learner's architecture is apart from the expert's), so
an untimed warm-up job fills the configured cache (TESTBED_CACHE, else .cache/testbed) first and no timed job trains
or collects them. `python -m benchmarks.run width env=acrobot` picks another env; other overrides go to every job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENV = "pendulum"
JOB = ["logger=none", "progress=false", "bc.grad_steps=100", "rl.budgets=[0,4096]", "eval.episodes=5"]
ARCHS = {"w64": [64, 64], "w1024": [1024, 1024], "w1024_d4": [1024] * 4}
BASELINE = "w64"
WARM_UP = ["bc.grad_steps=1", "rl.budgets=[0]", "eval.episodes=1"]  # caches the expert and demonstrations only


def job_command(arch: list[int], out: Path, *overrides: str) -> list[str]:
    """The job this benchmark times for a learner of hidden widths `arch`, writing into `out`."""
    net_arch = f"env.net_arch=[{','.join(str(w) for w in arch)}]"
    return [sys.executable, "-m", "testbed.cli", f"env={ENV}", *JOB, net_arch, f"output_dir={out}", *overrides]


def timed_job(command: list[str], out: Path) -> dict[str, float]:
    """Run `command` from the repository root; its wall time and its stages' times from its results.json.

    Raises CalledProcessError, with the output's tail, when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = "".join((done.stdout + done.stderr).splitlines(keepends=True)[-20:])
        raise subprocess.CalledProcessError(done.returncode, command, output=tail)
    return {"wall_s": wall} | stage_times(json.loads((out / "results.json").read_text()))


def stage_times(results: dict[str, Any]) -> dict[str, float]:
    """BC, RL fine-tuning and evaluation plus drift seconds of a job's results.json."""
    rows = results["checkpoints"]
    return {
        "bc_s": rows[-1]["compute/bc/wall_s"],
        "rl_s": rows[-1]["compute/rl/wall_s"],
        "eval_drift_s": sum(r["eval/wall_s"] + r.get("drift/wall_s", 0.0) for r in rows),
    }


def ratios(times: dict[str, dict[str, float]]) -> dict[str, float]:
    """Every job's times as `<arch>_<time>`, and each wide job's over the baseline's as `<arch>_<time>_over_w64`."""
    out: dict[str, float] = {}
    for arch, measured in times.items():
        out |= {f"{arch}_{key}": value for key, value in measured.items()}
        if arch != BASELINE:
            base = times[BASELINE]
            out |= {f"{arch}_{key}_over_{BASELINE}": value / base[key] for key, value in measured.items()}
    return out


def main(*overrides: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        warm_up = job_command(ARCHS[BASELINE], Path(tmp) / "warm_up", *overrides, *WARM_UP)
        subprocess.run(warm_up, cwd=REPO, check=True, capture_output=True)
        times = {
            arch: timed_job(job_command(widths, Path(tmp) / arch, *overrides), Path(tmp) / arch)
            for arch, widths in ARCHS.items()
        }
    return ratios(times)
