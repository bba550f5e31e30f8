"""Drift and compute columns in a real fast run: exact zeros at budget 0, growth afterwards (reported)."""

from __future__ import annotations

import pytest

from testbed.pipeline import run

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
