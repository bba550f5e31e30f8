"""The memory study's table (testbed/analysis/memory.py) and report section on hand-made checkpoint rows with
known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from testbed.analysis.memory import memory_analysis, memory_table, studied
from testbed.report.memory import memory_tables


def rows(policy: str, cell: str, scores: dict[int, list[float]], demos: int = 16, steps: int = 2000) -> list[dict]:
    """One row per seed and RL budget: score as given, total FLOPs = 1e9 + budget x 1e6, probe 0.5 + score / 2."""
    out = []
    for rl_steps, per_seed in scores.items():
        for seed, score in enumerate(per_seed):
            out.append(
                {
                    "env": "parity8",
                    "policy": policy,
                    "cell": cell,
                    "label": f"{policy} {cell}",
                    "seed": seed,
                    "rl_steps": rl_steps,
                    "demos": demos,
                    "grad_steps": steps,
                    "eval/normalized_score": score,
                    "compute/total/flops": 1e9 + rl_steps * 1e6,
                    "memory/probe_accuracy": 0.5 + score / 2,
                    "policy/actor_params": 4546 if policy == "mlp" else 4740,
                    "policy/flops_per_step": 2 * (4546 if policy == "mlp" else 4740),
                }
            )
    return out


def sweep() -> pd.DataFrame:
    mlp = rows("mlp", "m", {0: [0.0] * 4, 100: [0.0] * 4, 200: [0.1] * 4})
    pad = rows("scratchpad", "s", {0: [0.4, 0.6, 0.6, 0.6], 100: [1.0, 1.0, 0.6, 0.6], 200: [1.0] * 4})
    pad_bc = rows("scratchpad", "s128", {0: [1.0, 1.0, 1.0, 0.8]}, demos=128)
    return pd.DataFrame(mlp + pad + pad_bc)


def test_each_learner_gets_one_row_with_its_scores_reach_and_probes() -> None:
    table, budgets = memory_table(sweep(), n_resamples=200)
    assert budgets == [100.0, 200.0]
    assert list(table["policy"]) == ["mlp", "scratchpad"]  # the feed-forward baseline first
    pad = table.set_index("policy").loc["scratchpad"]
    assert pad["bc_score"] == pytest.approx(0.6)  # IQM of 0.4, 0.6, 0.6, 0.6: the middle two
    assert pad["score@200"] == 1.0 and pad["rl_steps"] == 200
    # Reaching 0.9: seeds 0 and 1 at budget 100, seeds 2 and 3 at 200: FLOPs 1.1e9, 1.1e9, 1.2e9, 1.2e9.
    assert pad["reached_0.9"] == 4 and pad["flops_to_0.9"] == pytest.approx(1.15e9)
    assert pad["reached_0.5"] == 4 and pad["flops_to_0.5"] == pytest.approx(1e9)  # IQM of 1e9 x 3 and 1.1e9
    assert pad["bc@128x2000"] == 1.0  # the BC-only cell's IQM: 1.0, 1.0 in the middle
    assert pad["probe_bc"] == pytest.approx(0.8) and pad["probe_rl"] == 1.0
    mlp = table.set_index("policy").loc["mlp"]
    assert mlp["reached_0.5"] == 0 and math.isinf(mlp["flops_to_0.5"])
    assert np.isnan(mlp.get("bc@128x2000", np.nan))


def test_two_bc_rl_cells_for_one_learner_are_refused_naming_them() -> None:
    extra = pd.DataFrame(rows("mlp", "m2", {0: [0.0] * 4, 100: [0.0] * 4}))
    with pytest.raises(ValueError, match=r"parity8: learner 'mlp' needs one BC\+RL cell, has 2"):
        memory_table(pd.concat([sweep(), extra]), n_resamples=50)


def test_a_study_needs_probed_cells_of_two_learners() -> None:
    points = sweep()
    assert studied(points)
    assert not studied(points[points["policy"] == "mlp"])
    assert not studied(points.drop(columns=["memory/probe_accuracy"]))


def test_the_report_table_says_reached_and_censored_levels() -> None:
    (table,) = memory_tables(memory_analysis(sweep(), n_resamples=200))
    title, _, cells = table
    assert title == "Memory: parity8"
    row = cells.set_index("learner")
    assert row.loc["mlp", "FLOPs to 0.5"] == "not reached (0/4)"
    assert row.loc["scratchpad", "FLOPs to 0.9"].endswith("(4/4)")
    assert row.loc["scratchpad", "BC 128 demos x 2000 steps"].startswith("1")
    assert row.loc["mlp", "actor params"] == "4,546"
