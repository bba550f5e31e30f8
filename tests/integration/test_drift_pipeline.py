"""Drift and compute columns in a real fast run: exact zeros at budget 0, growth afterwards (reported)."""

from __future__ import annotations

import pytest
import torch

from testbed.bc import BCTrainer
from testbed.config import ppo_learning_rate
from testbed.demonstrations import get_demonstrations
from testbed.drift import weight_drift
from testbed.envs import make_vec_env
from testbed.expert import get_expert
from testbed.pipeline import run, setup
from testbed.policy import build_ppo, snapshot

pytestmark = pytest.mark.slow


def test_drift_is_exactly_zero_at_budget_zero_and_reported_after(fast_cfg) -> None:  # type: ignore[no-untyped-def]
    data = run(fast_cfg("rl.budgets=[0,1024,4096]"))
    rows = data["checkpoints"]
    first = rows[0]
    assert first["drift/weights/actor/rel_change"] == 0.0
    assert first["drift/weights/all/rel_change"] == 0.0
    for tol in ("1e-08", "1e-06", "1e-04"):
        assert first[f"drift/weights/actor/sparsity@{tol}"] == 1.0
    assert first["drift/kl/demo"] == 0.0 and first["drift/kl/visited"] == 0.0
    assert first["drift/agreement/demo"] == 1.0 and first["drift/agreement/visited"] == 1.0
    assert first["drift/expert_loglik"] == first["drift/expert_loglik_bc"]
    assert all(abs(v - 1.0) < 1e-9 for k, v in first.items() if k.startswith("drift/cka/"))

    # Compute is cumulative and counted for both stages.
    assert first["compute/rl/env_steps"] == 0 and first["compute/bc/flops"] > 0
    flops = [r["compute/total/flops"] for r in rows]
    assert flops == sorted(flops) and flops[-1] > flops[0]
    assert {r["compute/rl/env_steps"] for r in rows} == {0, 1024, 4096}

    # Drift grows from 0 with RL steps: reported, not asserted as a law beyond "it moved".
    drift = [r["drift/weights/actor/rel_change"] for r in rows]
    kl = [r["drift/kl/demo"] for r in rows]
    print("actor rel. change by RL steps:", dict(zip([r["rl_steps"] for r in rows], drift, strict=True)))
    print("KL(bc || rl) on demo states:", kl)
    assert drift[-1] > 0.0 and kl[-1] > 0.0
    table = rows[-1]["drift_table"]
    assert {row["layer"] for row in table} >= {"actor/policy_net.0", "actor/action_net", "critic/value_net.0"}
    assert "cka/demo" in next(r for r in table if r["layer"] == "actor/policy_net.0")


def test_bc_control_takes_ppos_optimizer_steps_and_changes_no_rl_number(fast_cfg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """eval.bc_control: at each checkpoint the control has taken as many BC steps as PPO took optimizer steps (0 at
    budget 0, where it has not moved), its drift equals a separate BC continuation of that many steps, it never
    touches the critic, and every RL column equals the same job's without the control."""
    with_control = run(fast_cfg(f"output_dir={tmp_path / 'on'}", "eval.bc_control=true", "rl.budgets=[0,512,1024]"))
    without = run(fast_cfg(f"output_dir={tmp_path / 'off'}", "rl.budgets=[0,512,1024]"))
    rows = with_control["checkpoints"]
    assert [r["control/grad_steps"] for r in rows] == [r["compute/rl/grad_steps"] for r in rows]
    assert rows[0]["control/grad_steps"] == 0 and rows[0]["control/drift/weights/actor/rel_change"] == 0.0
    assert rows[-1]["control/grad_steps"] > 0 and rows[-1]["control/drift/weights/actor/rel_change"] > 0
    assert all(r["control/drift/weights/critic/rel_change"] == 0.0 for r in rows)

    def own(rows: list[dict]) -> list[dict]:  # the RL columns: no wall times, no control
        return [{k: v for k, v in r.items() if "wall_s" not in k and not k.startswith("control/")} for r in rows]

    assert own(rows) == own(without["checkpoints"])

    # The same continuation by hand from the saved BC policy: Adam at PPO's rate and minibatch size.
    cfg = setup(fast_cfg("rl.budgets=[0,512,1024]"))
    model = build_ppo(cfg.env, make_vec_env(cfg.env, cfg.seed), cfg.seed)
    model.policy.load_state_dict(torch.load(tmp_path / "on" / "bc_policy.pt"))
    demos = get_demonstrations(cfg, get_expert(cfg))
    start = snapshot(model.policy)
    by_hand = BCTrainer(model.policy, demos, cfg.bc, cfg.seed, lr=ppo_learning_rate(cfg), batch_size=model.batch_size)
    by_hand.run_to(rows[-1]["control/grad_steps"])
    assert (
        weight_drift(start, model.policy)["drift/weights/actor/rel_change"]
        == rows[-1]["control/drift/weights/actor/rel_change"]
    )
