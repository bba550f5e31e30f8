"""BC's direct NLL path gives SB3's numbers; minibatches and the split are deterministic."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from testbed.bc import BCResult, minibatches, nll_and_entropy, split, train_bc
from testbed.config import BCConfig, EnvConfig
from testbed.demonstrations import Demonstrations
from testbed.envs import make_vec_env
from testbed.policy import build_ppo


@pytest.mark.parametrize(("env_id", "sde"), [("CartPole-v1", False), ("Pendulum-v1", False), ("Pendulum-v1", True)])
def test_direct_nll_equals_sb3_distribution(env_id: str, sde: bool) -> None:
    cfg = EnvConfig(id=env_id, name="x", reference_return=0.0, n_envs=1, ppo={"use_sde": True} if sde else {})
    policy = build_ppo(cfg, make_vec_env(cfg, 0), seed=0, n_steps=64, batch_size=64).policy
    with torch.no_grad():  # move the weights off their near-zero head init so the check has teeth
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = torch.as_tensor(np.stack([policy.observation_space.sample() for _ in range(32)]))
    actions = torch.as_tensor(np.stack([policy.action_space.sample() for _ in range(32)]))
    nll, entropy = nll_and_entropy(policy, obs, actions)
    dist = policy.get_distribution(obs)
    torch.testing.assert_close(nll, -dist.log_prob(actions).mean())
    sb3_entropy = dist.entropy()
    assert sb3_entropy is not None  # SB3 gives None only for distributions without a closed form (squashed)
    torch.testing.assert_close(entropy, sb3_entropy.mean())


def test_split_is_deterministic_and_disjoint() -> None:
    train, val = split(100, 0.1, seed=3)
    again = split(100, 0.1, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100


def test_minibatches_cover_each_epoch_once_as_views() -> None:
    x = torch.arange(10.0).reshape(10, 1)
    y = torch.arange(10)
    batches = minibatches(x, y, batch=3, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # two epochs of 3 full batches; the 10th sample sits out each epoch
        epoch = [next(batches) for _ in range(3)]
        xs = torch.cat([bx for bx, _ in epoch]).reshape(-1)
        ys = torch.cat([by for _, by in epoch])
        assert torch.equal(xs.long(), ys)  # pairs stay together through the shuffle
        assert len(set(ys.tolist())) == 9  # no sample twice within an epoch
        assert all(bx._base is not None for bx, _ in epoch)  # slices of the epoch's copy, not gathers
    again = minibatches(x, y, batch=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(next(again)[1], next(minibatches(x, y, 3, torch.Generator().manual_seed(0)))[1])


def _random_demos(policy: ActorCriticPolicy, n: int = 300) -> Demonstrations:
    """Demonstrations of random states and actions: BC's arithmetic needs no expert."""
    rng = np.random.default_rng(0)
    obs_shape, action_shape = policy.observation_space.shape, policy.action_space.shape
    assert obs_shape is not None and action_shape is not None  # Box spaces
    obs = rng.normal(size=(n, *obs_shape)).astype(np.float32)
    actions = rng.uniform(-2, 2, size=(n, *action_shape)).astype(np.float32)
    zeros = np.zeros(n)
    return Demonstrations(
        obs, actions, zeros, zeros.astype(bool), zeros.astype(bool), np.array([0]), np.zeros(1), Path("."), "", ""
    )


def test_bc_checkpoint_equals_a_separate_run() -> None:
    """One BC run stopped at 30 and 70 steps (bc.checkpoints) gives, at each stop, the weights and losses of a
    separate run of that many steps, and ends where a run without stops ends."""
    cfg = EnvConfig(id="Pendulum-v1", name="x", reference_return=0.0, n_envs=1)

    def fresh() -> ActorCriticPolicy:
        return build_ppo(cfg, make_vec_env(cfg, 0), seed=0, n_steps=64, batch_size=64).policy

    bc = BCConfig(grad_steps=100, checkpoints=[30, 70], batch_size=64, log_every=20)
    policy = fresh()
    demos = _random_demos(policy)
    stops: list[tuple[BCResult, dict[str, torch.Tensor]]] = []
    final = train_bc(
        policy, demos, bc, seed=1, progress=False, on_checkpoint=lambda r: stops.append((r, _weights(policy)))
    )
    assert [r.grad_steps for r, _ in stops] == [30, 70]
    for (result, weights), k in zip(stops, (30, 70), strict=True):
        separate = fresh()
        alone = train_bc(separate, demos, replace(bc, grad_steps=k, checkpoints=[]), seed=1, progress=False)
        assert all(torch.equal(weights[name], w) for name, w in _weights(separate).items())
        assert (result.samples, result.train_nll, result.val_nll) == (alone.samples, alone.train_nll, alone.val_nll)
    plain = fresh()
    without = train_bc(plain, demos, replace(bc, checkpoints=[]), seed=1, progress=False)
    assert all(torch.equal(_weights(policy)[name], w) for name, w in _weights(plain).items())
    assert final.curve == without.curve and final.train_nll == without.train_nll


def _weights(policy: ActorCriticPolicy) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in policy.state_dict().items()}
