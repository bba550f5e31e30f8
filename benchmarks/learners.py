"""Wall time of a job with memory (scratchpad, LSTM) against the feed-forward learner (mlp) at the same budget, per
task: the memory study's cost per learner, and the check that a recurrent or scratchpad run stays within 3x the
MLP's (`<task>_<learner>_wall_s_over_mlp`).

Each job is the real command (`python -m testbed.cli ...`, benchmarks/width.py's `timed_job`) in its own process, with
the memory preset's learner settings (conf/experiment/memory.yaml: actors of matched size) and small budgets (500
BC steps, PPO to 8,192 env steps, 20 evaluation episodes, no memory probe: the probe is a measurement, not the run).
Tasks: parity of 16 bits and Pendulum with its velocity hidden. An untimed warm-up per task fills the cache
(TESTBED_CACHE, else .cache/testbed: the masked Pendulum's expert trains once, about 70 s) so no timed job trains or
collects. Overrides go to every job.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.width import REPO, timed_job

TASKS = {
    "parity16": ["env=parity", "env.kwargs.n=16", "env.name=parity16"],
    "pendulum_masked": ["env=pendulum", "env.mask_velocity=true", "env.name=pendulum_masked"],
}
LEARNERS = {
    "mlp": ["policy=mlp"],
    "scratchpad": ["policy=scratchpad"],
    "lstm": ["policy=lstm", "policy.lstm_hidden=32", "env.net_arch=[]"],
}
BASELINE = "mlp"
TARGET = 3.0  # the bound on a memory learner's wall time over the MLP's
JOB = ["logger=none", "progress=false", "demos.episodes=16", "bc.grad_steps=500", "rl.budgets=[0,8192]"]
JOB += ["eval.episodes=20"]
WARM_UP = ["bc.grad_steps=1", "rl.budgets=[0]", "eval.episodes=1"]  # caches the expert and demonstrations only


def job_command(task: str, learner: str, out: Path, *overrides: str) -> list[str]:
    """The job this benchmark times for `learner` on `task`, writing into `out`."""
    settings = [*TASKS[task], *LEARNERS[learner], *JOB, f"output_dir={out}", *overrides]
    return [sys.executable, "-m", "testbed.cli", *settings]


def main(*overrides: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in TASKS:
            warm_up = job_command(task, BASELINE, Path(tmp) / f"{task}_warm_up", *overrides, *WARM_UP)
            subprocess.run(warm_up, cwd=REPO, check=True, capture_output=True)
            times = {
                learner: timed_job(
                    job_command(task, learner, Path(tmp) / f"{task}_{learner}", *overrides),
                    Path(tmp) / f"{task}_{learner}",
                )
                for learner in LEARNERS
            }
            for learner, measured in times.items():
                out |= {f"{task}_{learner}_{key}": value for key, value in measured.items()}
                if learner != BASELINE:
                    ratio = measured["wall_s"] / times[BASELINE]["wall_s"]
                    out |= {f"{task}_{learner}_wall_s_over_mlp": ratio}
                    out |= {f"{task}_{learner}_rl_s_over_mlp": measured["rl_s"] / times[BASELINE]["rl_s"]}
    out["within_target"] = float(all(v <= TARGET for k, v in out.items() if k.endswith("_wall_s_over_mlp")))
    return out
