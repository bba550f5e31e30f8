"""Local parallel sweeps: 4 equal jobs through the default joblib launcher, 2 workers against 1.

Each sweep is the real command (`python -m testbed.cli -m ...`), timed from start to exit, on a warm cache
(expert, demonstrations and references made once beforehand). Target: ratio >= 1.7 on 2 free cores.

The machine is shared, so the run also reports two numbers that other users' load does not move much:
- `ceiling`: the same busy loop in 1 process, then in 2 at once (2.0 on 2 free cores): what 2 workers can
  get right now; `efficiency` = ratio / ceiling.
- `cpu_ratio`: 2 x (CPU seconds of the 1-worker sweep) / (CPU seconds of the 2-worker sweep), the ratio
  the sweeps would reach with a free core per worker (it counts the workers' start and any slowdown from
  running side by side, not the waiting for a busy core).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing import Process
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# One equal job per seed: BC then 50000 PPO steps on CartPole, about 30 s of one free core each, so the
# start of a worker (about 4 s of imports; 1 worker skips it, joblib runs n_jobs=1 in-process) stays small.
JOB = ["env=cartpole", "debug=fast", "logger=none", "rl.budgets=[0,50000]", "eval.drift=false"]
SEEDS = "seed=0,1,2,3"
REPEATS = 2  # each sweep runs this often, alternating, and the fastest counts (bursts of load add noise)


def testbed(*args: str) -> tuple[float, float]:
    """Run the testbed CLI with `args` from the repository root; return its wall and CPU seconds."""
    cpu, start = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start, _children_cpu() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the CLI and its joblib workers, once reaped
    return usage.ru_utime + usage.ru_stime


def _spin(n: int = 20_000_000) -> None:
    x = 0
    for i in range(n):
        x += i


def ceiling() -> float:
    """Throughput of 2 busy processes against 1: what the machine gives 2 workers right now."""

    def timed(k: int) -> float:
        procs = [Process(target=_spin) for _ in range(k)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return time.perf_counter() - start

    return 2 * timed(1) / timed(2)


def main() -> dict[str, float]:
    seconds: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    ceilings = [ceiling()]
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        cache = f"cache_dir={tmp}/cache"
        # 1. Warm the cache so the timed sweeps run only the jobs.
        testbed(*JOB, cache, f"output_dir={tmp}/warm")
        # 2. The same 4 jobs with 1 worker, then 2, alternating (resume off: each sweep computes every job).
        for r in range(REPEATS):
            for workers in (1, 2):
                sweep_dir = f"hydra.sweep.dir={tmp}/r{r}-workers{workers}"
                args = ["-m", *JOB, SEEDS, cache, "hydra.sweeper.resume=false", f"hydra.launcher.n_jobs={workers}"]
                wall, used = testbed(*args, sweep_dir)
                seconds[workers].append(wall)
                cpu[workers].append(used)
    ceilings.append(ceiling())
    ratio = min(seconds[1]) / min(seconds[2])
    return {
        "one_worker_s": round(min(seconds[1]), 1),
        "two_workers_s": round(min(seconds[2]), 1),
        "ratio": round(ratio, 2),
        "target": 1.7,
        "ceiling": round(sum(ceilings) / 2, 2),
        "efficiency": round(ratio / (sum(ceilings) / 2), 2),
        "cpu_ratio": round(2 * min(cpu[1]) / min(cpu[2]), 2),
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }
