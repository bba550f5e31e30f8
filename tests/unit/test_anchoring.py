"""Anchor terms, the AnchoredPPO gradient contract, the dip and the vote rules, on tiny untrained policies."""

from __future__ import annotations

import itertools
import math
from typing import Any, TypeVar

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from scipy import stats
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy

from testbed.anchoring import Anchor, AnchoredPPO, anchor_coef, diagonal_fisher, ewc_penalty, mean_kl
from testbed.config import AnchorConfig
from testbed.finetune import dip_columns, set_actor_frozen
from testbed.policy import actor_parameters, snapshot
from testbed.validation import validate_job
from testbed.voting import committee_act, median_vote, plurality, samples_act
from tests.conftest import make_job

P = TypeVar("P", bound=PPO)


def tiny_ppo(**kwargs: Any) -> AnchoredPPO:
    """An anchored `tiny(AnchoredPPO)`."""
    return tiny(AnchoredPPO, **kwargs)


def tiny(algo: type[P], **kwargs: Any) -> P:
    """CartPole PPO with one minibatch per epoch, plain SGD and no gradient clipping: updates are linear in grads."""
    args = {"n_steps": 16, "batch_size": 32, "n_epochs": 1, "max_grad_norm": 1e9, "learning_rate": 0.1} | kwargs
    return algo(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=2, seed=0),
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [16], "optimizer_class": th.optim.SGD},
        **args,
    )


def perturbed_snapshot(model: PPO, scale: float = 0.5) -> ActorCriticPolicy:
    """A frozen 'BC policy' away from the current one, so the anchor's gradient is not zero."""
    bc = snapshot(model.policy)
    with th.no_grad(), th.random.fork_rng(devices=[]):
        th.manual_seed(1)
        for p in actor_parameters(bc):
            p.add_(scale * th.randn_like(p))
    return bc


def demo_obs(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.2, 0.2, size=(n, 4)).astype(np.float32)


# ------------------------------------------------------------------------------------------ schedule, dip


def test_coefficient_schedules() -> None:
    assert anchor_coef(AnchorConfig(coef=2.0), update=7, rollout=100) == 2.0
    assert anchor_coef(AnchorConfig(coef=2.0, decay="exp", decay_rate=0.5), update=3, rollout=100) == 0.25
    linear = AnchorConfig(coef=2.0, decay="linear", decay_steps=1000)
    assert [anchor_coef(linear, u, rollout=250) for u in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([1.0, 1.0, 1.0], (1.0, 0.0, 0)),  # never below the BC level
        ([0.8, 0.5, 0.3, 0.9, 0.1], (0.3, 0.5, 300)),  # recovers at 300; the later fall is not the dip
        ([0.8, 0.9, 0.6, 0.7], (0.6, 0.2, None)),  # still below the BC level
        ([0.8], (0.8, 0.0, 0)),  # only the BC snapshot
    ],
)
def test_dip_known_answers(scores: list[float], expected: tuple[float, float, int | None]) -> None:
    cols = dip_columns([(100 * i, s) for i, s in enumerate(scores)])
    got = (cols["rl/dip_min_normalized"], cols["rl/dip_depth"], cols["rl/dip_steps_to_recover"])
    assert got == pytest.approx(expected) if expected[2] is not None else got[:2] == pytest.approx(expected[:2])
    assert cols["rl/dip_steps_to_recover"] == expected[2]


# ------------------------------------------------------------------------------------------ anchor terms


def test_kl_and_ewc_vanish_at_the_bc_policy_and_grow_away_from_it() -> None:
    model = tiny_ppo()
    obs = th.as_tensor(demo_obs())
    bc = snapshot(model.policy)
    fisher = diagonal_fisher(bc, obs, seed=0)
    star = [p.detach().clone() for p in actor_parameters(bc)]
    assert [f.shape for f in fisher] == [p.shape for p in actor_parameters(model.policy)]
    assert all(bool((f >= 0).all()) for f in fisher) and sum(float(f.sum()) for f in fisher) > 0
    assert float(mean_kl(bc, model.policy, obs).detach()) == pytest.approx(0.0, abs=1e-7)
    assert float(ewc_penalty(model.policy, star, fisher).detach()) == 0.0
    far = perturbed_snapshot(model)
    assert float(mean_kl(far, model.policy, obs).detach()) > 1e-3
    assert float(ewc_penalty(far, star, fisher)) > 0  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["bc_kl", "kickstart", "ewc"])
def test_anchored_update_is_ppo_plus_the_term_in_the_loss(kind: str) -> None:
    """One SGD step without clipping: anchored - plain = -lr x coef x grad(term), and the critic is untouched."""
    cfg = AnchorConfig(kind=kind, coef=3.0, batch_size=16, fisher_states=32)
    plain = tiny(PPO).learn(32)  # one rollout of 2 x 16 steps, one epoch, one minibatch: one step
    anchored = tiny_ppo()  # the same seed (built after plain's rollout, which draws from the global RNG)
    bc = perturbed_snapshot(anchored)
    start = snapshot(anchored.policy)
    anchored.anchor = Anchor(cfg, bc, demo_obs(), seed=0, batch_size=anchored.batch_size)
    anchored.learn(32)
    assert anchored.anchor.updates == 1 and len(anchored.anchor.window) == 1
    # 1. The expected gradient: the same term (same demo draw) at the starting weights.
    start.requires_grad_(True)
    rollout_obs = th.as_tensor(anchored.rollout_buffer.observations.reshape(32, 4))
    reference = Anchor(cfg, bc, demo_obs(), seed=0, batch_size=anchored.batch_size)
    grads = th.autograd.grad(reference.term(start, rollout_obs), actor_parameters(start), allow_unused=True)
    # 2. Compare the two updates parameter by parameter.
    names = {id(p): n for n, p in anchored.policy.named_parameters()}
    actor_ids = {id(p) for p in actor_parameters(anchored.policy)}
    plain_params = dict(plain.policy.named_parameters())
    moved = 0.0
    for (name, p), g in zip(((names[id(p)], p) for p in actor_parameters(anchored.policy)), grads, strict=True):
        expected = plain_params[name] - 0.1 * 3.0 * (th.zeros_like(p) if g is None else g)
        assert th.allclose(p, expected, atol=1e-6), name
        moved = max(moved, float((p - plain_params[name]).detach().abs().max()))
    assert moved > 1e-3, "the anchor must change the update for this test to mean anything"
    for name, p in anchored.policy.named_parameters():
        if id(p) not in actor_ids:
            assert th.equal(p, plain_params[name]), f"the anchor moved the critic: {name}"


def test_anchor_is_off_while_the_actor_is_frozen() -> None:
    model = tiny_ppo()
    model.anchor = Anchor(AnchorConfig(kind="bc_kl"), perturbed_snapshot(model), demo_obs(), 0, 32)
    set_actor_frozen(model, True)
    model.learn(32)
    assert model.anchor.updates == 0 and model.anchor.window == []


def test_draining_the_columns_averages_the_window_and_empties_it() -> None:
    model = tiny_ppo()
    anchor = Anchor(AnchorConfig(kind="bc_kl"), snapshot(model.policy), demo_obs(), 0, 32)
    anchor.window, anchor.updates = [(2.0, 1.0), (1.0, 3.0)], 2  # (coef, term) of two minibatches
    first = anchor.drain_columns()
    assert (first["rl/anchor_term"], first["rl/anchor_loss"], first["rl/anchor_coef"]) == (2.0, 2.5, 1.0)
    assert anchor.window == []
    second = anchor.drain_columns()
    assert (second["rl/anchor_term"], second["rl/anchor_loss"], second["rl/anchor_coef"]) == (None, None, None)
    assert second["rl/anchor_updates"] == 2


def test_a_step_without_the_anchor_fails_loudly() -> None:
    model = tiny_ppo()
    model.anchor = Anchor(AnchorConfig(kind="ewc", fisher_states=8), snapshot(model.policy), demo_obs(), 0, 32)
    with model._anchor_every_minibatch(model.anchor, 1.0, []), pytest.raises(RuntimeError, match="zero_grad"):
        model.policy.optimizer.step()
    model.policy.optimizer.step()  # the hook is gone afterwards


def test_config_rejects_unknown_kinds_and_anchors_without_bc() -> None:
    with pytest.raises(ValueError, match="rl.anchor.kind"):
        validate_job(make_job("rl.anchor.kind=kl"))
    with pytest.raises(ValueError, match="needs rl.init=bc"):
        validate_job(make_job("rl.anchor.kind=ewc", "rl.init=scratch"))
    with pytest.raises(ValueError, match="voting.mode"):
        validate_job(make_job("voting.mode=best"))


# ------------------------------------------------------------------------------------------------ voting


def test_plurality_and_its_tie_breaks() -> None:
    probs = np.full((3, 1, 3), 1 / 3)
    assert plurality(np.array([[0], [2], [2]]), probs).tolist() == [2]  # most votes
    soft = np.array([[[0.6, 0.4, 0.0]], [[0.1, 0.9, 0.0]]])  # one vote each; action 1 has 1.3 summed
    assert plurality(np.array([[0], [1]]), soft).tolist() == [1]
    even = np.array([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]]])
    assert plurality(np.array([[1], [0]]), even).tolist() == [0]  # then the lowest index


def test_median_vote_is_per_dimension_and_clipped() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2,))
    actions = np.array([[[0.1, 5.0]], [[0.3, -0.5]], [[0.2, 0.0]]], dtype=np.float32)
    assert np.allclose(median_vote(actions, space), [[0.2, 0.0]])


def test_a_committee_of_one_is_the_policy() -> None:
    policy = tiny_ppo().policy
    obs = demo_obs(200) * 20  # spread states, so the actions differ
    assert np.array_equal(committee_act([policy])(obs), policy.predict(obs, deterministic=True)[0])


def fixed_policy(action_space: spaces.Space, logits_or_mean: list[float], std: float = 1.0) -> ActorCriticPolicy:
    """A policy whose action distribution is the same known one at every state: a zero action head whose bias
    is the categorical's logits (Discrete) or the Gaussian's mean (Box, with log_std = log(std))."""
    policy = ActorCriticPolicy(spaces.Box(-1.0, 1.0, shape=(4,)), action_space, lambda _: 0.0, net_arch=[8])
    head = policy.action_net
    assert isinstance(head, th.nn.Linear)
    with th.no_grad():
        head.weight.zero_()
        head.bias.copy_(th.as_tensor(logits_or_mean))
        if isinstance(action_space, spaces.Box):
            policy.log_std.fill_(math.log(std))
    return policy


def plurality_win_probabilities(p: np.ndarray, k: int) -> np.ndarray:
    """Exact P(action a wins) for k independent draws from p, by the documented rule (most draws, then the
    highest summed probability, i.e. the highest p, then the lowest index), summed over every draw sequence."""
    wins = np.zeros(len(p))
    for draws in itertools.product(range(len(p)), repeat=k):
        counts = np.bincount(draws, minlength=len(p))
        winner = min(range(len(p)), key=lambda a: (-counts[a], -p[a], a))
        wins[winner] += np.prod(p[list(draws)])
    return wins


@pytest.mark.parametrize(
    ("p", "k", "by_hand"),
    [
        ([0.5, 0.3, 0.2], 1, [0.5, 0.3, 0.2]),  # one sample: the policy's own distribution
        ([0.5, 0.3, 0.2], 3, [0.68, 0.216, 0.104]),  # the vote sharpens toward the mode; 1-1-1 goes to action 0
        ([0.5, 0.3, 0.2], 5, None),
        ([0.3, 0.3, 0.4], 2, [0.27, 0.09, 0.64]),  # 1-1 ties go to the likelier action, then to the lower index
        ([0.3, 0.3, 0.4], 4, None),  # 2-2 ties
    ],
)
def test_sampling_vote_wins_as_often_as_the_policys_probabilities_say(
    p: list[float], k: int, by_hand: list[float] | None
) -> None:
    """The winners' frequencies over 100k states match the exact plurality law of k draws from the policy.

    A vote that ignored the samples (the mode every time), drew them uniformly, used one draw for any k or broke
    ties another way would be at least 0.06 off on some case; the tolerance is 0.008 (5 binomial sigmas).
    """
    policy = fixed_policy(spaces.Discrete(3), np.log(p).tolist())
    n = 100_000
    obs = np.zeros((n, 4), dtype=np.float32)
    with th.no_grad():  # the law of the probabilities the vote sees (float32 softmax), so equal ones stay equal
        dist = policy.get_distribution(policy.obs_to_tensor(obs[:1])[0]).distribution
        probs = dist.probs[0]  # type: ignore[union-attr]
    expected = plurality_win_probabilities(probs.double().numpy(), k)
    if by_hand is not None:
        assert expected == pytest.approx(by_hand, abs=1e-6)
    votes = samples_act(policy, k, np.random.default_rng(0))(obs)
    frequencies = np.bincount(votes, minlength=3) / n
    assert np.abs(frequencies - expected).max() < 0.008, (frequencies, expected)


@pytest.mark.parametrize("k", [3, 5])
def test_sampling_vote_of_box_actions_is_the_median_of_k_draws(k: int) -> None:
    """For odd k the vote is the median of k draws from N(mean, std): P(vote <= mean + z std) =
    P(Binomial(k, Phi(z)) >= (k + 1) / 2). The policy's mean (every time), one draw or the draws' mean would be
    at least 0.03 off at some z; the tolerance is 0.008."""
    mean, std = 0.5, 1.0
    policy = fixed_policy(spaces.Box(-10.0, 10.0, shape=(1,)), [mean], std=std)
    n = 100_000
    votes = samples_act(policy, k, np.random.default_rng(0))(np.zeros((n, 4), dtype=np.float32))
    assert votes.shape == (n, 1)
    for z in (-1.0, -0.5, 0.0, 0.5, 1.0):
        expected = stats.binom.sf((k - 1) // 2, k, stats.norm.cdf(z))
        assert abs(float(np.mean(votes <= mean + z * std)) - expected) < 0.008, (z, expected)
