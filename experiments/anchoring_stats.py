"""Paired statistics of an anchoring sweep: does each anchor lower drift, and does it still gain capability?

    .venv/bin/python experiments/anchoring_stats.py multirun/pendulum/<time>_anchoring [--out experiments/results]

Reads every complete results.json of the sweep. Each anchor's job and the plain fine-tuning job (variant `bc`)
of the same seed start from the same BC policy, so the comparison is paired by seed: for each anchor, budget
and metric it reports the per-seed values, the mean paired difference (anchor - plain) with a 95% bootstrap CI
over seeds, and an exact two-sided sign-flip permutation test of that mean (scipy.stats; with 5 seeds the
smallest possible p is 2/32 = 0.0625 two-sided, 1/32 one-sided, so the one-sided p is given too).
It also tests each variant's own gain over its BC start (one-sample sign-flip test, gain > 0).
Writes anchoring.{json,md} into --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

PLAIN = "bc"
# The columns compared: how far the actor moved, how far its behaviour moved, and what RL gained.
METRICS = {
    "drift/weights/actor/rel_change": "actor rel. change",
    "drift/kl/demo": "KL(pi_bc || pi) demo",
    "gain": "gain over BC (normalized)",
}


def load(sweep: Path) -> dict[str, dict[int, dict[int, dict[str, float]]]]:
    """variant -> seed -> rl_steps -> metrics (with `gain`: normalized score minus the BC start's)."""
    runs: dict[str, dict[int, dict[int, dict[str, float]]]] = {}
    for path in sorted(sweep.glob("*/results.json")):
        data = json.loads(path.read_text())
        if data["status"] != "complete":
            continue
        rows = data["checkpoints"]
        start = rows[0]["eval/normalized_score"]
        by_steps = {row["rl_steps"]: row | {"gain": row["eval/normalized_score"] - start} for row in rows}
        runs.setdefault(data["variant"], {})[data["seed"]] = by_steps
    return runs


def paired(anchor: np.ndarray, plain: np.ndarray) -> dict[str, Any]:
    """Mean paired difference, its 95% bootstrap CI over seeds and exact sign-flip permutation p-values."""
    diff = anchor - plain
    ci = stats.bootstrap(
        (diff,), np.mean, confidence_level=0.95, n_resamples=10_000, method="percentile", random_state=0
    ).confidence_interval
    tests = {
        alt: stats.permutation_test(
            (anchor, plain),
            lambda x, y: np.mean(x - y),
            permutation_type="samples",
            alternative=alt,
            n_resamples=np.inf,
        ).pvalue
        for alt in ("two-sided", "less", "greater")
    }
    return {
        "mean_diff": float(diff.mean()),
        "ci95": [float(ci.low), float(ci.high)],
        "p_two_sided": float(tests["two-sided"]),
        "p_less": float(tests["less"]),
        "p_greater": float(tests["greater"]),
        "n_lower": int((diff < 0).sum()),
    }


def still_gains(runs: dict[str, dict[int, dict[int, dict[str, float]]]]) -> list[dict[str, Any]]:
    """Each variant's own gain over its BC start: mean, 95% bootstrap CI, exact one-sided sign-flip p (gain > 0)."""
    rows = []
    for variant in sorted(runs):
        seeds = sorted(runs[variant])
        for steps in sorted(set.intersection(*(set(runs[variant][s]) for s in seeds)) - {0}):
            gain = np.array([runs[variant][s][steps]["gain"] for s in seeds])
            ci = stats.bootstrap(
                (gain,), np.mean, n_resamples=10_000, method="percentile", random_state=0
            ).confidence_interval
            p = stats.permutation_test(
                (gain,), np.mean, permutation_type="samples", alternative="greater", n_resamples=np.inf
            ).pvalue
            rows.append(
                {
                    "variant": variant,
                    "rl_steps": steps,
                    "seeds": seeds,
                    "gain": gain.tolist(),
                    "mean": float(gain.mean()),
                    "ci95": [float(ci.low), float(ci.high)],
                    "p_greater": float(p),
                }
            )
    return rows


def compare(runs: dict[str, dict[int, dict[int, dict[str, float]]]]) -> list[dict[str, Any]]:
    rows = []
    for variant in sorted(v for v in runs if v != PLAIN):
        seeds = sorted(set(runs[variant]) & set(runs[PLAIN]))
        budgets = sorted(set.intersection(*(set(runs[variant][s]) & set(runs[PLAIN][s]) for s in seeds)))
        for steps in (b for b in budgets if b > 0):
            for metric in METRICS:
                a = np.array([runs[variant][s][steps][metric] for s in seeds])
                p = np.array([runs[PLAIN][s][steps][metric] for s in seeds])
                rows.append(
                    {
                        "variant": variant,
                        "rl_steps": steps,
                        "metric": metric,
                        "seeds": seeds,
                        "anchor": a.tolist(),
                        "plain": p.tolist(),
                    }
                    | paired(a, p)
                )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| anchor | RL steps | metric | plain, per seed | anchor, per seed | anchor - plain [95% CI] "
        "| seeds lower | p (two-sided) | p (one-sided, lower / higher) |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        fmt = "{:.3g}".format
        lines.append(
            f"| {r['variant']} | {r['rl_steps']:,} | {METRICS[r['metric']]} | {' / '.join(map(fmt, r['plain']))} "
            f"| {' / '.join(map(fmt, r['anchor']))} | {r['mean_diff']:+.3g} [{r['ci95'][0]:+.3g}, {r['ci95'][1]:+.3g}] "
            f"| {r['n_lower']}/{len(r['seeds'])} | {r['p_two_sided']:.3f} | {r['p_less']:.3f} / {r['p_greater']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def gains_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | RL steps | gain over BC, per seed | mean [95% CI] | p (gain > 0) |", "|---|---|---|---|---|"]
    for r in rows:
        per_seed = " / ".join(f"{g:+.3f}" for g in r["gain"])
        lines.append(
            f"| {r['variant']} | {r['rl_steps']:,} | {per_seed} | {r['mean']:+.3f} "
            f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | {r['p_greater']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    runs = load(args.sweep)
    rows, gains = compare(runs), still_gains(runs)
    text = (
        f"Paired by seed against plain fine-tuning:\n\n{markdown(rows)}\n"
        f"Each variant's own gain:\n\n{gains_markdown(gains)}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "anchoring.json").write_text(json.dumps({"paired": rows, "gains": gains}, indent=1))
    (args.out / "anchoring.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
