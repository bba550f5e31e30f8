"""The recurrent learner: BC trains the very policy RecurrentPPO runs (exact handoff), truncated BPTT carries the
state, the critic stays put, BC learns memory; its act function and drift."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.callbacks import BaseCallback

from testbed.compute import actor_critic_params, actor_params
from testbed.config import BCConfig, EnvConfig, PolicyConfig
from testbed.demonstrations import Demonstrations
from testbed.envs import make_env, make_vec_env
from testbed.evaluate import eval_seeds, evaluate
from testbed.policy import actor_parameters, snapshot
from testbed.recurrent import (
    RecurrentAct,
    SequenceLstmPolicy,
    actor_sequence,
    build_recurrent,
    distribution,
    episode_lengths,
    hidden_trace,
    pad_episodes,
    recurrent_drift,
    zero_state,
)
from testbed.recurrent_bc import RecurrentBCTrainer, split_episodes

# CartPole without its velocities: the learner needs memory. One env and tiny rollouts keep learn() quick.
CARTPOLE = EnvConfig(
    id="CartPole-v1",
    name="cartpole",
    reference_return=0.0,
    n_envs=1,
    mask_velocity=True,
    ppo={"n_steps": 32, "batch_size": 32, "n_epochs": 2},
)
LSTM = PolicyConfig(kind="lstm", lstm_hidden=16, bc_seq_len=8, bc_batch_episodes=4)


def _model(seed: int = 0, policy_cfg: PolicyConfig = LSTM) -> RecurrentPPO:
    return build_recurrent(CARTPOLE, policy_cfg, make_vec_env(CARTPOLE, seed), seed)


def _snapshot(policy: RecurrentActorCriticPolicy) -> RecurrentActorCriticPolicy:
    frozen = snapshot(policy)
    assert isinstance(frozen, RecurrentActorCriticPolicy)
    return frozen


def _policy(model: RecurrentPPO) -> RecurrentActorCriticPolicy:
    assert isinstance(model.policy, RecurrentActorCriticPolicy)
    return model.policy


def _demos(observations: list[np.ndarray], actions: list[np.ndarray]) -> Demonstrations:
    """Demonstrations of the given episodes (BC's arithmetic needs no expert)."""
    lengths = [len(a) for a in actions]
    n = sum(lengths)
    zeros = np.zeros(n)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    return Demonstrations(
        np.concatenate(observations).astype(np.float32),
        np.concatenate(actions),
        zeros,
        zeros.astype(bool),
        zeros.astype(bool),
        starts,
        np.zeros(len(lengths)),
        Path("."),
        "",
        "",
    )


def _scripted_demos(episodes: int = 6, seed: int = 0) -> Demonstrations:
    """Masked-CartPole episodes (about 50-65 steps) of a scripted push toward the pole's lean, 20% random."""
    env, rng = make_env(CARTPOLE), np.random.default_rng(seed)
    observations, actions = [], []
    for e in range(episodes):
        obs, _ = env.reset(seed=100 * seed + e)
        ep_obs, ep_act, done = [], [], False
        while not done:
            action = int(obs[2] > 0) if rng.random() > 0.2 else int(rng.integers(2))
            ep_obs.append(obs)
            ep_act.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        observations.append(np.stack(ep_obs))
        actions.append(np.array(ep_act))
    return _demos(observations, actions)


def _weights(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in policy.state_dict().items()}


def _perturbed(policy: RecurrentActorCriticPolicy) -> RecurrentActorCriticPolicy:
    """`policy` with its weights moved off their near-zero head init, so actions depend on the state."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return policy


class _WeightsAtStart(BaseCallback):
    """The weights when learn() starts training, after its setup."""

    def _on_training_start(self) -> None:
        self.weights = _weights(self.model.policy)

    def _on_step(self) -> bool:
        return True


def test_handoff_to_recurrent_ppo_is_exact() -> None:
    """BC trains model.policy itself: SB3's training path (evaluate_actions, its padded sequence layout) gives BC's
    log-probs, step-by-step predict gives BC's modes and hidden_trace's states, and learn() starts from BC's weights."""
    model, demos = _model(), _scripted_demos()
    policy = _policy(model)
    trainer = RecurrentBCTrainer(policy, demos, BCConfig(grad_steps=30, log_every=10), LSTM, seed=0)
    trainer.run_to(30)
    assert trainer.policy is policy and not policy.training
    bc_weights = _weights(policy)
    # (a) Two demonstration episodes, padded to the longer, batch-major: SB3's layout for two sequences.
    lengths = episode_lengths(demos.episode_starts, demos.n_transitions)[:2]
    obs = pad_episodes(torch.as_tensor(demos.observations), demos.episode_starts[:2], lengths)
    actions = pad_episodes(torch.as_tensor(demos.actions), demos.episode_starts[:2], lengths)
    steps = obs.shape[1]
    valid = (torch.arange(steps)[None, :] < torch.as_tensor(lengths)[:, None]).reshape(-1)
    with torch.no_grad():
        latent, _ = actor_sequence(policy, obs.transpose(0, 1), zero_state(policy, 2))
        dist = distribution(policy, latent.transpose(0, 1).reshape(2 * steps, -1))
        bc_logp, bc_modes = dist.log_prob(actions.reshape(-1)), dist.mode()
        starts = torch.zeros(2, steps)
        starts[:, 0] = 1.0
        zeros = zero_state(policy, 2)
        _, sb3_logp, _ = policy.evaluate_actions(
            obs.reshape(2 * steps, -1), actions.reshape(-1), RNNStates(zeros, zeros), starts.reshape(-1)
        )
    torch.testing.assert_close(bc_logp[valid], sb3_logp[valid], atol=1e-6, rtol=0)
    # Acting: predict, one step at a time with its state carried, along the first episode.
    trace = hidden_trace(policy, demos.observations, demos.episode_starts)
    state, hidden = None, policy.lstm_actor.hidden_size
    for t in range(lengths[0]):
        action, state = policy.predict(
            demos.observations[t : t + 1], state=state, episode_start=np.array([t == 0]), deterministic=True
        )
        assert state is not None
        assert action[0] == bc_modes[t]
        np.testing.assert_allclose(np.concatenate([state[0][0, 0], state[1][0, 0]]), trace[t], atol=1e-6)
    assert trace.shape == (demos.n_transitions, 2 * hidden)
    # (b) PPO trains from BC's weights, bit for bit, on the same object.
    start = _WeightsAtStart()
    model.learn(64, callback=start)
    assert model.policy is policy
    assert all(torch.equal(start.weights[k], bc_weights[k]) for k in bc_weights)
    assert not torch.equal(policy.state_dict()["lstm_actor.weight_hh_l0"], bc_weights["lstm_actor.weight_hh_l0"])


def test_truncated_bptt_carries_the_state_across_windows() -> None:
    """Windows of 5 steps, the state carried and detached, give a full-length forward's outputs: in one forward
    call, and in the trainer's window losses (at lr 0 its windows are exactly the full episodes' windows)."""
    policy, demos = _perturbed(_policy(_model())), _scripted_demos(episodes=4)
    lengths = episode_lengths(demos.episode_starts, demos.n_transitions)
    obs = pad_episodes(torch.as_tensor(demos.observations), demos.episode_starts, lengths).transpose(0, 1)
    with torch.no_grad():
        full, _ = actor_sequence(policy, obs, zero_state(policy, len(lengths)))
        state, windows = zero_state(policy, len(lengths)), []
        for t in range(0, len(obs), 5):
            latent, state = actor_sequence(policy, obs[t : t + 5], state)
            windows.append(latent)
    torch.testing.assert_close(torch.cat(windows), full, atol=1e-6, rtol=0)
    # The trainer: one minibatch of every training episode, cut into windows of 5; lr 0 keeps the weights.
    cfg = BCConfig(lr=0.0, grad_steps=10_000, log_every=10_000)
    trainer = RecurrentBCTrainer(policy, demos, cfg, replace(LSTM, bc_seq_len=5, bc_batch_episodes=8), seed=0)
    train, _ = split_episodes(len(lengths), cfg.val_fraction, seed=0)
    n_windows = -(-int(lengths[train].max()) // 5)
    trainer.run_to(n_windows)
    assert trainer.samples == trainer.train_transitions == lengths[train].sum()
    expected, reset = _window_nlls(policy, demos, train, 5)
    np.testing.assert_allclose(trainer.window, expected, atol=1e-5)
    assert not np.allclose(trainer.window, reset, atol=1e-2)  # a reset at each window would differ


def _window_nlls(
    policy: RecurrentActorCriticPolicy, demos: Demonstrations, episodes: np.ndarray, seq_len: int
) -> tuple[list[float], list[float]]:
    """Mean NLL per window of `seq_len` steps over the unpadded steps of `episodes`: from SB3's full-length
    evaluate_actions, and with the state reset to zero at every window."""
    starts = demos.episode_starts[episodes]
    lengths = episode_lengths(demos.episode_starts, demos.n_transitions)[episodes]
    obs = pad_episodes(torch.as_tensor(demos.observations), starts, lengths)
    actions = pad_episodes(torch.as_tensor(demos.actions), starts, lengths)
    batch, steps = obs.shape[:2]
    valid = torch.arange(steps)[None, :] < torch.as_tensor(lengths)[:, None]
    zeros = zero_state(policy, batch)
    with torch.no_grad():
        nlls = []
        for every in (steps, seq_len):  # zero state at each episode's start; at every window (what TBPTT must not do)
            episode_starts = torch.zeros(batch, steps)
            episode_starts[:, ::every] = 1.0
            _, logp, _ = policy.evaluate_actions(
                obs.reshape(batch * steps, -1), actions.reshape(-1), RNNStates(zeros, zeros), episode_starts.reshape(-1)
            )
            logp = logp.reshape(batch, steps)
            nlls.append(
                [float(-logp[:, t : t + seq_len][valid[:, t : t + seq_len]].mean()) for t in range(0, steps, seq_len)]
            )
    return nlls[0], nlls[1]


def test_bc_moves_the_actor_only() -> None:
    """BC changes every actor parameter (LSTM, body, head) and no critic parameter (its LSTM, body, head)."""
    policy = _policy(_model())
    before = _weights(policy)
    trainer = RecurrentBCTrainer(policy, _scripted_demos(episodes=4), BCConfig(grad_steps=10), LSTM, seed=0)
    trainer.run_to(10)
    actor = {id(p) for p in actor_parameters(policy)}
    names = {name for name, p in policy.named_parameters() if id(p) in actor}
    assert names == {
        n
        for n, _ in policy.named_parameters()
        if n.startswith(("lstm_actor.", "mlp_extractor.policy_net.", "action_net."))
    }
    for name, p in policy.named_parameters():
        assert torch.equal(p, before[name]) != (name in names), name


def test_parameter_counts() -> None:
    """Actor: LSTM 4h(f + h) + 8h, body and head; actor+critic: every parameter (two LSTMs, two MLPs, two heads)."""
    policy = _policy(_model())
    h, f = LSTM.lstm_hidden, 4
    lstm = 4 * h * (f + h) + 8 * h
    body = (h * 64 + 64) + (64 * 64 + 64)
    assert actor_params(policy) == lstm + body + (64 * 2 + 2)
    assert actor_critic_params(policy) == sum(p.numel() for p in policy.parameters())
    assert actor_critic_params(policy) == actor_params(policy) + lstm + body + (64 + 1)


def _cue_episode(bit: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The memory task: the first observation shows the bit (+-1), later ones are 0; every action is the bit."""
    obs = np.zeros((length, 4), dtype=np.float32)
    obs[0, 0] = 2 * bit - 1
    return obs, np.full(length, bit)


def test_bc_learns_memory_across_windows() -> None:
    """Only memory can act right after the first step (no feed-forward policy can: later observations are all 0),
    and with windows of 4 steps in episodes of 6-12 the bit must also cross window boundaries in the carried state."""
    rng = np.random.default_rng(0)
    episodes = [_cue_episode(i % 2, int(rng.integers(6, 13))) for i in range(40)]
    demos = _demos([o for o, _ in episodes], [a for _, a in episodes])
    policy_cfg = replace(LSTM, bc_seq_len=4, bc_batch_episodes=8)
    policy = _policy(_model(policy_cfg=policy_cfg))
    cfg = BCConfig(grad_steps=200, lr=3e-3, val_fraction=0.2, log_every=50)
    trainer = RecurrentBCTrainer(policy, demos, cfg, policy_cfg, seed=0)
    trainer.run_to(200)
    assert trainer.result().val_agreement == 1.0
    fresh = [_cue_episode(bit, 12) for bit in (0, 1)]
    obs = torch.as_tensor(np.stack([o for o, _ in fresh], axis=1))  # (12, 2, 4), time-major
    with torch.no_grad():
        latent, _ = actor_sequence(policy, obs, zero_state(policy, 2))
        assert distribution(policy, latent[-1]).mode().tolist() == [0, 1]  # the last step: 11 steps after the cue


def test_bc_stops_equal_a_separate_run() -> None:
    """A run stopped at 7 windows (mid-minibatch) and continued to 13 ends where a run of 13 does: weights, counters
    and curve; the same seed twice gives the same run."""
    demos, cfg = _scripted_demos(episodes=6), BCConfig(grad_steps=13, log_every=5)
    stopped, straight = _policy(_model()), _policy(_model())
    a = RecurrentBCTrainer(stopped, demos, cfg, LSTM, seed=1)
    a.run_to(7)
    a.run_to(13)
    b = RecurrentBCTrainer(straight, demos, cfg, LSTM, seed=1)
    b.run_to(13)
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in stopped.state_dict().items())
    assert (a.steps, a.samples) == (b.steps, b.samples) and a.result().curve == b.result().curve
    assert [row["bc/grad_steps"] for row in a.curve] == [5, 10, 13]


def test_split_episodes() -> None:
    train, val = split_episodes(10, 0.2, seed=0)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(10))
    single = split_episodes(1, 0.1, seed=0)
    assert single[0].tolist() == single[1].tolist() == [0]  # one episode: trained and validated on
    with pytest.raises(ValueError, match="holds out all"):
        split_episodes(2, 1.0, seed=0)
    with pytest.raises(ValueError, match="ascend from 0"):
        episode_lengths(np.array([0, 5, 5]), 8)


class _Recorded(RecurrentAct):
    """RecurrentAct that records each episode's actions and memories."""

    def start(self, n: int) -> None:
        super().start(n)
        self.steps: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n)]

    def __call__(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        actions = super().__call__(obs, alive)
        for i, action, memory in zip(alive, actions, self.memory(alive), strict=True):
            self.steps[i].append((int(action), memory))
        return actions


def test_recurrent_act_in_evaluate_equals_a_hand_loop() -> None:
    """evaluate with RecurrentAct (three episodes batched, ending apart) acts and remembers as predict does,
    stepped by hand on one env with its state carried."""
    policy = _perturbed(_policy(_model()))
    act = _Recorded(policy)
    cap = evaluate(CARTPOLE, act, episodes=3)
    assert len(set(cap.lengths.tolist())) > 1  # the batch shrinks as episodes end
    for i, seed in enumerate(eval_seeds(3)):
        env = make_env(CARTPOLE)
        obs, _ = env.reset(seed=seed)
        state, done, t = None, False, 0
        while not done:
            action, state = policy.predict(obs[None], state=state, episode_start=np.array([t == 0]), deterministic=True)
            assert state is not None
            assert int(action[0]) == act.steps[i][t][0]
            np.testing.assert_allclose(act.steps[i][t][1], np.concatenate([state[0][0, 0], state[1][0, 0]]), atol=1e-6)
            obs, _, terminated, truncated, _ = env.step(action[0])
            done, t = terminated or truncated, t + 1
        assert t == cap.lengths[i] == len(act.steps[i])


def test_recurrent_drift_against_itself_and_an_lstm_change() -> None:
    """Against its own snapshot: no weight change, CKA 1, KL 0, full agreement. A change of the actor's LSTM alone
    shows in the actor's total (the LSTMs sit on their sides, none under `other/`), not the critic's, as rank 1."""
    policy, demos = _policy(_model()), _scripted_demos(episodes=3)
    args = (demos.observations, demos.actions, demos.episode_starts, 50, 0)
    same = recurrent_drift(_snapshot(policy), policy, *args)
    assert not any("/other/" in key for key in same)
    assert {"drift/weights/actor/lstm_actor/rel_change", "drift/weights/critic/lstm_critic/rel_change"} <= set(same)
    assert all(v == 0 for k, v in same.items() if k.endswith("/rel_change"))
    assert all(v == pytest.approx(1.0) for k, v in same.items() if k.endswith("/cosine"))
    assert same["drift/cka/demo/lstm"] == pytest.approx(1.0)
    assert same["drift/kl/demo"] == 0 and same["drift/agreement/demo"] == 1.0
    assert same["drift/expert_loglik"] == same["drift/expert_loglik_bc"] < 0
    moved = _snapshot(policy)
    with torch.no_grad():
        moved.state_dict()["lstm_actor.weight_hh_l0"].add_(0.1)  # a rank-one update (state_dict shares storage)
    drift = recurrent_drift(policy, moved, *args)
    assert drift["drift/weights/actor/rel_change"] > 0 and drift["drift/weights/critic/rel_change"] == 0
    assert drift["drift/weights/actor/lstm_actor/eff_rank"] == pytest.approx(1.0, abs=1e-4)  # float32 rounding
    assert drift["drift/kl/demo"] > 0 and drift["drift/cka/demo/lstm"] < 1


def test_box_actions_train_log_std_and_drift_by_range() -> None:
    """Pendulum (Box actions, velocity masked): BC trains log_std with the actor; drift adds the Box keys."""
    cfg = replace(CARTPOLE, id="Pendulum-v1", name="pendulum")
    policy = _policy(build_recurrent(cfg, LSTM, make_vec_env(cfg, 0), seed=0))
    rng = np.random.default_rng(0)
    episodes = [(rng.normal(size=(n, 3)), rng.uniform(-2, 2, size=(n, 1))) for n in (20, 30, 25, 40)]
    demos = _demos([o for o, _ in episodes], [a.astype(np.float32) for _, a in episodes])
    start = _snapshot(policy)
    RecurrentBCTrainer(policy, demos, BCConfig(grad_steps=10), LSTM, seed=0).run_to(10)
    assert any(p is policy.log_std for p in actor_parameters(policy))
    drift = recurrent_drift(start, policy, demos.observations, demos.actions, demos.episode_starts, 50, 0)
    # log_std starts at 0: its rel_change is undefined (nan), and any change counts as moved.
    assert drift["drift/weights/actor/log_std/moved@1e-03"] == 1.0 and drift["drift/weights/critic/rel_change"] == 0
    assert drift["drift/action_abs_diff/demo"] > 0


def test_one_lstm_call_per_sequence_is_sb3_contribs_stepwise_computation() -> None:
    """SequenceLstmPolicy._process_sequence equals sb3-contrib's own (the per-step loop) on sequences that start an
    episode only at their first step, some from a carried state; a start inside a sequence takes sb3-contrib's path."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5)
    n_seq, steps = 4, 7
    features = torch.randn(n_seq * steps, 3)
    states = (torch.randn(1, n_seq, 5), torch.randn(1, n_seq, 5))
    starts = torch.zeros(n_seq, steps)
    starts[[0, 2], 0] = 1.0  # sequences 0 and 2 begin an episode; 1 and 3 continue one
    ours = SequenceLstmPolicy._process_sequence(features, states, starts.flatten(), lstm)
    theirs = RecurrentActorCriticPolicy._process_sequence(features, states, starts.flatten(), lstm)
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[1][0], theirs[1][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[1][1], theirs[1][1], rtol=0, atol=1e-6)
    starts[1, 3] = 1.0  # an episode starting inside a sequence
    inside = SequenceLstmPolicy._process_sequence(features, states, starts.flatten(), lstm)
    assert torch.equal(
        inside[0], RecurrentActorCriticPolicy._process_sequence(features, states, starts.flatten(), lstm)[0]
    )
