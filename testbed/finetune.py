"""PPO from the BC policy (or from scratch): critic warm-up, then checkpoints at each RL budget."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import RolloutBufferSamples

from testbed.anchoring import anchor_flops, drain_anchor_columns
from testbed.compute import actor_critic_params, rollout_flops, train_flops
from testbed.config import RLConfig
from testbed.policy import actor_parameters

log = logging.getLogger(__name__)

# Called at each checkpoint with (rl_steps, model); returns the row's evaluation and drift columns.
CheckpointFn = Callable[[int, PPO], dict[str, Any]]


@dataclass
class RLCompute:
    """Cumulative RL work so far, warm-up included: env steps from SB3, updates as counted by `count_updates`."""

    env_steps: int  # environment steps collected, warm-up included
    samples: int  # samples in the minibatches an optimizer step trained on (at most epochs x rollout size)
    grad_steps: int  # optimizer steps taken
    flops: int  # rollout forward passes + forward/backward on `samples` + the anchor's passes (see compute.py)
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


@dataclass
class UpdateCount:
    """PPO updates seen so far by `count_updates` on `optimizer` and `buffer`."""

    optimizer: torch.optim.Optimizer
    buffer: RolloutBuffer
    steps: int = 0  # optimizer steps taken
    samples: int = 0  # samples in the minibatches those steps trained on
    batch: int = 0  # size of the minibatch the buffer yielded last, the one the next step trains on


@contextmanager
def count_updates(model: PPO) -> Iterator[UpdateCount]:
    """Count `model`'s optimizer steps, and the samples each trains on, while inside.

    Why not SB3's `_n_updates`: it is private and adds one per epoch, also for the epoch that `target_kl` cut
    short, so it overcounts whenever PPO stops early. Why not `steps x batch_size`: an epoch's last minibatch may be
    smaller, and an early stop ends an update mid-epoch, so steps alone need each update's boundaries.
    Instead: PPO.train steps once per minibatch of `rollout_buffer.get`, after it is yielded and before the next
    one, so
    1. a wrapper around the buffer's `get` records the size of each minibatch as it is yielded;
    2. a step post-hook on the policy's optimizer (the one PPO, the critic warm-up and AnchoredPPO all step) adds
       one step and that size. The minibatch that trips `target_kl` is yielded but never stepped: not counted.
    """
    count = UpdateCount(model.policy.optimizer, model.rollout_buffer)
    buffer_get = count.buffer.get

    def get_and_record(batch_size: int | None = None) -> Generator[RolloutBufferSamples, None, None]:
        for batch in buffer_get(batch_size):
            # One advantage per sample, whatever the observation space; RecurrentPPO pads its sequences and
            # masks the padding out of the loss, so there the samples are the mask's.
            mask = getattr(batch, "mask", None)
            count.batch = int(mask.sum()) if mask is not None else len(batch.advantages)
            yield batch

    def on_step(*_: Any) -> None:
        count.steps += 1
        count.samples += count.batch

    handle = count.optimizer.register_step_post_hook(on_step)
    count.buffer.get = get_and_record  # type: ignore[method-assign]  # this instance only
    try:
        yield count
    finally:
        handle.remove()
        del count.buffer.get  # back to RolloutBuffer.get


def rl_compute(model: PPO, count: UpdateCount, wall_s: float) -> RLCompute:
    """RL compute so far: env steps from SB3, optimizer steps and samples from `count` (see `count_updates`)."""
    if model.policy.optimizer is not count.optimizer or model.rollout_buffer is not count.buffer:
        raise RuntimeError("the policy's optimizer or rollout buffer was replaced mid-run; its updates went uncounted")
    flops = rollout_flops(model.policy, model.num_timesteps)
    flops += train_flops(actor_critic_params(model.policy), count.samples)
    flops += anchor_flops(model)  # the anchor's own passes (testbed/anchoring.py), 0 for plain PPO
    return RLCompute(
        env_steps=int(model.num_timesteps), samples=count.samples, grad_steps=count.steps, flops=flops, wall_s=wall_s
    )


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
    3. Each row: RL compute so far (cumulative, warm-up included; steps and samples as `count_updates` saw
       them, so an update that `target_kl` stopped early counts only what it ran), the anchor's `rl/anchor_*`
       columns (AnchoredPPO only, testbed/anchoring.py), the caller's columns, then the dip so far
       (`dip_columns`, when the caller gives a normalized score).
    """
    if cfg.learning_rate is not None:
        model.learning_rate = cfg.learning_rate
        model._setup_lr_schedule()  # private SB3: pinned by requirements.lock, exercised by the budget tests
    bar = progress and sys.stderr.isatty()
    with count_updates(model) as count:  # from before the warm-up, whose optimizer steps are compute too
        wall = critic_warmup(model, cfg.critic_warmup_steps, bar)
        warmup_steps = int(model.num_timesteps)
        rows: list[dict[str, Any]] = []
        for target in checkpoint_steps(cfg, rollout_size(model)):
            todo = target - (model.num_timesteps - warmup_steps)
            if todo > 0:
                start = time.perf_counter()
                model.learn(todo, reset_num_timesteps=False, progress_bar=bar)
                wall += time.perf_counter() - start
            compute = rl_compute(model, count, wall)
            row = {
                "rl_steps": target,
                "compute/rl/warmup_env_steps": warmup_steps,
                **{f"compute/rl/{k}": v for k, v in vars(compute).items()},
                **drain_anchor_columns(model),
            }
            row.update(on_checkpoint(target, model))
            if "eval/normalized_score" in row:
                row |= dip_columns([(r["rl_steps"], r["eval/normalized_score"]) for r in [*rows, row]])
            rows.append(row)
            if on_row is not None:  # e.g. write the row to results.json as soon as it exists
                on_row(row)
            log.info("rl: checkpoint at %d steps (%.1f s of PPO so far)", target, wall)
    return rows


def critic_warmup(model: PPO, steps: int, progress_bar: bool) -> float:
    """Value-only PPO updates for `steps` env steps with the actor frozen; returns the seconds spent (0 if none)."""
    if steps <= 0:
        return 0.0
    set_actor_frozen(model, True)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=True, progress_bar=progress_bar)
    wall = time.perf_counter() - start
    set_actor_frozen(model, False)
    log.info("rl: critic warm-up %d steps in %.1f s", model.num_timesteps, wall)
    return wall


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
