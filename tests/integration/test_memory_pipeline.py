"""The memory learners through the whole pipeline on the parity task (exact planner expert, so no training):
every learner runs and reports its size and its memory's readability; a supervised scratchpad learns the
sub-results; the recurrent learner starts RL exactly where BC left it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO

from testbed.pipeline import run
from tests.conftest import make_cfg

pytestmark = pytest.mark.slow

LEARNERS = {
    "mlp": [],
    "framestack": [],
    "scratchpad": [],
    "lstm": ["policy.lstm_hidden=16", "env.net_arch=[]"],
}


def parity_job(cache_dir: Path, out: Path, *overrides: str) -> dict[str, Any]:
    return run(
        make_cfg(
            "env=parity",
            "logger=none",
            "progress=false",
            "eval.episodes=20",
            "eval.memory_probe=true",
            f"cache_dir={cache_dir}",
            f"output_dir={out}",
            *overrides,
        )
    )


@pytest.mark.parametrize("kind", LEARNERS)
def test_every_learner_runs_and_reports_its_size_and_memory(cache_dir: Path, tmp_path: Path, kind: str) -> None:
    data = parity_job(
        cache_dir,
        tmp_path,
        "env.kwargs.n=4",
        f"policy={kind}",
        "demos.episodes=8",
        "bc.grad_steps=100",
        "rl.budgets=[0,1024]",
        *LEARNERS[kind],
    )
    assert data["status"] == "complete"
    rows = data["checkpoints"]
    assert [r["rl_steps"] for r in rows] == [0, 1024]
    for row in rows:
        assert row["policy/actor_params"] > 0 and row["policy/flops_per_step"] == 2 * row["policy/actor_params"]
        assert 0.0 <= row["memory/probe_accuracy"] <= 1.0
        assert ("memory/causal/wrong_score" in row) == (kind == "scratchpad")
    algo = RecurrentPPO if kind == "lstm" else PPO
    assert isinstance(algo.load(data["artifacts"]["final_policy"]["path"], device="cpu"), algo)


def test_a_supervised_scratchpad_learns_the_sub_results(cache_dir: Path, tmp_path: Path) -> None:
    """Parity of 8 bits from 32 demonstrations: BC on the expert's notes (the running parity) gives notes that are
    the sub-results at every step, and so the answer; the true note changes nothing, the wrong one every answer."""
    data = parity_job(cache_dir, tmp_path, "env.kwargs.n=8", "policy=scratchpad", "demos.episodes=32", "rl.budgets=[0]")
    (row,) = data["checkpoints"]
    assert row["memory/probe_accuracy"] == 1.0
    assert row["eval/success_rate"] == 1.0 and row["memory/causal/own_score"] == row["memory/causal/true_score"]
    assert row["memory/causal/true_action_change"] == 0.0
    assert row["memory/causal/wrong_action_change"] == pytest.approx(1 / 9)  # the answer, 1 of 9 steps
    # Every answer flips: the return is 0 where the expert's is 1.
    assert row["memory/causal/wrong_score"] < 0 < row["memory/causal/own_score"]


def test_the_recurrent_learner_starts_rl_from_the_bc_policy(cache_dir: Path, tmp_path: Path) -> None:
    """At budget 0 the RL policy is the BC policy itself: no weight moved, hidden states identical (CKA 1), the
    same actions; after RL the actor's LSTM has moved."""
    data = parity_job(
        cache_dir,
        tmp_path,
        "env.kwargs.n=4",
        "policy=lstm",
        "policy.lstm_hidden=16",
        "env.net_arch=[]",
        "demos.episodes=8",
        "bc.grad_steps=100",
        "rl.budgets=[0,1024]",
    )
    start, after = data["checkpoints"]
    assert start["drift/weights/all/rel_change"] == 0.0 and start["drift/weights/actor/lstm_actor/rel_change"] == 0.0
    assert start["drift/cka/demo/lstm"] == pytest.approx(1.0) and start["drift/kl/demo"] == 0.0
    assert start["drift/agreement/demo"] == 1.0
    assert after["drift/weights/actor/lstm_actor/rel_change"] > 0
    assert after["compute/rl/samples"] > 0
