"""PPO from the BC policy (or from scratch): critic warm-up, then checkpoints at each RL budget."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from stable_baselines3 import PPO

from testbed.anchoring import anchor_columns, anchor_flops
from testbed.bc import actor_parameters
from testbed.compute import actor_critic_params, rollout_flops, train_flops
from testbed.config import RLConfig

log = logging.getLogger(__name__)

# Called at each checkpoint with (rl_steps, model); returns the row's evaluation and drift columns.
CheckpointFn = Callable[[int, PPO], dict[str, Any]]


@dataclass
class RLCompute:
    """Cumulative RL work so far, counted from SB3's own counters."""

    env_steps: int  # environment steps collected, warm-up included
    samples: int  # samples passed through PPO's loss (epochs x rollout size)
    grad_steps: int  # optimizer steps
    flops: int  # rollout forward passes + PPO update passes over epochs (see compute.py)
    wall_s: float  # seconds spent in model.learn


def rollout_size(model: PPO) -> int:
    return model.n_steps * model.n_envs


def checkpoint_steps(cfg: RLConfig, rollout: int) -> list[int]:
    """Budgets in env steps, always starting with 0 (the BC snapshot), rounded up to whole rollouts.

    PPO only updates after a full rollout, so a budget between two rollouts cannot be reached exactly;
    rounding up keeps one long run identical to separate runs at each budget.
    """
    requested = [cfg.budget] if cfg.budget is not None else list(cfg.budgets)
    if any(b < 0 for b in requested):
        raise ValueError(f"rl.budgets must be >= 0, got {requested}")
    return sorted({0} | {math.ceil(b / rollout) * rollout for b in requested})


def rl_compute(model: PPO, wall_s: float) -> RLCompute:
    """RL compute so far: SB3 adds one to `_n_updates` per epoch over the rollout buffer."""
    samples = model._n_updates * rollout_size(model)
    flops = rollout_flops(model.policy, model.num_timesteps) + train_flops(actor_critic_params(model.policy), samples)
    flops += anchor_flops(model)  # the anchor's own passes (testbed/anchoring.py), 0 for plain PPO
    return RLCompute(env_steps=int(model.num_timesteps), samples=samples,
                     grad_steps=model._n_updates * math.ceil(rollout_size(model) / model.batch_size),
                     flops=flops, wall_s=wall_s)


def set_actor_frozen(model: PPO, frozen: bool) -> None:
    for p in actor_parameters(model.policy):
        p.requires_grad_(not frozen)


def finetune(
    model: PPO,
    cfg: RLConfig,
    on_checkpoint: CheckpointFn,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run PPO to the largest budget, calling `on_checkpoint` at every budget; one row per checkpoint.

    `on_checkpoint(rl_steps, model)` returns the row's evaluation columns; `on_row(row)` sees each full row.

    1. Critic warm-up: value-only PPO updates with the actor frozen (its steps are counted as compute,
       not as RL budget, since the policy does not change).
    2. Learn segment by segment up to each budget with `reset_num_timesteps=False`, so the run is one
       continuous PPO run. The learning rate is constant (see policy.check_ppo_kwargs), so a checkpoint
       at budget B equals a separate run of budget B.
    3. Each row: RL compute, the anchor's `rl/anchor_*` columns (AnchoredPPO only, testbed/anchoring.py),
       the caller's columns, then the dip so far (`dip_columns`, when the caller gives a normalized score).
    """
    if cfg.learning_rate is not None:
        model.learning_rate = cfg.learning_rate
        model._setup_lr_schedule()
    bar = progress and sys.stderr.isatty()
    wall = 0.0
    if cfg.critic_warmup_steps > 0:
        set_actor_frozen(model, True)
        start = time.perf_counter()
        model.learn(cfg.critic_warmup_steps, reset_num_timesteps=True, progress_bar=bar)
        wall += time.perf_counter() - start
        set_actor_frozen(model, False)
        log.info("rl: critic warm-up %d steps in %.1f s", model.num_timesteps, wall)
    warmup_steps = int(model.num_timesteps)
    rows: list[dict[str, Any]] = []
    for target in checkpoint_steps(cfg, rollout_size(model)):
        todo = target - (model.num_timesteps - warmup_steps)
        if todo > 0:
            start = time.perf_counter()
            model.learn(todo, reset_num_timesteps=False, progress_bar=bar)
            wall += time.perf_counter() - start
        compute = rl_compute(model, wall)
        row = {
            "rl_steps": target,
            "compute/rl/warmup_env_steps": warmup_steps,
            **{f"compute/rl/{k}": v for k, v in vars(compute).items()},
            **anchor_columns(model),
        }
        row.update(on_checkpoint(target, model))
        if "eval/normalized_score" in row:
            row |= dip_columns([(r["rl_steps"], r["eval/normalized_score"]) for r in [*rows, row]])
        rows.append(row)
        if on_row is not None:  # e.g. write the row to results.json as soon as it exists
            on_row(row)
        log.info("rl: checkpoint at %d steps (%.1f s of PPO so far)", target, wall)
    return rows


def dip_columns(scores: list[tuple[int, float]]) -> dict[str, float | int | None]:
    """The fine-tuning dip so far, from (rl_steps, normalized score) per checkpoint, the first at 0 (the BC level).

    The dip is the first stretch of checkpoints below the BC level; it ends at the first checkpoint back at or
    above it (no tolerance: compare `rl/dip_depth` with the evaluation noise). Later dips are not counted.
    `rl/dip_min_normalized`: the lowest score in the dip (the BC level if the score never fell below it);
    `rl/dip_depth`: BC level minus that; `rl/dip_steps_to_recover`: rl_steps of the checkpoint that ends the
    dip, 0 if there was none, None while the score is still below the BC level.
    """
    base, lowest = scores[0][1], scores[0][1]
    recovered: int | None = 0
    for steps, score in scores[1:]:
        if score < base:
            lowest, recovered = min(lowest, score), None
        elif lowest < base:  # back at the BC level after falling below it
            recovered = steps
            break
    return {"rl/dip_min_normalized": lowest, "rl/dip_depth": base - lowest, "rl/dip_steps_to_recover": recovered}


@torch.no_grad()
def copy_policy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """The BC -> PPO handoff: a plain state-dict copy between policies of the same class and net_arch."""
    dst.load_state_dict(src.state_dict())
