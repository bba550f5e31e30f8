"""Behaviour cloning into the SB3 ActorCriticPolicy that PPO fine-tunes (same object, so handoff is exact)."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from tqdm.auto import tqdm

from testbed.config import BCConfig
from testbed.demonstrations import Demonstrations
from testbed.policy import actor_parameters

log = logging.getLogger(__name__)

BC_AGREEMENT_RANGE_FRACTION = 0.05
"""`bc.val_agreement`'s tolerance: a continuous action, unclipped, agrees with the demonstrated one when every dim
differs by at most this fraction (5%) of the action range.

Not `drift/agreement`'s tolerance (drift.DRIFT_AGREEMENT_RANGE_FRACTION, 0.1%, clipped, BC policy against the
current one): the two agreements measure different pairs at different tolerances and are not comparable."""


@dataclass
class BCResult:
    """What behaviour cloning did, for the results file and the compute accounting."""

    samples: int  # training samples processed (grad_steps x batch)
    grad_steps: int
    train_transitions: int
    val_transitions: int
    train_nll: float  # training NLL, mean over the last logged window
    val_nll: float  # held-out NLL at the end
    # Held-out fraction of deterministic actions equal to the demonstrated ones (Box: within
    # BC_AGREEMENT_RANGE_FRACTION of the range, unclipped); not comparable with `drift/agreement`.
    val_agreement: float
    wall_s: float
    curve: list[dict[str, float]] = field(default_factory=list)  # bc/... rows against bc/samples


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and held-out index arrays (at least one held-out transition)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


def to_tensors(policy: ActorCriticPolicy, demos: Demonstrations) -> tuple[torch.Tensor, torch.Tensor]:
    obs, _ = policy.obs_to_tensor(demos.observations)
    actions = torch.as_tensor(demos.actions, device=policy.device)
    return obs, actions  # type: ignore[return-value]


def nll_and_entropy(
    policy: ActorCriticPolicy, obs: torch.Tensor, actions: torch.Tensor, components: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean negative log-likelihood of `actions` and mean entropy of the policy at `obs`.

    Discrete, diagonal-Gaussian and gSDE actions take a direct path (the same numbers as SB3's distribution classes,
    checked by a test) because building torch distribution objects dominates the cost of a small BC step;
    other action spaces go through SB3's distribution. `components`: fit only the first k action components
    (MultiDiscrete sub-actions or Box dimensions), e.g. a scratchpad's env action without its scratch values.
    """
    features = policy.extract_features(obs, policy.pi_features_extractor)
    assert isinstance(features, torch.Tensor)  # one extractor for the actor
    latent = policy.mlp_extractor.forward_actor(features)
    out = policy.action_net(latent)
    dist = policy.action_dist
    if isinstance(dist, CategoricalDistribution):
        logp = F.log_softmax(out, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return F.nll_loss(logp, actions.long().reshape(-1)), entropy.mean()
    if isinstance(dist, MultiCategoricalDistribution) and components is not None:
        return _multi_categorical_nll(out, actions, list(dist.action_dims)[:components])
    k = out.shape[-1] if components is None else components  # fitted Box dimensions
    if isinstance(dist, DiagGaussianDistribution):
        return _gaussian_nll(out[:, :k], policy.log_std[:k].expand_as(out[:, :k]), actions[:, :k])
    if isinstance(dist, StateDependentNoiseDistribution) and dist.bijector is None:
        # gSDE: per-state std from the (detached unless learn_features) latent, as SB3's proba_distribution.
        latent_sde = latent if dist.learn_features else latent.detach()
        variance = torch.mm(latent_sde**2, dist.get_std(policy.log_std) ** 2)
        return _gaussian_nll(out[:, :k], 0.5 * torch.log(variance[:, :k] + dist.epsilon), actions[:, :k])
    if components is not None:
        raise ValueError(
            f"fitting some action components needs MultiDiscrete or Box actions, not {type(dist).__name__}"
        )
    sb3_dist = policy.get_distribution(obs)
    sb3_entropy = sb3_dist.entropy()
    assert sb3_entropy is not None  # every SB3 distribution of a PPO policy has a closed-form entropy
    return -sb3_dist.log_prob(actions).mean(), sb3_entropy.mean()


def _multi_categorical_nll(
    out: torch.Tensor, actions: torch.Tensor, dims: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL and entropy of the first len(dims) sub-actions of a MultiDiscrete action, summed over them."""
    logps = [F.log_softmax(lg, dim=-1) for lg in torch.split(out[:, : sum(dims)], dims, dim=1)]
    nll = torch.stack([F.nll_loss(lp, actions[:, i].long()) for i, lp in enumerate(logps)]).sum()
    entropy = torch.stack([-(lp.exp() * lp).sum(-1).mean() for lp in logps]).sum()
    return nll, entropy


def _gaussian_nll(
    mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL and entropy of a diagonal Gaussian, summed over action dimensions."""
    z = (actions.reshape(mean.shape) - mean) * torch.exp(-log_std)
    log_prob = (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
    return -log_prob.mean(), entropy.mean()


@torch.no_grad()
def agreement_with_demos(
    policy: ActorCriticPolicy, obs: torch.Tensor, actions: torch.Tensor, components: int | None = None
) -> float:
    """Fraction of states where the deterministic action equals the demonstrated one (`bc.val_agreement`), on the
    first `components` action components if given (the ones BC fits).

    Box: unclipped, every dim within BC_AGREEMENT_RANGE_FRACTION (5%) of the action range.
    """
    pred = policy.get_distribution(obs).mode()
    if components is not None:
        pred, actions = pred[:, :components], actions[:, :components]
    return actions_agree(policy.action_space, pred, actions)


def actions_agree(space: spaces.Space, pred: torch.Tensor, actions: torch.Tensor) -> float:
    """`bc.val_agreement`'s comparison of predicted and demonstrated actions: equal; Box unclipped, every dim (of
    the first pred.shape[-1]) within BC_AGREEMENT_RANGE_FRACTION of the range."""
    if pred.dtype.is_floating_point:
        assert isinstance(space, spaces.Box)
        span = torch.as_tensor(space.high - space.low, dtype=pred.dtype)[: pred.shape[-1]]
        return float(((pred - actions).abs() <= BC_AGREEMENT_RANGE_FRACTION * span).all(dim=-1).float().mean())
    return float((pred == actions.reshape(pred.shape)).float().mean())


def minibatches(
    x: torch.Tensor, y: torch.Tensor, batch: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless minibatches: each epoch shuffles (x, y) once and yields consecutive slices of the shuffled copy
    (views, no per-step gather); the last `len(x) % batch` samples of an epoch are left out."""
    n = len(x)
    while True:
        perm = torch.randperm(n, generator=generator)
        x_epoch, y_epoch = x[perm], y[perm]
        for start in range(0, n - batch + 1, batch):
            yield x_epoch[start : start + batch], y_epoch[start : start + batch]


class BCTrainer:
    """BC's state between calls: the held-out split, Adam on the actor, the minibatch stream and the counters.

    `run_to(k)` trains until k gradient steps in all, so one run can stop at several step counts (BC checkpoints,
    the scale study's BC-continuation control) and each stop equals a separate run of k steps: nothing in a step
    depends on the total.
    1. Hold out `val_fraction` of the transitions.
    2. Minibatches are slices of a once-per-epoch shuffled copy of the training tensors (`minibatches`; no
       DataLoader: slicing a tensor is much faster than collating samples one by one).
    3. Adam on the actor's parameters only; the critic is left for PPO.
    """

    def __init__(
        self,
        policy: ActorCriticPolicy,
        demos: Demonstrations,
        cfg: BCConfig,
        seed: int,
        lr: float | None = None,
        batch_size: int | None = None,
        components: int | None = None,
    ):
        start = time.perf_counter()
        self.policy, self.cfg, self.components = policy, cfg, components
        obs, actions = to_tensors(policy, demos)
        train_idx, val_idx = split(len(actions), cfg.val_fraction, seed)
        x_tr, y_tr = obs[train_idx], actions[train_idx]
        self.x_val, self.y_val = obs[val_idx], actions[val_idx]
        self.params = actor_parameters(policy)
        # fused: one kernel for all parameters; Adam's per-parameter work was the largest single cost of a BC step.
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr if lr is None else lr, fused=True)
        self.batch = min(cfg.batch_size if batch_size is None else batch_size, len(y_tr))
        self.batches = minibatches(x_tr, y_tr, self.batch, torch.Generator().manual_seed(seed))
        self.train_transitions = len(y_tr)
        self.steps, self.samples = 0, 0
        self.window: list[float] = []  # training NLLs since the last curve row
        self.curve: list[dict[str, float]] = []
        self.wall_s = time.perf_counter() - start

    def run_to(self, steps: int, bar: tqdm | None = None) -> None:
        """Train until `steps` gradient steps in all (none if already there); the policy is left in eval mode."""
        start = time.perf_counter()
        policy, optimizer, params = self.policy, self.optimizer, self.params
        # Read once into locals: the loop below is BC's hot path.
        ent_coef, l2_coef, log_every = float(self.cfg.ent_coef), float(self.cfg.l2_coef), int(self.cfg.log_every)
        policy.set_training_mode(True)
        while self.steps < steps:
            x, y = next(self.batches)
            nll, entropy = nll_and_entropy(policy, x, y, self.components)
            loss = nll - ent_coef * entropy
            if l2_coef:
                loss = loss + l2_coef * sum((p**2).sum() for p in params)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.steps += 1
            self.samples += self.batch
            self.window.append(nll.item())
            # Rows at multiples of log_every and at cfg.grad_steps, never at a stop: stops change no row.
            if self.steps % log_every == 0 or self.steps == self.cfg.grad_steps:
                self.curve.append(
                    {
                        "bc/samples": self.samples,
                        "bc/grad_steps": self.steps,
                        "bc/train_nll": float(np.mean(self.window)),
                        "bc/entropy": entropy.item(),
                        "bc/val_nll": _val_nll(policy, self.x_val, self.y_val, self.components),
                    }
                )
                self.window = []
            if bar is not None:
                bar.update(1)
        policy.set_training_mode(False)
        self.wall_s += time.perf_counter() - start

    def _train_nll(self) -> float:
        """The mean training NLL since the last curve row, as a run ending here would log it."""
        if self.window:
            return float(np.mean(self.window))
        return self.curve[-1]["bc/train_nll"] if self.curve else math.nan

    def result(self) -> BCResult:
        """What BC did so far."""
        return BCResult(
            samples=self.samples,
            grad_steps=self.steps,
            train_transitions=self.train_transitions,
            val_transitions=len(self.y_val),
            train_nll=self._train_nll(),
            val_nll=_val_nll(self.policy, self.x_val, self.y_val, self.components),
            val_agreement=agreement_with_demos(self.policy, self.x_val, self.y_val, self.components),
            wall_s=self.wall_s,
            curve=list(self.curve),
        )


class Trainer(Protocol):
    """What train_bc drives: BCTrainer, or recurrent.RecurrentBCTrainer for a recurrent policy."""

    def run_to(self, steps: int, bar: tqdm | None = None) -> None: ...

    def result(self) -> BCResult: ...


def train_bc(
    policy: ActorCriticPolicy,
    demos: Demonstrations,
    cfg: BCConfig,
    seed: int,
    progress: bool = True,
    on_checkpoint: Callable[[BCResult], None] | None = None,
    trainer: Trainer | None = None,
) -> BCResult:
    """Fit the actor to the demonstrations by NLL (+ optional entropy bonus and L2), in place (see BCTrainer).

    At each of `cfg.checkpoints` below `cfg.grad_steps`, `on_checkpoint` gets the result so far while the policy
    holds those weights (its own evaluation must leave them as they are). `trainer`: one prepared by the caller
    (a scratchpad's fitting some action components, a recurrent policy's); by default BCTrainer(policy, demos, cfg,
    seed).
    """
    trainer = trainer if trainer is not None else BCTrainer(policy, demos, cfg, seed)
    stops = sorted({k for k in cfg.checkpoints if k < cfg.grad_steps} | {cfg.grad_steps})
    with tqdm(total=cfg.grad_steps, desc="bc", disable=not (progress and sys.stderr.isatty())) as bar:
        for k in stops:
            trainer.run_to(k, bar)
            if k < cfg.grad_steps and on_checkpoint is not None:
                on_checkpoint(trainer.result())
    result = trainer.result()
    log.info(
        "bc: %d steps, %d samples, val NLL %.3f, val agreement %.3f in %.1f s",
        result.grad_steps,
        result.samples,
        result.val_nll,
        result.val_agreement,
        result.wall_s,
    )
    return result


@torch.no_grad()
def _val_nll(
    policy: ActorCriticPolicy, obs: torch.Tensor, actions: torch.Tensor, components: int | None = None
) -> float:
    return float(nll_and_entropy(policy, obs, actions, components)[0])
