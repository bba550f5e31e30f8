"""RL compute (`compute/rl/*`) counts the optimizer steps PPO really takes and the samples those steps see."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from testbed.anchoring import AnchoredPPO, anchor_flops, attach_anchor
from testbed.compute import actor_critic_params, rollout_flops, train_flops
from testbed.config import AnchorConfig, RLConfig
from testbed.envs import make_vec_env
from testbed.finetune import finetune
from testbed.policy import build_ppo, snapshot
from tests.conftest import make_job

# The truncated last minibatch is the point of BATCH, so SB3's warning about it is expected.
pytestmark = pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")

ROLLOUT = 256  # conf/env/cartpole.yaml: n_steps 32 x 8 envs
BATCH = 96  # three minibatches per epoch, 96 + 96 + a truncated 64
EPOCHS = 3
BUDGETS = [0, ROLLOUT, 2 * ROLLOUT]


class StepCount:
    """The test's own count: optimizer steps, and the size of the minibatch `evaluate_actions` saw before each."""

    def __init__(self, model: PPO) -> None:
        self.steps, self.samples, self._batch = 0, 0, 0
        evaluate_actions = model.policy.evaluate_actions

        def evaluate_and_record(obs: th.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._batch = len(obs)
            return evaluate_actions(obs, *args, **kwargs)

        model.policy.evaluate_actions = evaluate_and_record  # type: ignore[method-assign,assignment]
        model.policy.optimizer.register_step_post_hook(self._on_step)

    def _on_step(self, *_: Any) -> None:
        self.steps += 1
        self.samples += self._batch


def tiny_model(algo: type[PPO], **ppo: Any) -> tuple[PPO, RLConfig]:
    """Fast CartPole PPO (`algo`) with EPOCHS epochs of BATCH minibatches, and its RL config over BUDGETS."""
    cfg = make_job("env=cartpole", "debug=fast", f"rl.budgets={BUDGETS}")
    model = build_ppo(cfg.env, make_vec_env(cfg.env, 0), seed=0, algo=algo, n_epochs=EPOCHS, batch_size=BATCH, **ppo)
    assert model.n_steps * model.n_envs == ROLLOUT
    if algo is AnchoredPPO:
        demo_obs = np.random.default_rng(0).uniform(-0.2, 0.2, size=(64, 4)).astype(np.float32)
        attach_anchor(model, AnchorConfig(kind="bc_kl"), snapshot(model.policy), demo_obs, seed=0)
    return model, cfg.rl


def expected_flops(model: PPO, row: dict[str, Any], anchor: int) -> int:
    return (
        rollout_flops(model.policy, row["compute/rl/env_steps"])
        + train_flops(actor_critic_params(model.policy), row["compute/rl/samples"])
        + anchor
    )


@pytest.mark.parametrize("algo", [PPO, AnchoredPPO])
def test_target_kl_early_stop_counts_only_the_steps_taken(algo: type[PPO]) -> None:
    # A tiny target_kl stops each RL update as soon as the policy has moved (within the first epoch);
    # the critic warm-up never stops early, since its frozen actor never moves.
    model, rl = tiny_model(algo, target_kl=1e-6)
    rl = replace(rl, critic_warmup_steps=ROLLOUT)
    count = StepCount(model)
    seen: dict[int, tuple[int, int, int]] = {}

    def on_checkpoint(steps: int, m: PPO) -> dict[str, Any]:
        seen[steps] = (count.steps, count.samples, anchor_flops(m))
        return {}

    rows = finetune(model, rl, on_checkpoint, progress=False)
    assert [r["rl_steps"] for r in rows] == BUDGETS
    for row in rows:  # cumulative at every checkpoint, warm-up included
        steps, samples, anchor = seen[row["rl_steps"]]
        assert (row["compute/rl/grad_steps"], row["compute/rl/samples"]) == (steps, samples)
        assert row["compute/rl/flops"] == expected_flops(model, row, anchor)
    warmup_steps = EPOCHS * math.ceil(ROLLOUT / BATCH)
    assert rows[0]["compute/rl/grad_steps"] == warmup_steps, "the warm-up runs every epoch"
    assert rows[0]["compute/rl/samples"] == EPOCHS * ROLLOUT
    full_epochs = 3 * warmup_steps  # warm-up + two RL updates, had every epoch run to the end
    assert warmup_steps < rows[-1]["compute/rl/grad_steps"] < full_epochs, "the RL updates stopped early"
    assert rows[-1]["compute/rl/samples"] < 3 * EPOCHS * ROLLOUT


def test_full_epochs_count_as_epochs_times_rollout() -> None:
    # Without target_kl every update runs all epochs: the counts are those of the full-epoch formula,
    # truncated last minibatch included (3 steps but 256 samples per epoch).
    model, rl = tiny_model(PPO)
    count = StepCount(model)
    rows = finetune(model, rl, lambda *_: {}, progress=False)
    for row in rows:
        updates = row["rl_steps"] // ROLLOUT
        assert row["compute/rl/samples"] == updates * EPOCHS * ROLLOUT
        assert row["compute/rl/grad_steps"] == updates * EPOCHS * math.ceil(ROLLOUT / BATCH)
        assert row["compute/rl/flops"] == expected_flops(model, row, 0)
    assert (count.steps, count.samples) == (rows[-1]["compute/rl/grad_steps"], rows[-1]["compute/rl/samples"])
