"""The control for RL's drift (`eval.bc_control`, the scale study): BC continued from the same start for as many
optimizer steps as PPO took, so a trend of RL's drift with network size can be told from the trend any gradient
training shows there (wide networks move less relative to their initial weights under any optimizer)."""

from __future__ import annotations

import time
from typing import Any

from stable_baselines3.common.policies import ActorCriticPolicy

from testbed.bc import BCTrainer
from testbed.config import Config, ppo_learning_rate
from testbed.demonstrations import Demonstrations
from testbed.drift import checkpoint_drift, probe_sample
from testbed.policy import snapshot


class BCControl:
    """A copy of the start policy trained on by BC, stopped at each RL checkpoint's optimizer-step count.

    Matched optimizer work: the same number of Adam steps as PPO, at PPO's learning rate and minibatch size, on the
    job's demonstrations. BC trains the actor only; PPO's steps train actor and critic together.
    """

    def __init__(self, cfg: Config, start: ActorCriticPolicy, demos: Demonstrations, batch_size: int):
        self.cfg, self.start, self.demos = cfg, start, demos
        self.policy = snapshot(start)
        self.policy.requires_grad_(True)
        self.trainer = BCTrainer(self.policy, demos, cfg.bc, cfg.seed, lr=ppo_learning_rate(cfg), batch_size=batch_size)
        # Demonstration states only: the RL checkpoint's other probe is the states *its* policy visited.
        self.probes = {"demo": probe_sample(demos.observations, cfg.eval.probe_size, seed=cfg.seed)}

    def row(self, grad_steps: int) -> dict[str, Any]:
        """`control/...` columns after `grad_steps` optimizer steps in all: its drift from the start, as
        `control/drift/...` (the same metrics as the checkpoint's own), and its steps and wall time."""
        t = time.perf_counter()
        self.trainer.run_to(grad_steps)
        metrics, _ = checkpoint_drift(
            self.start,
            self.policy,
            self.probes,
            self.demos.observations,
            self.demos.actions,
            self.cfg.eval.sparsity_tols,
        )
        return {f"control/{k}": v for k, v in metrics.items()} | {
            "control/grad_steps": self.trainer.steps,
            "control/wall_s": time.perf_counter() - t,
        }
