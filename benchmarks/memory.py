"""Peak resident memory (max RSS) of one real job per env, against the target of at most 1 GiB per job.

Each job is the real command (`python -m testbed.cli env=<env> logger=none ...`) in its own process, with small
RL budgets: PPO, evaluation and drift all run, and a job's memory does not grow with its RL budget (the
rollout buffer has a fixed size). A job is one process (its envs are DummyVecEnv copies), so its peak RSS,
read from `os.wait4` for that process alone (SPAWN), is the job's memory. The baseline, measured in the same run, is a
process that only imports the testbed: the floor every job pays (torch, SB3, gymnasium, Hydra).

The jobs use the configured cache (TESTBED_CACHE, else the repository's .cache/testbed), so a cached expert
is loaded, not retrained; a cold cache trains the env's expert first (its memory then counts too).
`python -m benchmarks.run memory env=cartpole,doorkey8` picks the envs; other overrides go to every job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENVS = ("doorkey8", "pendulum")  # a planner expert (no training) and the default env's cached PPO expert
# Small budgets that still run every stage: BC, 4096 PPO steps (one Pendulum rollout), evaluation and drift.
JOB = ["logger=none", "rl.budgets=[0,4096]"]
TARGET_MIB = 1024.0
IMPORTS = "import testbed.cli, testbed.pipeline"


# Starts the command (argv[2:]) from this small process and writes its peak RSS (KiB) and exit code to argv[1].
# Linux starts a child's peak RSS at its parent's when it execs, so a job started straight from the benchmark's
# own process (torch loaded by an earlier benchmark, or by pytest) would report at least that process's peak.
SPAWN = """import json, os, sys
pid = os.spawnvp(os.P_NOWAIT, sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
json.dump({"maxrss_kib": usage.ru_maxrss, "returncode": os.waitstatus_to_exitcode(status)}, open(sys.argv[1], "w"))
"""


def peak_rss_mib(command: list[str], log: Path) -> float:
    """Run `command` from the repository root, its output into `log`; return the peak RSS of that process alone,
    in MiB. Raises CalledProcessError, with the log's tail, when it fails."""
    report = log.with_suffix(".rss.json")
    with log.open("w") as out:
        subprocess.run([sys.executable, "-c", SPAWN, str(report), *command], cwd=REPO, stdout=out, stderr=out)
    measured = json.loads(report.read_text())
    if measured["returncode"] != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise subprocess.CalledProcessError(measured["returncode"], command, output=tail)
    return float(measured["maxrss_kib"]) / 1024


def job_command(env: str, out: Path, *overrides: str) -> list[str]:
    """The job this benchmark measures for `env`, writing into `out`."""
    return [sys.executable, "-m", "testbed.cli", f"env={env}", *JOB, f"output_dir={out}", *overrides]


def split_envs(overrides: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The envs to measure (an `env=a,b` override, else ENVS) and the overrides for every job."""
    picked = [o.removeprefix("env=").split(",") for o in overrides if o.startswith("env=")]
    rest = [o for o in overrides if not o.startswith("env=")]
    return (picked[-1] if picked else list(ENVS)), rest


def main(*overrides: str) -> dict[str, float]:
    envs, rest = split_envs(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        floor = peak_rss_mib([sys.executable, "-c", IMPORTS], Path(tmp) / "imports.log")
        result = {"imports_mib": floor}
        for env in envs:
            rss = peak_rss_mib(job_command(env, Path(tmp) / env, *rest), Path(tmp) / f"{env}.log")
            result |= {f"{env}_peak_rss_mib": rss, f"{env}_over_target": rss / TARGET_MIB}
    result["max_over_target"] = max(result[f"{env}_over_target"] for env in envs)
    return result
