"""Run benchmarks by name and print their numbers: `python -m benchmarks.run [name ...] [key=value ...]` (all
without a name). Hydra overrides (`key=value`) go to the benchmarks that compose a config (those in TAKES_OVERRIDES),
e.g. `python -m benchmarks.run bc_speed env=cartpole` (`memory env=a,b` picks the envs it measures).

A benchmark is a function that returns {metric: number} (those in TAKES_OVERRIDES take Hydra overrides as
positional arguments), measuring its baseline in the same run so the ratio it reports holds on a loaded
machine. Add one by naming it in BENCHMARKS as "module:function" (imported only when it runs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Callable

BENCHMARKS: dict[str, str] = {
    "parallel": "benchmarks.parallel:main",  # 4 equal jobs, 2 joblib workers against 1 (target >= 1.7x)
    "bc_speed": "benchmarks.bc_speed:main",  # BC samples/s vs a DataLoader loop (>= 5x, no worse loss at equal time)
    "default_job": "benchmarks.default_job:main",  # cold/warm wall, peak RSS, eval+drift share of RL time
    "memory": "benchmarks.memory:main",  # peak RSS of one job per env (doorkey8, pendulum) against 1 GiB
    "width": "benchmarks.width:main",  # wall time of a width-1024 job (depth 2 and 4) against width 64
    "learners": "benchmarks.learners:main",  # wall time of scratchpad and LSTM jobs against the MLP's (target <= 3x)
}
TAKES_OVERRIDES = {"bc_speed", "memory", "width", "learners"}


def load(name: str) -> Callable[..., dict[str, float]]:
    module, function = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", metavar="name|key=value", help=f"any of {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv).args
    overrides = [a for a in args if "=" in a]
    names = [a for a in args if "=" not in a] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown}; known: {list(BENCHMARKS)}")
    if overrides and not set(names) <= TAKES_OVERRIDES:
        parser.error(f"overrides {overrides} only apply to {sorted(TAKES_OVERRIDES)}; got {names}")
    for name in names:
        start = time.perf_counter()
        result = load(name)(*overrides)
        print(f"{name}: {json.dumps(result)}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
