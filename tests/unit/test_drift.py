"""Drift metrics against known answers: CKA invariances, exact zero drift, constructed updates, manual KL."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from testbed import drift
from testbed.policy import snapshot


def make_policy(env_id: str, seed: int = 0, noise: float = 0.0) -> ActorCriticPolicy:
    """An SB3 PPO MlpPolicy (64, 64); `noise` perturbs every weight so policies differ in behaviour."""
    env = gym.make(env_id)
    th.manual_seed(seed)
    policy = ActorCriticPolicy(env.observation_space, env.action_space, lambda _: 3e-4, net_arch=[64, 64])
    if noise:
        gen = th.Generator().manual_seed(seed + 1000)
        with th.no_grad():
            for p in policy.parameters():
                p.add_(noise * th.randn(p.shape, generator=gen))
    return policy


def linear(net: th.nn.Module, index: int) -> th.nn.Linear:
    """Layer `index` of an SB3 Sequential body, typed for mypy."""
    layer = dict(net.named_children())[str(index)]
    assert isinstance(layer, th.nn.Linear)
    return layer


def sample_obs(env_id: str, n: int, seed: int = 0) -> np.ndarray:
    space = gym.make(env_id).observation_space
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)]).astype(np.float32)


@pytest.fixture(scope="module")
def cartpole() -> ActorCriticPolicy:
    return make_policy("CartPole-v1", noise=0.3)


# ----------------------------------------------------------------------------------------------- CKA


def test_cka_invariances() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert drift.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert drift.linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)
    assert drift.linear_cka(x, 3.5 * x + 2.0) == pytest.approx(1.0, abs=1e-12)


def test_cka_independent_vs_correlated() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 10)), rng.normal(size=(500, 10))
    independent = drift.linear_cka(x, y)
    correlated = drift.linear_cka(x, x + 0.3 * rng.normal(size=x.shape))
    assert independent < 0.1
    assert correlated > 0.8
    assert correlated > independent + 0.7


# ------------------------------------------------------------------------------------------- weights


def test_weight_drift_identical_is_exactly_zero(cartpole: ActorCriticPolicy) -> None:
    m = drift.weight_drift(cartpole, snapshot(cartpole))
    for key, value in m.items():
        metric = key.rsplit("/", 1)[1]
        expected = {"rel_change": 0.0, "cosine": 1.0, "eff_rank": 0.0}.get(metric, 1.0)  # sparsity -> 1
        if metric.startswith("moved@"):
            expected = 0.0
        assert value == pytest.approx(expected, abs=1e-12), key
    assert "drift/weights/actor/policy_net.0/rel_change" in m
    assert "drift/weights/critic/value_net_head/cosine" in m
    assert "drift/weights/all/sparsity@1e-06" in m
    assert "drift/weights/actor/policy_net.2/eff_rank" in m
    assert "drift/weights/actor/policy_net.0/moved@1e-02" in m
    assert "drift/weights/all/moved@1e-01" in m


def test_weight_drift_fresh_log_std_is_defined() -> None:
    policy = make_policy("Pendulum-v1")  # log_std starts at exactly 0
    m = drift.weight_drift(policy, snapshot(policy))
    assert m["drift/weights/actor/log_std/rel_change"] == 0.0
    assert m["drift/weights/actor/log_std/cosine"] == 1.0
    assert "drift/weights/actor/log_std/eff_rank" not in m


def test_perturbing_one_layer_moves_only_that_layer(cartpole: ActorCriticPolicy) -> None:
    bc, cur = cartpole, snapshot(cartpole)
    with th.no_grad():
        linear(cur.mlp_extractor.policy_net, 2).weight.add_(0.1)
    m = drift.weight_drift(bc, cur)
    moved = {k.rsplit("/", 1)[0] for k, v in m.items() if k.endswith("/rel_change") and v > 0}
    assert moved == {"drift/weights/actor/policy_net.2", "drift/weights/actor", "drift/weights/all"}
    assert m["drift/weights/critic/rel_change"] == 0.0
    # A constant update is rank 1, up to float32 rounding of (w + 0.1) - w.
    assert m["drift/weights/actor/policy_net.2/eff_rank"] == pytest.approx(1.0, abs=1e-3)


def test_rank_two_update_has_effective_rank_two(cartpole: ActorCriticPolicy) -> None:
    cur = snapshot(cartpole)
    layer = linear(cur.mlp_extractor.policy_net, 2).weight
    gen = th.Generator().manual_seed(0)
    u, _ = th.linalg.qr(th.randn(layer.shape[0], 2, generator=gen))
    v, _ = th.linalg.qr(th.randn(layer.shape[1], 2, generator=gen))
    with th.no_grad():
        layer.add_(1.0 * th.outer(u[:, 0], v[:, 0]) + 0.9 * th.outer(u[:, 1], v[:, 1]))
    m = drift.weight_drift(cartpole, cur)
    assert m["drift/weights/actor/policy_net.2/eff_rank"] == pytest.approx(2.0, abs=0.1)


def test_effective_rank_known_matrices() -> None:
    assert drift.effective_rank(th.eye(7)) == pytest.approx(7.0)
    assert drift.effective_rank(th.zeros(3, 4)) == 0.0


def test_sparse_update_gives_exact_sparsity(cartpole: ActorCriticPolicy) -> None:
    cur = snapshot(cartpole)
    weight = linear(cur.mlp_extractor.value_net, 0).weight
    n = weight.numel() + linear(cur.mlp_extractor.value_net, 0).bias.numel()
    k = 37
    with th.no_grad():
        weight.view(-1)[th.randperm(weight.numel(), generator=th.Generator().manual_seed(0))[:k]] += 1.0
    m = drift.weight_drift(cartpole, cur)
    for tol in drift.TOLERANCES:
        assert m[f"drift/weights/critic/value_net.0/sparsity@{tol:.0e}"] == (n - k) / n
    assert m["drift/weights/actor/sparsity@1e-08"] == 1.0


def test_weight_drift_by_layer_has_one_row_per_layer(cartpole: ActorCriticPolicy) -> None:
    rows = drift.weight_drift_by_layer(drift.weight_drift(cartpole, snapshot(cartpole)))
    layers = [r["layer"] for r in rows]
    assert layers == [
        "actor/policy_net.0", "actor/policy_net.2", "critic/value_net.0", "critic/value_net.2",
        "actor/action_net", "critic/value_net_head",
    ]  # fmt: skip
    assert set(rows[0]) == {"layer", "rel_change", "cosine", "eff_rank"} | {
        f"sparsity@{t:.0e}" for t in drift.TOLERANCES
    } | {f"moved@{r:.0e}" for r in drift.RELATIVE_TOLERANCES}


# ------------------------------------------------------------------------------ scale-relative movement


class TinyActor(th.nn.Module):
    """A hand-built actor named as SB3 names one: `mlp_extractor.policy_net.0` (4 -> 5, weights +-2 and biases +-1:
    RMS sqrt(85 / 25) = 1.844, while the max is 2 and the mean |w| 1.8), `action_net` (5 -> 1, every parameter
    +-0.01, RMS 0.01) and a zero `log_std` (RMS 0)."""

    def __init__(self) -> None:
        super().__init__()
        hidden = th.nn.Linear(4, 5)
        self.mlp_extractor = th.nn.Module()
        self.mlp_extractor.policy_net = th.nn.Sequential(hidden)
        self.action_net = th.nn.Linear(5, 1)
        self.log_std = th.nn.Parameter(th.zeros(2))
        signs = th.Generator().manual_seed(0)
        with th.no_grad():
            for layer, sizes in ((hidden, (2.0, 1.0)), (self.action_net, (0.01, 0.01))):
                for p, size in zip((layer.weight, layer.bias), sizes, strict=True):
                    p.copy_(size * (2 * th.randint(0, 2, p.shape, generator=signs) - 1))

    def with_deltas(self, deltas: dict[str, th.Tensor]) -> TinyActor:
        """A copy with `deltas[layer]` (flat, weight then bias) added to each named layer."""
        cur = TinyActor()
        cur.load_state_dict(self.state_dict())
        with th.no_grad():
            for name, delta in deltas.items():
                params = [p for n, p in cur.named_parameters() if n.startswith(name)]
                for p, d in zip(params, th.split(delta, [p.numel() for p in params]), strict=True):
                    p.add_(d.reshape(p.shape))
        return cur


def placed(n: int, values: list[tuple[int, float]]) -> th.Tensor:
    """A length-n delta: `count` entries of each `value`, in order from the start, zeros after."""
    out, at = th.zeros(n), 0
    for count, value in values:
        out[at : at + count] = value
        at += count
    return out


def test_moved_counts_a_known_fraction_beyond_each_relative_tolerance() -> None:
    # policy_net.0 has 25 parameters of RMS 1.844 (weight and bias together): thresholds 0.00184, 0.0184, 0.184
    # for rtol 1e-3, 1e-2, 1e-1. 3 move by 0.01 (beyond 1e-3 only), 4 by 0.1 (beyond 1e-3 and 1e-2), 5 by 1.0
    # (beyond all), 2 by 0.001 (beyond none), 2 by 0.019 (beyond 1e-2 at the RMS; not at the max 2 or the weights'
    # RMS 2), 2 by 0.0182 (not beyond 1e-2 at the RMS; beyond it at the mean |w| 1.8), 7 not at all; the last 5
    # deltas land on the biases. Signs must not matter.
    bc = TinyActor()
    delta = placed(25, [(3, 0.01), (4, -0.1), (5, 1.0), (2, -0.001), (2, 0.019), (2, -0.0182)])
    m = drift.weight_drift(bc, bc.with_deltas({"mlp_extractor.policy_net.0": delta}))
    layer = "drift/weights/actor/policy_net.0"
    assert m[f"{layer}/moved@1e-03"] == 16 / 25
    assert m[f"{layer}/moved@1e-02"] == 11 / 25
    assert m[f"{layer}/moved@1e-01"] == 5 / 25
    assert m["drift/weights/actor/action_net/moved@1e-03"] == 0.0
    assert drift.RELATIVE_TOLERANCES == (1e-3, 1e-2, 1e-1)


def test_a_zero_rms_layer_counts_any_nonzero_change_as_moved() -> None:
    bc = TinyActor()
    m = drift.weight_drift(bc, bc.with_deltas({"log_std": th.tensor([1e-7, 0.0])}))
    for rtol in drift.RELATIVE_TOLERANCES:
        assert m[f"drift/weights/actor/log_std/moved@{rtol:.0e}"] == 0.5
    unmoved = drift.weight_drift(bc, bc.with_deltas({}))
    assert unmoved["drift/weights/actor/log_std/moved@1e-03"] == 0.0


def test_totals_compare_each_parameter_with_its_own_layers_scale() -> None:
    # Every parameter of both Linear layers moves by 0.005: 0.27% of policy_net.0's RMS (1.844), 50% of
    # action_net's (0.01). A scale pooled over the actor (RMS about 1.6) would call action_net's moves small.
    bc = TinyActor()
    cur = bc.with_deltas({"mlp_extractor.policy_net.0": th.full((25,), 0.005), "action_net": th.full((6,), 0.005)})
    m = drift.weight_drift(bc, cur)
    n = 25 + 6 + 2  # log_std (2, unmoved) is in the totals too
    assert m["drift/weights/actor/policy_net.0/moved@1e-03"] == 1.0
    assert m["drift/weights/actor/policy_net.0/moved@1e-02"] == 0.0
    assert m["drift/weights/actor/action_net/moved@1e-01"] == 1.0
    assert m["drift/weights/actor/moved@1e-03"] == (25 + 6) / n
    assert m["drift/weights/actor/moved@1e-02"] == 6 / n
    assert m["drift/weights/actor/moved@1e-01"] == 6 / n
    assert m["drift/weights/all/moved@1e-01"] == 6 / n
    assert "drift/weights/critic/moved@1e-01" not in m  # no critic layers


def test_drift_table_carries_the_relative_movement_columns(cartpole: ActorCriticPolicy) -> None:
    cur = snapshot(cartpole)
    with th.no_grad():
        linear(cur.mlp_extractor.policy_net, 2).weight.add_(1.0)  # far beyond 0.1 x the layer's RMS
    metrics = drift.weight_drift(cartpole, cur)
    rows = {r["layer"]: r for r in drift.drift_table(metrics, ["demo"])}
    weights = 64 * 64
    assert rows["actor/policy_net.2"]["moved@1e-01"] == weights / (weights + 64)
    assert rows["actor/policy_net.0"]["moved@1e-01"] == 0.0
    assert all(f"moved@{r:.0e}" in row for row in rows.values() for r in drift.RELATIVE_TOLERANCES)


# -------------------------------------------------------------------------------------------- snapshot


def test_snapshot_is_frozen_exact_and_leaves_rng_alone(cartpole: ActorCriticPolicy) -> None:
    obs = sample_obs("CartPole-v1", 8)
    cartpole.predict(obs)  # a forward pass is what breaks copy.deepcopy
    th.manual_seed(5)
    copy = snapshot(cartpole)
    after = th.rand(1)
    th.manual_seed(5)
    assert th.equal(after, th.rand(1))
    assert not copy.training and not any(p.requires_grad for p in copy.parameters())
    for (name, a), b in zip(cartpole.state_dict().items(), copy.state_dict().values(), strict=True):
        assert th.equal(a, b), name


# ---------------------------------------------------------------------------------- representations


def test_hidden_activations_and_cka_of_snapshot(cartpole: ActorCriticPolicy) -> None:
    obs = sample_obs("CartPole-v1", 64)
    acts = drift.hidden_activations(cartpole, obs)
    assert list(acts) == ["policy_net.1", "policy_net.3"]
    assert acts["policy_net.3"].shape == (64, 64)
    expected = th.tanh(linear(cartpole.mlp_extractor.policy_net, 0)(th.as_tensor(obs))).detach().numpy()
    np.testing.assert_allclose(acts["policy_net.1"], expected, rtol=1e-6)
    m = drift.representation_drift(cartpole, snapshot(cartpole), {"demo": obs, "visited": obs[:32]})
    assert set(m) == {f"drift/cka/{p}/policy_net.{i}" for p in ("demo", "visited") for i in (1, 3)}
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in m.values())
    other = drift.representation_drift(cartpole, make_policy("CartPole-v1", seed=3, noise=0.3), {"demo": obs})
    assert all(v < 0.99 for v in other.values())


# ----------------------------------------------------------------------------------------- behaviour


def test_behaviour_of_snapshot_is_exactly_unchanged(cartpole: ActorCriticPolicy) -> None:
    obs = sample_obs("CartPole-v1", 64)
    actions = np.random.default_rng(0).integers(0, 2, size=64)
    m = drift.behaviour_drift(cartpole, snapshot(cartpole), {"demo": obs}, obs, actions)
    assert m["drift/kl/demo"] == 0.0
    assert m["drift/agreement/demo"] == 1.0
    assert m["drift/expert_loglik"] == m["drift/expert_loglik_bc"]


def test_categorical_kl_and_loglik_match_manual(cartpole: ActorCriticPolicy) -> None:
    other = make_policy("CartPole-v1", seed=3, noise=0.3)
    obs = sample_obs("CartPole-v1", 1)
    m = drift.behaviour_drift(cartpole, other, {"one": obs}, obs, np.array([1]))

    def log_probs(policy: ActorCriticPolicy) -> th.Tensor:
        with th.no_grad():
            logits = policy.action_net(policy.mlp_extractor.policy_net(th.as_tensor(obs)))
        return th.log_softmax(logits, dim=-1)[0].double()

    lp, lq = log_probs(cartpole), log_probs(other)
    manual_kl = float((lp.exp() * (lp - lq)).sum())
    assert manual_kl > 0
    assert m["drift/kl/one"] == pytest.approx(manual_kl, rel=1e-5)
    assert m["drift/expert_loglik"] == pytest.approx(float(lq[1]), rel=1e-5)
    assert m["drift/expert_loglik_bc"] == pytest.approx(float(lp[1]), rel=1e-5)
    assert m["drift/agreement/one"] == float(lp.argmax() == lq.argmax())


def test_gaussian_kl_matches_manual() -> None:
    bc, cur = make_policy("Pendulum-v1", seed=0, noise=0.3), make_policy("Pendulum-v1", seed=1, noise=0.3)
    obs = sample_obs("Pendulum-v1", 16)
    actions = np.random.default_rng(0).uniform(-2, 2, size=(16, 1)).astype(np.float32)
    m = drift.behaviour_drift(bc, cur, {"demo": obs}, obs, actions)

    def mean_std(policy: ActorCriticPolicy) -> tuple[th.Tensor, th.Tensor]:
        with th.no_grad():
            mean = policy.action_net(policy.mlp_extractor.policy_net(th.as_tensor(obs))).double()
        return mean, policy.log_std.detach().double().exp().expand_as(mean)

    (m1, s1), (m2, s2) = mean_std(bc), mean_std(cur)
    kl = (th.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum(dim=1)
    assert m["drift/kl/demo"] == pytest.approx(float(kl.mean()), rel=1e-5)
    assert m["drift/kl/demo"] > 0
    loglik = th.distributions.Normal(m2, s2).log_prob(th.as_tensor(actions).double()).sum(dim=1).mean()
    assert m["drift/expert_loglik"] == pytest.approx(float(loglik), rel=1e-5)
    # Agreement compares clipped means within 1e-3 of the range (4.0 on Pendulum).
    a1, a2 = m1.clamp(-2, 2), m2.clamp(-2, 2)
    assert m["drift/agreement/demo"] == float(((a1 - a2).abs() <= 4e-3).double().mean())
    assert m["drift/action_abs_diff/demo"] == pytest.approx(float((a1 - a2).abs().mean()), rel=1e-5)
    assert not math.isnan(m["drift/expert_loglik_bc"])
