"""Anchoring PPO's actor to the BC policy: (anchor config, BC snapshot, demo states) -> AnchoredPPO's extra loss.

Three terms (Wolczyk et al. 2024, "Fine-tuning RL models is secretly a forgetting mitigation problem"), each on
the actor only, never the critic:

- `bc_kl`: mean KL(pi_bc || pi) on a minibatch of demonstration states (a BC loss toward the BC policy's
  action distribution, not toward the demonstrated actions);
- `kickstart`: the same KL on the states of PPO's current rollout minibatch (states the current policy visits);
- `ewc`: sum_i F_i (theta_bc_i - theta_i)^2 over the actor's parameters, with F the diagonal Fisher of the BC
  policy on demonstration states (one action sampled from pi_bc per state).

PPO's loss becomes `PPO loss + c_u x term`, with c_u the coefficient at the u-th update after the critic warm-up
(`rl.anchor.decay`: constant, `exp` or `linear`, see `anchor_coef`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy

from testbed.compute import actor_params, forward_flops, train_flops
from testbed.config import AnchorConfig
from testbed.policy import actor_parameters, kl_per_state, snapshot


def anchor_coef(cfg: AnchorConfig, update: int, rollout: int) -> float:
    """The coefficient at the `update`-th anchored PPO update (0-based; one update per rollout of `rollout` steps).

    `exp`: coef x decay_rate^update. `linear`: coef x max(0, 1 - update x rollout / decay_steps), i.e. linear in
    the RL env steps collected before this update's rollout, reaching 0 at `decay_steps`.
    """
    if cfg.decay == "exp":
        return cfg.coef * cfg.decay_rate**update
    if cfg.decay == "linear":
        return cfg.coef * max(0.0, 1.0 - update * rollout / cfg.decay_steps)
    return cfg.coef


def mean_kl(bc: ActorCriticPolicy, policy: ActorCriticPolicy, obs: th.Tensor) -> th.Tensor:
    """Mean KL(pi_bc || pi) over a batch of observations; the gradient flows into `policy`'s actor only."""
    with th.no_grad():
        d_bc = bc.get_distribution(obs)
    return kl_per_state(d_bc, policy.get_distribution(obs)).mean()


def diagonal_fisher(bc: ActorCriticPolicy, obs: th.Tensor, seed: int) -> list[th.Tensor]:
    """Diagonal Fisher of the BC actor, E_{s ~ obs, a ~ pi_bc(.|s)} [(d log pi_bc(a|s) / d theta_i)^2].

    One action sampled per state, one backward pass per state (the squared gradients must be per sample), in
    the order of `policy.actor_parameters`. The sampling uses its own seeded RNG, so it shifts no later draw.
    """
    model = snapshot(bc)
    model.requires_grad_(True)  # a differentiable copy; `bc` stays frozen
    params = actor_parameters(model)
    with th.random.fork_rng(devices=[]), th.no_grad():
        th.manual_seed(seed)
        actions = model.get_distribution(obs).sample()
    fisher = [th.zeros_like(p) for p in params]
    for i in range(len(obs)):
        log_prob = model.get_distribution(obs[i : i + 1]).log_prob(actions[i : i + 1]).sum()
        grads = th.autograd.grad(log_prob, params, allow_unused=True)
        for f, g in zip(fisher, grads, strict=True):
            if g is not None:
                f += g.detach() ** 2
    return [f / len(obs) for f in fisher]


def ewc_penalty(policy: ActorCriticPolicy, star: list[th.Tensor], fisher: list[th.Tensor]) -> th.Tensor:
    """sum_i F_i (theta*_i - theta_i)^2 over the actor's parameters (theta* = the BC weights)."""
    params = actor_parameters(policy)
    return th.stack([(f * (s - p) ** 2).sum() for p, s, f in zip(params, star, fisher, strict=True)]).sum()


class Anchor:
    """The frozen BC policy and the term that pulls PPO's actor toward it, with its schedule and statistics."""

    def __init__(self, cfg: AnchorConfig, bc: ActorCriticPolicy, demo_obs: np.ndarray, seed: int, batch_size: int):
        """`bc`: a frozen BC snapshot (policy.snapshot); `demo_obs`: (n, *obs_shape) demonstration states;
        `batch_size`: demonstration states per bc_kl minibatch unless `cfg.batch_size` is set."""
        if cfg.kind not in ("bc_kl", "kickstart", "ewc"):
            raise ValueError(f"rl.anchor.kind='{cfg.kind}' is not an anchor")
        self.cfg = cfg
        self.bc = bc
        self.demo_obs: th.Tensor = bc.obs_to_tensor(demo_obs)[0]  # type: ignore[assignment]
        self.batch_size = cfg.batch_size or batch_size
        self.generator = th.Generator().manual_seed(seed)  # demo minibatches; never the global RNG
        self.updates = 0  # anchored PPO updates so far (the schedule's u)
        self.flops = 0  # FLOPs of the anchor's own passes (see `term_flops`)
        self.window: list[tuple[float, float]] = []  # (coef, term) per minibatch since the last checkpoint
        if cfg.kind == "ewc":
            rows = np.random.default_rng(seed).permutation(len(self.demo_obs))[: cfg.fisher_states]
            self.star = [p.detach().clone() for p in actor_parameters(bc)]
            self.fisher = diagonal_fisher(bc, self.demo_obs[th.as_tensor(np.sort(rows))], seed)
            self.flops += train_flops(actor_params(bc), len(rows))

    def term(self, policy: ActorCriticPolicy, rollout_obs: th.Tensor | None) -> th.Tensor:
        """The anchor term (before its coefficient) for one PPO minibatch whose states are `rollout_obs`."""
        if self.cfg.kind == "ewc":
            return ewc_penalty(policy, self.star, self.fisher)
        if self.cfg.kind == "kickstart":
            if rollout_obs is None:
                raise RuntimeError("kickstart: no rollout minibatch was seen before the optimizer step")
            obs = rollout_obs
        else:
            obs = self.demo_obs[th.randint(len(self.demo_obs), (self.batch_size,), generator=self.generator)]
        # BC forward (2 x params) and the actor's forward + backward (6 x params) on each state.
        self.flops += forward_flops(actor_params(policy), len(obs)) + train_flops(actor_params(policy), len(obs))
        return mean_kl(self.bc, policy, obs)

    def drain_columns(self) -> dict[str, Any]:
        """Checkpoint-row columns, averaged over the minibatches since the last call, and empty the window.

        Call once per checkpoint: a second call sees an empty window (None for the term, loss and coefficient).
        """
        coefs, terms = zip(*self.window, strict=True) if self.window else ((), ())
        self.window = []
        term = float(np.mean(terms)) if terms else None
        return {
            "rl/anchor_term": term,
            "rl/anchor_loss": float(np.mean(np.multiply(coefs, terms))) if terms else None,
            "rl/anchor_coef": coefs[-1] if coefs else None,
            "rl/anchor_updates": self.updates,
            "compute/rl/anchor_flops": self.flops,
        }


@contextmanager
def _replaced(obj: Any, name: str, fn: Callable[..., Any]) -> Iterator[None]:
    """Shadow `obj.name` with `fn` on this instance only, restoring what was there on exit."""
    had, old = name in vars(obj), vars(obj).get(name)
    setattr(obj, name, fn)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


class AnchoredPPO(PPO):
    """SB3 PPO whose loss gains `coef x anchor term` on every minibatch; plain PPO while `anchor` is None."""

    anchor: Anchor | None = None  # attached after BC, since the anchor needs the BC snapshot (`attach_anchor`)

    def train(self) -> None:
        """PPO's own update (SB3's PPO.train, unchanged), with the anchor's gradient added on every minibatch.

        Why not a copy of PPO.train's 100-line loop with one more term: SB3 2.9 builds the loss inside train()
        with no hook for an extra term, and a copy would silently drift from SB3's. Instead this relies on the
        loop's order per minibatch, `policy.evaluate_actions(obs, ...)`, `optimizer.zero_grad()`,
        `loss.backward()`, gradient clipping, `optimizer.step()`, and for the duration of super().train():
        1. evaluate_actions records the minibatch's states (kickstarting's states);
        2. zero_grad, right after zeroing, backpropagates `coef x term`; loss.backward() then accumulates PPO's
           gradient onto it, so clipping and the step see grad(PPO loss + coef x term), exactly as if the term
           were in the loss (tests/unit/test_anchoring.py checks this gradient);
        3. a step pre-hook checks that the term was added before every step, so a change in SB3's order fails
           loudly instead of silently dropping the anchor.
        While the actor is frozen (critic warm-up) the anchor is off and its schedule does not advance.
        """
        anchor = self.anchor
        if anchor is None or not any(p.requires_grad for p in actor_parameters(self.policy)):
            super().train()
            return
        coef = anchor_coef(anchor.cfg, anchor.updates, self.n_steps * self.n_envs)
        terms: list[float] = []
        with self._anchor_every_minibatch(anchor, coef, terms):
            super().train()
        anchor.updates += 1
        anchor.window += [(coef, t) for t in terms]
        mean_term = float(np.mean(terms)) if terms else math.nan
        self.logger.record("train/anchor_coef", coef)
        self.logger.record(f"train/anchor_{anchor.cfg.kind}", mean_term)
        self.logger.record("train/anchor_loss", coef * mean_term)

    @contextmanager
    def _anchor_every_minibatch(self, anchor: Anchor, coef: float, terms: list[float]) -> Iterator[None]:
        policy, optimizer = self.policy, self.policy.optimizer
        state: dict[str, Any] = {"obs": None, "added": False}
        evaluate_actions, zero_grad = policy.evaluate_actions, optimizer.zero_grad

        def evaluate_and_record(obs: th.Tensor, *args: Any, **kwargs: Any) -> Any:
            state["obs"] = obs
            return evaluate_actions(obs, *args, **kwargs)

        def zero_grad_then_anchor(*args: Any, **kwargs: Any) -> None:
            zero_grad(*args, **kwargs)
            term = anchor.term(policy, state["obs"])
            (coef * term).backward()
            terms.append(float(term.detach()))
            state["added"] = True

        def check_added(*_: Any) -> None:
            if not state["added"]:
                raise RuntimeError("AnchoredPPO: SB3's PPO.train stepped without zero_grad; the anchor was not added")
            state["added"] = False

        handle = optimizer.register_step_pre_hook(check_added)
        try:
            with (
                _replaced(policy, "evaluate_actions", evaluate_and_record),
                _replaced(optimizer, "zero_grad", zero_grad_then_anchor),
            ):
                yield
        finally:
            handle.remove()


def ppo_class(cfg: AnchorConfig) -> type[PPO]:
    """AnchoredPPO when an anchor is configured, else SB3's PPO (plain fine-tuning runs SB3's code untouched)."""
    return PPO if cfg.kind == "none" else AnchoredPPO


def attach_anchor(model: PPO, cfg: AnchorConfig, bc: ActorCriticPolicy, demo_obs: np.ndarray, seed: int) -> None:
    """Anchor `model`'s actor to the frozen BC snapshot `bc` (no-op for kind none)."""
    if cfg.kind == "none":
        return
    if not isinstance(model, AnchoredPPO):
        raise TypeError(f"rl.anchor.kind='{cfg.kind}' needs an AnchoredPPO model (see ppo_class), got {type(model)}")
    model.anchor = Anchor(cfg, bc, demo_obs, seed, batch_size=model.batch_size)


def drain_anchor_columns(model: PPO) -> dict[str, Any]:
    """The anchor's checkpoint-row columns (`rl/anchor_*`, `compute/rl/anchor_flops`), emptying its window (see
    `Anchor.drain_columns`); none for plain PPO."""
    anchor = getattr(model, "anchor", None)
    return anchor.drain_columns() if anchor is not None else {}


def anchor_flops(model: PPO) -> int:
    """FLOPs spent on the anchor so far (0 for plain PPO), part of `compute/rl/flops`."""
    anchor = getattr(model, "anchor", None)
    return anchor.flops if anchor is not None else 0
