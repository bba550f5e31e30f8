"""Sampling-and-voting at the BC policy: (BC policy, demonstrations, voting config) -> capability and cost per K.

Test-time scaffolding instead of RL (Li et al. 2024, "More agents is all you need"): K policies act by vote.

- `mode=seeds`: K BC policies vote, each with its deterministic action (its mode): the job's own BC policy and
  K-1 more trained on the same demonstrations with their own seeds (init, batch order, validation split).
  Inference costs K actor forward passes per step, training K x the BC compute.
- `mode=samples`: K actions sampled from the job's BC policy vote. One forward pass gives the whole action
  distribution, so inference costs 1 forward pass per step (the K draws are not counted) and training 1 x BC.

Vote rules. Discrete actions: plurality; a tie goes to the tied action with the highest probability summed over
the K members (a soft vote; in `samples` mode the policy's own most likely tied action), then to the lowest
action index. Box actions: the per-dimension median of the K actions, each clipped to the action bounds (for
even K the mean of the two middle values). With K = 1 the vote is the single member's action.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy

from testbed.bc import train_bc
from testbed.compute import StageCompute, actor_params, forward_flops, train_flops
from testbed.config import BCConfig, Config
from testbed.demonstrations import Demonstrations
from testbed.evaluate import ActFn, evaluate
from testbed.policy import action_distribution, rebuild


def plurality(votes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Discrete vote: (K, n) member actions and (K, n, A) member probabilities -> (n,) winning actions.

    Most votes wins; ties go to the highest summed probability, then to the lowest action index (argmax).
    """
    k, _, n_actions = probs.shape
    counts = (votes[..., None] == np.arange(n_actions)).sum(axis=0)  # (n, A)
    # The summed probability is at most K < K + 1, so it only orders actions with equal counts.
    return np.argmax(counts * (k + 1.0) + probs.sum(axis=0, dtype=np.float64), axis=-1)


def median_vote(actions: np.ndarray, space: spaces.Box) -> np.ndarray:
    """Box vote: (K, n, *shape) member actions -> (n, *shape) per-dimension median of the clipped actions."""
    return np.median(np.clip(actions, space.low, space.high), axis=0).astype(space.dtype)


def _check_space(space: spaces.Space) -> None:
    if not isinstance(space, spaces.Discrete | spaces.Box):
        raise ValueError(f"voting supports Discrete and Box action spaces, got {space}")


def committee_act(members: list[ActorCriticPolicy]) -> ActFn:
    """K policies vote with their deterministic actions; K = 1 acts exactly as `policy.predict(deterministic)`."""
    space = members[0].action_space
    _check_space(space)

    def act(obs: np.ndarray) -> np.ndarray:
        dists = [action_distribution(m, obs) for m in members]
        modes = np.stack([d.mode().cpu().numpy() for d in dists])
        if isinstance(space, spaces.Box):
            return median_vote(modes, space)
        probs = np.stack([d.distribution.probs.cpu().numpy() for d in dists])  # type: ignore[union-attr]
        return plurality(modes.reshape(len(members), -1), probs)

    return act


def samples_act(policy: ActorCriticPolicy, k: int, rng: np.random.Generator) -> ActFn:
    """K actions sampled from `policy` (one forward pass) vote; draws come from `rng`, not torch's global RNG."""
    space = policy.action_space
    _check_space(space)

    def act(obs: np.ndarray) -> np.ndarray:
        dist = action_distribution(policy, obs).distribution
        if isinstance(space, spaces.Box):
            loc, scale = dist.mean.cpu().numpy(), dist.stddev.cpu().numpy()  # type: ignore[union-attr]
            return median_vote(loc + scale * rng.standard_normal((k, *loc.shape)), space)
        probs = dist.probs.cpu().numpy().astype(np.float64)  # type: ignore[union-attr]
        # Inverse-CDF draws: the number of cumulative probabilities below a uniform number.
        u = rng.random((k, len(probs), 1))
        votes = np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)
        return plurality(votes, np.broadcast_to(probs, (k, *probs.shape)))

    return act


def member_seed(seed: int, index: int) -> int:
    """Seed of committee member `index` >= 1, derived from (job seed, index): jobs never share a member."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def train_members(
    bc: ActorCriticPolicy, demos: Demonstrations, cfg: BCConfig, seed: int, n: int
) -> tuple[list[ActorCriticPolicy], list[StageCompute]]:
    """`bc` plus n - 1 more BC policies of its class and arguments, each with its own seed; their BC compute.

    The first compute entry is empty: `bc`'s own BC compute is the caller's.
    """
    members, computes = [bc], [StageCompute()]
    for index in range(1, n):
        s = member_seed(seed, index)
        with th.random.fork_rng(devices=[]):  # a member's init never shifts the job's later draws
            th.manual_seed(s)
            policy = rebuild(bc)
        result = train_bc(policy, demos, cfg, s, progress=False)
        members.append(policy)
        computes.append(
            StageCompute(
                samples=result.samples,
                grad_steps=result.grad_steps,
                flops=train_flops(actor_params(policy), result.samples),
                wall_s=result.wall_s,
            )
        )
    return members, computes


def voting_compute(bc: ActorCriticPolicy, k: int, seeds: bool, train: StageCompute, eval_steps: int) -> dict[str, Any]:
    """`compute/voting/*` columns of one row; `train` is the BC compute of the policies that vote."""
    passes = k if seeds else 1
    per_step = passes * forward_flops(actor_params(bc), 1)
    return {
        "compute/voting/bc_policies": passes,
        "compute/voting/forward_passes_per_step": passes,
        "compute/voting/flops_per_step": per_step,
        "compute/voting/eval_flops": per_step * eval_steps,
        "compute/voting/train_flops": train.flops,
        "compute/voting/train_samples": train.samples,
        "compute/voting/train_wall_s": train.wall_s,
        "compute/total/flops": train.flops,  # training compute behind the committee (no RL), as in checkpoints
    }


def evaluate_voting(
    cfg: Config, bc: ActorCriticPolicy, demos: Demonstrations, refs: dict[str, float], bc_compute: StageCompute
) -> list[dict[str, Any]]:
    """One row per K in `voting.ks`: `voting/k`, `voting/mode`, the `eval/*` columns and `compute/voting/*`.

    `bc` is the job's frozen BC policy and `bc_compute` its BC compute. Evaluation uses the checkpoints' fixed
    evaluation episodes, so in `seeds` mode the K = 1 row equals the checkpoint at rl_steps 0.
    """
    ks, seeds = sorted(set(cfg.voting.ks)), cfg.voting.mode == "seeds"
    with th.random.fork_rng(devices=[]):  # voting runs before RL and must not shift RL's draws
        members, computes = train_members(bc, demos, cfg.bc, cfg.seed, max(ks) if seeds else 1)
        computes[0] = bc_compute
        rows = []
        for k in ks:
            act = committee_act(members[:k]) if seeds else samples_act(bc, k, np.random.default_rng(cfg.seed))
            start = time.perf_counter()
            cap = evaluate(cfg.env, act, cfg.eval.episodes, cfg.eval.seed)
            train = sum(computes[: k if seeds else 1], StageCompute())
            rows.append(
                {
                    "voting/k": k,
                    "voting/mode": cfg.voting.mode,
                    **cap.row(refs["random_return"], refs["expert_return"]),
                    "eval/wall_s": time.perf_counter() - start,
                    **voting_compute(bc, k, seeds, train, int(cap.lengths.sum())),
                }
            )
    return rows
