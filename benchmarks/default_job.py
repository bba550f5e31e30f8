"""The default job end to end: cold (expert trained) and warm (expert cached) wall time, peak RSS, and the
share of RL fine-tuning time that evaluation and drift cost."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _job(cache: Path, out: Path) -> dict[str, float]:
    """One `python -m testbed.cli` process, as `make run` starts it; returns wall s and peak RSS."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [sys.executable, "-m", "testbed.cli", f"cache_dir={cache}", f"output_dir={out}", "logger=none"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": time.perf_counter() - start, "peak_rss_mib": max(rss_kib, before) / 1024}


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cold = _job(cache, Path(tmp) / "cold")
        warm = _job(cache, Path(tmp) / "warm")
        data = json.loads((Path(tmp) / "warm" / "results.json").read_text())
    rows = data["checkpoints"]
    eval_s = sum(r["eval/wall_s"] for r in rows)
    drift_s = sum(r.get("drift/wall_s", 0.0) for r in rows)
    rl_s = rows[-1]["compute/rl/wall_s"]
    return {
        "cold_wall_s": cold["wall_s"],
        "warm_wall_s": warm["wall_s"],
        "peak_rss_mib": max(cold["peak_rss_mib"], warm["peak_rss_mib"]),
        "rl_finetune_s": rl_s,
        "eval_s": eval_s,
        "drift_s": drift_s,
        "eval_plus_drift_over_rl": (eval_s + drift_s) / rl_s,
        "final_normalized_score": rows[-1]["eval/normalized_score"],
        "bc_normalized_score": rows[0]["eval/normalized_score"],
    }
