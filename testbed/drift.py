"""Drift of a policy against its BC snapshot: (bc policy, current policy, probe states) -> metric dict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import nn

from testbed.config import EvalConfig
from testbed.policy import action_distribution, kl_per_state

TOLERANCES: tuple[float, ...] = tuple(EvalConfig().sparsity_tols)
"""Absolute tolerances for update sparsity: a parameter counts as unchanged when |w - w_bc| <= tol.

The default of `eval.sparsity_tols` (config.py), the one place these numbers are written."""

RELATIVE_TOLERANCES: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
"""Tolerances relative to a layer's scale for `moved@<rtol>`: a parameter moved when |w - w_bc| > rtol * the RMS
of its layer at w_bc. Always computed, not a config option: they make update sparsity comparable across widths
(see weight_drift)."""

DRIFT_AGREEMENT_RANGE_FRACTION = 1e-3
"""`drift/agreement`'s tolerance: continuous actions, both clipped to the bounds, agree when every dim differs by
at most this fraction (0.1%) of the action range.

Not `bc.val_agreement`'s tolerance (bc.BC_AGREEMENT_RANGE_FRACTION, 5%, unclipped, against the demonstrated
actions): the two agreements measure different pairs at different tolerances and are not comparable."""

# SB3 parameter-name prefix -> (side, layer-name prefix). The critic is reported apart because BC never
# trains it. SB3 calls both the critic body and its head "value_net", so the head is renamed.
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("mlp_extractor.policy_net.", "actor", "policy_net."),
    ("mlp_extractor.value_net.", "critic", "value_net."),
    ("action_net", "actor", "action_net"),
    ("value_net", "critic", "value_net_head"),
    ("log_std", "actor", "log_std"),
    # A shared features extractor is listed once under "features_extractor"; BC trains it with the actor.
    ("features_extractor.", "actor", "features_extractor."),
    ("pi_features_extractor.", "actor", "features_extractor."),
    ("vf_features_extractor.", "critic", "features_extractor."),
    # A recurrent policy's LSTMs (sb3-contrib), each one layer group on its side.
    ("lstm_actor.", "actor", "lstm_actor"),
    ("lstm_critic.", "critic", "lstm_critic"),
)


# ---------------------------------------------------------------------------------------------- weights


def _layer_of(param_name: str) -> str:
    """Layer group of an SB3 parameter: 'mlp_extractor.policy_net.0.weight' -> 'actor/policy_net.0'."""
    for prefix, side, renamed in _GROUPS:
        if param_name.startswith(prefix):
            rest = param_name[len(prefix) :]
            module = rest.rsplit(".", 1)[0] if "." in rest else ""
            return f"{side}/{renamed}{module}"
    return "other/" + param_name.rsplit(".", 1)[0]


def _group_params(policy: nn.Module) -> dict[str, list[tuple[str, th.Tensor]]]:
    """Parameters grouped by layer, in module order."""
    groups: dict[str, list[tuple[str, th.Tensor]]] = {}
    for name, param in policy.named_parameters():
        groups.setdefault(_layer_of(name), []).append((name, param.detach()))
    return groups


def effective_rank(delta: th.Tensor) -> float:
    """Roy & Vetterli (2007) effective rank: exp(entropy of normalised singular values); 0 if all zero."""
    s = th.linalg.svdvals(delta.double())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(th.exp(-(p * p.log()).sum()))


def _vector_metrics(w_bc: th.Tensor, w: th.Tensor, scale: th.Tensor, tolerances: Sequence[float]) -> dict[str, float]:
    """Relative change, cosine similarity, sparsity and scale-relative movement of the flat update w - w_bc.

    `scale` holds, per parameter, the RMS of its layer group at w_bc (the same shape as w_bc).
    """
    w_bc, w = w_bc.double(), w.double()
    delta = w - w_bc
    n_bc, n_cur, n_delta = float(w_bc.norm()), float(w.norm()), float(delta.norm())
    out: dict[str, float] = {}
    # Zero reference norms (e.g. a fresh log_std) make the ratios undefined unless nothing moved.
    if n_bc > 0:
        out["rel_change"] = n_delta / n_bc
    else:
        out["rel_change"] = 0.0 if n_delta == 0 else math.nan
    if n_bc > 0 and n_cur > 0:
        out["cosine"] = float(th.dot(w_bc, w)) / (n_bc * n_cur)
    else:
        out["cosine"] = 1.0 if n_delta == 0 else math.nan
    for tol in tolerances:
        out[f"sparsity@{tol:.0e}"] = float((delta.abs() <= tol).double().mean())
    # A zero scale (a layer that is all zeros at w_bc) makes the threshold 0: any nonzero change moved.
    for rtol in RELATIVE_TOLERANCES:
        out[f"moved@{rtol:.0e}"] = float((delta.abs() > rtol * scale.double()).double().mean())
    return out


def _rms(w: th.Tensor) -> float:
    """Root-mean-square of a flat parameter vector, in float64."""
    return float(w.double().pow(2).mean().sqrt())


def weight_drift(bc: nn.Module, cur: nn.Module, tolerances: Sequence[float] = TOLERANCES) -> dict[str, float]:
    """Weight drift per layer and for `actor`, `critic` and `all`, as `drift/weights/<group>/<metric>`.

    Metrics: `rel_change` = ||W - W_bc|| / ||W_bc||, `cosine` of the flattened parameters, `sparsity@<tol>`
    = fraction of parameters with |W - W_bc| <= tol (absolute tolerance), `moved@<rtol>` (RELATIVE_TOLERANCES)
    = fraction of parameters with |W - W_bc| > rtol * scale, and per layer `eff_rank` of the 2-D weight update
    (layers without a 2-D weight, such as log_std, have none).

    `moved@<rtol>` exists because an absolute tolerance means different things for layers of different scale
    and width: at initialisation a layer of fan-in n has weights of size about 1/sqrt(n), so |delta| <= 1e-6 is
    a smaller move, relative to the weight, in a 64-wide layer than in a 1024-wide one. The scale is the
    root-mean-square of the parameter's layer group at the reference weights `bc` (weight and bias together);
    a group whose reference RMS is 0 (a fresh zero log_std) counts any nonzero change as moved. In the
    `actor`, `critic` and `all` totals each parameter is compared against its own layer's scale.
    """
    bc_groups, cur_groups = _group_params(bc), _group_params(cur)
    if bc_groups.keys() != cur_groups.keys():
        raise ValueError(f"policies differ in layers: {sorted(bc_groups)} vs {sorted(cur_groups)}")
    metrics: dict[str, float] = {}
    flat: dict[str, tuple[list[th.Tensor], list[th.Tensor], list[th.Tensor]]] = {
        "actor": ([], [], []),
        "critic": ([], [], []),
        "all": ([], [], []),
    }
    for layer, bc_params in bc_groups.items():
        w_bc = th.cat([p.flatten() for _, p in bc_params])
        w = th.cat([p.flatten() for _, p in cur_groups[layer]])
        scale = th.full(w_bc.shape, _rms(w_bc), dtype=th.float64)
        for key, value in _vector_metrics(w_bc, w, scale, tolerances).items():
            metrics[f"drift/weights/{layer}/{key}"] = value
        # 1. Effective rank of the layer's 2-D weight update; an LSTM's two ([W_ih | W_hh]) side by side.
        updates = [
            p.double() - p_bc.double()
            for (_, p_bc), (_, p) in zip(bc_params, cur_groups[layer], strict=True)
            if p.dim() == 2
        ]
        if updates:
            metrics[f"drift/weights/{layer}/eff_rank"] = effective_rank(th.cat(updates, dim=1))
        # 2. Collect the flat vectors, and each parameter's own layer scale, for the per-side and overall totals.
        for side in (layer.split("/", 1)[0], "all"):
            if side in flat:
                for acc, vec in zip(flat[side], (w_bc, w, scale), strict=True):
                    acc.append(vec)
    for side, (bcs, curs, scales) in flat.items():
        if bcs:
            for key, value in _vector_metrics(th.cat(bcs), th.cat(curs), th.cat(scales), tolerances).items():
                metrics[f"drift/weights/{side}/{key}"] = value
    return metrics


def weight_drift_by_layer(metrics: Mapping[str, float]) -> list[dict[str, float | str]]:
    """One row per layer (layer, rel_change, cosine, sparsity@tol..., moved@rtol..., eff_rank) from `weight_drift`
    output: every per-layer metric it holds becomes a column."""
    rows: dict[str, dict[str, float | str]] = {}
    for key, value in metrics.items():
        if not key.startswith("drift/weights/"):
            continue
        group, metric = key[len("drift/weights/") :].rsplit("/", 1)
        if "/" not in group:  # actor / critic / all totals are not layers
            continue
        rows.setdefault(group, {"layer": group})[metric] = value
    return list(rows.values())


# ------------------------------------------------------------------------------------- representations


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two (n_samples, n_features) activation matrices, in float64.

    Returns nan when either matrix is constant over samples (nothing to compare).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"need the same samples, got {x.shape[0]} and {y.shape[0]} rows")
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if denom == 0:
        return math.nan
    return float(np.linalg.norm(y.T @ x) ** 2 / denom)


def _features(policy: ActorCriticPolicy, obs: np.ndarray) -> th.Tensor:
    """Actor input features for a batch of raw observations."""
    obs_t, _ = policy.obs_to_tensor(obs)
    pre = preprocess_obs(obs_t, policy.observation_space, normalize_images=policy.normalize_images)
    return policy.pi_features_extractor(pre)


def hidden_activations(policy: ActorCriticPolicy, obs: np.ndarray) -> dict[str, np.ndarray]:
    """Actor activations after each activation of `mlp_extractor.policy_net`: {`policy_net.<i>`: (n, d)}."""
    out: dict[str, np.ndarray] = {}
    with th.no_grad():
        h = _features(policy, obs)
        for i, module in enumerate(policy.mlp_extractor.policy_net):
            h = module(h)
            if not isinstance(module, nn.Linear):
                out[f"policy_net.{i}"] = h.cpu().numpy()
    return out


def representation_drift(
    bc: ActorCriticPolicy, cur: ActorCriticPolicy, probes: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Linear CKA between BC and current actor activations, as `drift/cka/<probe>/<layer>`."""
    metrics: dict[str, float] = {}
    for probe, obs in probes.items():
        acts_bc, acts = hidden_activations(bc, obs), hidden_activations(cur, obs)
        for layer, x in acts_bc.items():
            metrics[f"drift/cka/{probe}/{layer}"] = linear_cka(x, acts[layer])
    return metrics


# ------------------------------------------------------------------------------------------- behaviour


def agreement_with_bc(space: spaces.Space, a_bc: th.Tensor, a: th.Tensor) -> dict[str, float]:
    """Fraction of states where the BC and current deterministic actions agree (`drift/agreement`, see
    DRIFT_AGREEMENT_RANGE_FRACTION); for Box also their mean absolute difference."""
    if not isinstance(space, spaces.Box):
        a_bc, a = a_bc.reshape(len(a_bc), -1), a.reshape(len(a), -1)
        return {"agreement": float((a_bc == a).all(dim=1).double().mean())}
    # 1. Compare the actions the env would execute: SB3 clips Box actions to the bounds.
    low, high = (th.as_tensor(b, dtype=a.dtype, device=a.device) for b in (space.low, space.high))
    a_bc, a = th.clamp(a_bc, low, high), th.clamp(a, low, high)
    # 2. Tolerance relative to the range; unbounded dims fall back to an absolute tolerance.
    span = th.where(th.isfinite(high - low), high - low, th.ones_like(low))
    diff = (a_bc - a).abs()
    return {
        "agreement": float((diff <= DRIFT_AGREEMENT_RANGE_FRACTION * span).all(dim=1).double().mean()),
        "action_abs_diff": float(diff.mean()),
    }


def expert_loglik(policy: ActorCriticPolicy, obs: np.ndarray, actions: np.ndarray) -> float:
    """Mean log-likelihood of the expert's actions under `policy` (summed over action dims)."""
    with th.no_grad():
        dist = action_distribution(policy, obs)
        acts = th.as_tensor(np.asarray(actions), device=policy.device)
        if isinstance(policy.action_space, spaces.Discrete):
            acts = acts.reshape(-1)  # SB3's Categorical wants shape (n,)
        return float(dist.log_prob(acts).double().mean())


def behaviour_drift(
    bc: ActorCriticPolicy,
    cur: ActorCriticPolicy,
    probes: Mapping[str, np.ndarray],
    expert_obs: np.ndarray,
    expert_actions: np.ndarray,
) -> dict[str, float]:
    """Behaviour drift: `drift/kl/<probe>` = mean KL(pi_bc || pi), `drift/agreement/<probe>`, for Box also
    `drift/action_abs_diff/<probe>`, and `drift/expert_loglik` (current) / `drift/expert_loglik_bc`.

    Agreement is between the BC policy's and the current policy's deterministic actions: exact equality for
    discrete actions; for Box actions, both clipped to the bounds, every dim within
    DRIFT_AGREEMENT_RANGE_FRACTION (0.1%) of the action range. It is not comparable with `bc.val_agreement`
    (the BC policy against the demonstrated actions, unclipped, within 5% of the range).
    """
    metrics: dict[str, float] = {}
    with th.no_grad():
        for probe, obs in probes.items():
            d_bc, d_cur = action_distribution(bc, obs), action_distribution(cur, obs)
            metrics[f"drift/kl/{probe}"] = float(kl_per_state(d_bc, d_cur).double().mean())
            agree = agreement_with_bc(cur.action_space, d_bc.mode(), d_cur.mode())
            for key, value in agree.items():
                metrics[f"drift/{key}/{probe}"] = value
    metrics["drift/expert_loglik"] = expert_loglik(cur, expert_obs, expert_actions)
    metrics["drift/expert_loglik_bc"] = expert_loglik(bc, expert_obs, expert_actions)
    return metrics


# ------------------------------------------------------------------------------------------ checkpoint


def probe_sample(obs: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed random subset of `size` states (all of them if fewer), so probes cost the same everywhere."""
    if len(obs) <= size:
        return obs
    idx = np.sort(np.random.default_rng(seed).choice(len(obs), size=size, replace=False))
    return obs[idx]


def drift_table(metrics: Mapping[str, float], probes: Sequence[str]) -> list[dict[str, float | str]]:
    """`weight_drift_by_layer` plus, for each hidden Linear layer, the CKA of its activation output on every probe."""
    rows = weight_drift_by_layer(metrics)
    for row in rows:
        layer = str(row["layer"])
        if layer.startswith("actor/policy_net."):
            # policy_net.<i> is a Linear; its activation output is policy_net.<i+1> in hidden_activations.
            act = f"policy_net.{int(layer.rsplit('.', 1)[1]) + 1}"
            for probe in probes:
                row[f"cka/{probe}"] = metrics.get(f"drift/cka/{probe}/{act}", float("nan"))
    return rows


def checkpoint_drift(
    bc: ActorCriticPolicy,
    cur: ActorCriticPolicy,
    probes: Mapping[str, np.ndarray],
    expert_obs: np.ndarray,
    expert_actions: np.ndarray,
    tolerances: Sequence[float] = TOLERANCES,
) -> tuple[dict[str, float], list[dict[str, float | str]]]:
    """Every drift metric of `cur` against the BC snapshot, and the per-layer table."""
    metrics = weight_drift(bc, cur, tolerances)
    metrics |= representation_drift(bc, cur, probes)
    metrics |= behaviour_drift(bc, cur, probes, expert_obs, expert_actions)
    return metrics, drift_table(metrics, list(probes))
