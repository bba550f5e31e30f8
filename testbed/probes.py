"""How readable a learner's memory is (eval.memory_probe): a linear probe from what it carries to its next step
to the state the task hides from it, and, for a scratchpad, what happens when its notes are overwritten.

Memory per policy: mlp, its observation (nothing else carries: the baseline of what one observation tells);
framestack, its stacked observations; scratchpad, the values it writes; lstm, the actor LSTM's hidden and cell
state. The target is the hidden state (parity's running result, the true velocity) of the observation acted on.
Probe episodes start from evaluation seeds PROBE_SEED_OFFSET on, disjoint from the scored evaluation episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from testbed.config import Config
from testbed.envs import EVAL_SEED_BASE, hidden_indices
from testbed.evaluate import ActFn, EpisodeAct, normalized_score
from testbed.memory import Scratchpad, learner_env

PROBE_SEED_OFFSET = 5_000
RIDGE = 1e-6  # keeps the least-squares fit defined for rank-deficient memories (constant or repeated values)


@dataclass(frozen=True)
class MemoryTrace:
    """One row per step acted on, over the probe episodes."""

    memory: np.ndarray  # (steps, m) what the learner carries to its next step
    hidden: np.ndarray  # (steps, h) the true hidden state of the observation acted on
    episode: np.ndarray  # (steps,) the episode's index
    returns: np.ndarray  # (episodes,) undiscounted returns
    # A scratchpad's, without overwrite: whether showing it the true (the wrong) note instead of its own, at this
    # step only, changes its env action; else empty.
    changed: dict[str, np.ndarray]


def probe_seeds(cfg: Config, episodes: int) -> list[int]:
    return [EVAL_SEED_BASE + 10_000 * cfg.eval.seed + PROBE_SEED_OFFSET + i for i in range(episodes)]


def is_binary(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0.0, 1.0)).all())


def linear_probe(x: np.ndarray, y: np.ndarray, episode: np.ndarray) -> float:
    """Held-out readability of `y` from `x` by a linear map with intercept (least squares, fitted on the even
    episodes, scored on the odd ones): accuracy of the prediction thresholded at 0.5 when every target is 0 or
    1, else R^2 (1 - SSE / SST over every target dimension, the test targets' own mean as baseline)."""
    x = np.column_stack([np.asarray(x, float).reshape(len(x), -1), np.ones(len(x))])
    y = np.asarray(y, float).reshape(len(y), -1)
    train, test = episode % 2 == 0, episode % 2 == 1
    if not train.any() or not test.any():
        raise ValueError("a linear probe needs at least two episodes (fit on even ones, scored on odd ones)")
    a = x[train]
    w = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ y[train])
    pred = x[test] @ w
    if is_binary(y):
        return float(((pred > 0.5) == (y[test] > 0.5)).mean())
    sst = float(((y[test] - y[test].mean(axis=0)) ** 2).sum())
    return float(1.0 - ((y[test] - pred) ** 2).sum() / sst) if sst > 0 else float("nan")


def trace_memory(cfg: Config, act: ActFn | EpisodeAct, episodes: int, overwrite: str | None = None) -> MemoryTrace:
    """Run the probe episodes, recording memory and hidden state per step. `overwrite` ("true" | "wrong", a
    scratchpad only, memory.Scratchpad) replaces every note it writes before it reads it back; without it, a
    scratchpad's single-step interventions are recorded too (MemoryTrace.changed)."""
    seeds = probe_seeds(cfg, episodes)
    envs = [learner_env(cfg.env, cfg.policy, track_hidden=True) for _ in seeds]
    pads = [e for e in envs if isinstance(e, Scratchpad)]
    for pad in pads:
        pad.overwrite = overwrite
    obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    truth = [pad.scratch.copy() for pad in pads]  # the true note each episode reads next (the start value first)
    returns = np.zeros(len(seeds))
    rows: list[tuple[np.ndarray, np.ndarray, int]] = []
    changed: dict[str, list[np.ndarray]] = {"true": [], "wrong": []}
    alive = list(range(len(seeds)))
    if isinstance(act, EpisodeAct):
        act.start(len(seeds))
    while alive:
        batch = np.stack([obs[i] for i in alive])
        actions = act(batch, np.asarray(alive)) if isinstance(act, EpisodeAct) else act(batch)
        if pads and overwrite is None:
            notes = [truth[i] for i in alive]
            for label in changed:
                changed[label].append(_changed(act, batch, actions, [pads[0].note(n, label == "wrong") for n in notes]))
        memory = _memory(cfg, act, batch, actions, envs, alive)
        still = []
        for j, (i, action) in enumerate(zip(alive, actions, strict=True)):
            hidden = np.asarray(envs[i].get_wrapper_attr("hidden"), float)
            rows.append((memory[j], hidden, i))
            if pads:
                truth[i] = hidden
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += float(reward)
            if not (terminated or truncated):
                still.append(i)
        alive = still
    for env in envs:
        env.close()
    return MemoryTrace(
        memory=np.stack([r[0] for r in rows]),
        hidden=np.stack([r[1] for r in rows]),
        episode=np.array([r[2] for r in rows]),
        returns=returns,
        changed={k: np.concatenate(v) for k, v in changed.items() if v},
    )


def _memory(
    cfg: Config, act: ActFn | EpisodeAct, obs: np.ndarray, actions: np.ndarray, envs: list[gym.Env], alive: list[int]
) -> np.ndarray:
    kind = cfg.policy.kind
    if kind == "lstm":
        return np.asarray(act.memory(np.asarray(alive)))  # type: ignore[union-attr]  # RecurrentAct
    if kind == "scratchpad":
        return np.stack([envs[i].split(a)[1] for i, a in zip(alive, actions, strict=True)])  # type: ignore[attr-defined]
    return obs.reshape(len(obs), -1)


def _changed(act: ActFn | EpisodeAct, obs: np.ndarray, actions: np.ndarray, notes: list[np.ndarray]) -> np.ndarray:
    """Whether each env action changes when the observation shows `notes` in place of the learner's own note."""
    assert not isinstance(act, EpisodeAct)  # a scratchpad is feed-forward
    shown = obs.copy()
    shown[:, -len(notes[0]) :] = np.stack(notes)
    mine, other = np.asarray(actions).reshape(len(obs), -1), np.asarray(act(shown)).reshape(len(obs), -1)
    return mine[:, 0] != other[:, 0]


def memory_columns(cfg: Config, act_fn: Callable[[], ActFn | EpisodeAct], refs: dict[str, float]) -> dict[str, Any]:
    """A checkpoint's `memory/...` columns: the probe's readability; for a scratchpad also the causal check, its
    normalized score with its own notes (`own_score`) and with every note overwritten by the truth and by a wrong
    value (`true_score`, `wrong_score`), and the fraction of steps at which showing it the true (the wrong) note
    at that step alone changes its env action (`true_action_change`, `wrong_action_change`)."""
    if not hidden_indices(cfg.env):
        return {}
    episodes = cfg.eval.episodes
    trace = trace_memory(cfg, act_fn(), episodes)
    name = "accuracy" if is_binary(trace.hidden) else "r2"
    row: dict[str, Any] = {f"memory/probe_{name}": linear_probe(trace.memory, trace.hidden, trace.episode)}
    if cfg.policy.kind != "scratchpad":
        return row
    row["memory/causal/own_score"] = _score(trace, refs)
    for label in ("true", "wrong"):
        row[f"memory/causal/{label}_score"] = _score(trace_memory(cfg, act_fn(), episodes, overwrite=label), refs)
        row[f"memory/causal/{label}_action_change"] = float(trace.changed[label].mean())
    return row


def _score(trace: MemoryTrace, refs: dict[str, float]) -> float:
    return normalized_score(float(trace.returns.mean()), refs["random_return"], refs["expert_return"])
