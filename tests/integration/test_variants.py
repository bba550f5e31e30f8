"""The light-vs-heavy RL variants in the fast pipeline: anchors, RL from scratch and sampling-and-voting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from testbed.anchoring import attach_anchor, ppo_class
from testbed.bc import train_bc
from testbed.demonstrations import get_demonstrations
from testbed.drift import snapshot, weight_drift
from testbed.envs import make_vec_env
from testbed.expert import get_expert
from testbed.finetune import finetune
from testbed.pipeline import run, setup
from testbed.policy import build_ppo
from tests.conftest import make_cfg

pytestmark = pytest.mark.slow

KINDS = ["bc_kl", "kickstart", "ewc"]
# Columns that may differ between runs that compute the same thing: timings, and the anchor's own bookkeeping.
UNCOMPARED = ("rl/anchor_", "compute/rl/anchor_flops", "compute/rl/flops", "compute/total/flops")


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if "wall_s" not in k and not k.startswith(UNCOMPARED)} for r in rows]


def final_params(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    return PPO.load(data["artifacts"]["final_policy"]["path"], device="cpu").policy.state_dict()


@pytest.fixture(scope="module")
def plain(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Plain fine-tuning on the fast config (as tests/conftest.py's fast_cfg), shared by the comparisons."""
    out = tmp_path_factory.mktemp("plain")
    return run(make_cfg("env=cartpole", "debug=fast", "logger=none", f"cache_dir={cache_dir}", f"output_dir={out}"))


@pytest.mark.parametrize("kind", KINDS)
def test_an_anchor_with_coefficient_zero_is_plain_finetuning(fast_cfg, plain: dict[str, Any], kind: str) -> None:  # type: ignore[no-untyped-def]
    data = run(fast_cfg(f"rl.anchor.kind={kind}", "rl.anchor.coef=0", f"variant={kind}"))
    assert data["run_name"] == f"cartpole-{kind}-s0"
    last = data["checkpoints"][-1]
    assert last["rl/anchor_term"] is not None and last["rl/anchor_loss"] == 0.0, "the term ran, with weight 0"
    assert last["compute/rl/anchor_flops"] > 0
    assert last["compute/rl/flops"] == plain["checkpoints"][-1]["compute/rl/flops"] + last["compute/rl/anchor_flops"]
    assert comparable(data["checkpoints"]) == comparable(plain["checkpoints"])
    ours, theirs = final_params(data), final_params(plain)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_large_bc_kl_coefficient_keeps_the_policy_at_bc(fast_cfg, plain: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    data = run(fast_cfg("rl.anchor.kind=bc_kl", "rl.anchor.coef=1000"))
    kl, kl_plain = data["checkpoints"][-1]["drift/kl/demo"], plain["checkpoints"][-1]["drift/kl/demo"]
    print({"drift/kl/demo": kl, "plain": kl_plain})
    assert kl < 1e-4 and kl < kl_plain / 100, (kl, kl_plain)
    assert data["checkpoints"][-1]["drift/agreement/demo"] >= 0.99


def test_rl_from_scratch_is_a_first_class_variant(fast_cfg) -> None:  # type: ignore[no-untyped-def]
    data = run(fast_cfg("rl.init=scratch"))
    assert (data["variant"], data["run_name"], data["bc"]) == ("scratch", "cartpole-scratch-s0", None)
    assert "bc_policy" not in data["artifacts"] and data["checkpoints"][0]["compute/bc/flops"] == 0
    for row in data["checkpoints"]:
        assert {"eval/normalized_score", "rl/dip_min_normalized", "drift/weights/actor/rel_change"} <= set(row)


def test_voting_of_one_is_the_bc_policy_and_leaves_rl_alone(fast_cfg, plain: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    data = run(fast_cfg("voting.enabled=true", "voting.ks=[1,3]"))
    one, three = data["voting"]
    assert (one["voting/k"], three["voting/k"], one["voting/mode"]) == (1, 3, "seeds")
    bc_row = plain["checkpoints"][0]
    for key in ("eval/return_mean", "eval/return_std", "eval/normalized_score", "eval/env_steps"):
        assert one[key] == bc_row[key], key
    assert one["compute/voting/train_flops"] == bc_row["compute/bc/flops"]
    assert three["compute/voting/train_flops"] == 3 * one["compute/voting/train_flops"]
    assert three["compute/voting/flops_per_step"] == 3 * one["compute/voting/flops_per_step"]
    assert comparable(data["checkpoints"]) == comparable(plain["checkpoints"]), "voting must not perturb RL"


def test_voting_by_samples_costs_one_policy(fast_cfg) -> None:  # type: ignore[no-untyped-def]
    data = run(fast_cfg("voting.enabled=true", "voting.mode=samples", "voting.ks=[1,3]", "rl.budgets=[0]"))
    for row in data["voting"]:
        assert row["compute/voting/forward_passes_per_step"] == 1 and row["compute/voting/bc_policies"] == 1
        assert 0.0 <= row["eval/success_rate"] <= 1.0


def actor_drift_after(cfg_overrides: list[str], cache_dir: Path) -> float:
    """BC then PPO to one budget; the actor's relative weight change against the BC snapshot."""
    cfg = make_cfg("env=cartpole", "debug=fast", "logger=none", f"cache_dir={cache_dir}", *cfg_overrides)
    setup(cfg)
    demos = get_demonstrations(cfg, get_expert(cfg))
    model = build_ppo(cfg.env, make_vec_env(cfg.env, cfg.seed), cfg.seed, algo=ppo_class(cfg.rl.anchor))
    train_bc(model.policy, demos, cfg.bc, cfg.seed, progress=False)
    bc = snapshot(model.policy)
    attach_anchor(model, cfg.rl.anchor, bc, demos.observations, cfg.seed)
    rows = finetune(model, cfg.rl, lambda steps, m: weight_drift(bc, m.policy), progress=False)
    return float(rows[-1]["drift/weights/actor/rel_change"])


def test_anchoring_lowers_weight_drift_on_every_seed(cache_dir: Path) -> None:
    """bc_kl and kickstart (coef 10) against plain PPO, 2048 RL steps, seeds 0-2.

    Measured (actor rel_change): plain 0.061 / 0.028 / 0.039, bc_kl 0.013 / 0.004 / 0.020, kickstart 0.010 /
    0.003 / 0.004 (at coef 1 bc_kl was not lower on every seed). Three seeds cannot reach p < 0.05 in a paired
    permutation test (its smallest p is 1/8), so the claim asserted is the robust one: lower on every seed, by
    at least 10%. EWC is not asserted: its
    Fisher weighting leaves the directions the BC policy is insensitive to free to move (experiments/anchoring.md).
    """
    drift = {
        kind: [actor_drift_after(["rl.budgets=[0,2048]", f"seed={s}", f"rl.anchor.kind={kind}",
                                  "rl.anchor.coef=10"], cache_dir)
               for s in range(3)]
        for kind in ["none", "bc_kl", "kickstart"]
    }
    print({k: np.round(v, 4).tolist() for k, v in drift.items()})
    for kind in ("bc_kl", "kickstart"):
        assert all(a < 0.9 * p for a, p in zip(drift[kind], drift["none"], strict=True)), drift
