"""Tasks made for the testbed: memory tasks whose final answer depends on every step before it (registered with
gymnasium on import)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

PARITY_ID = "testbed/Parity-v0"
MAX_BITS = 4096  # longer episodes only slow every stage down; the memory question is already there at 64


class ParityEnv(gym.Env[np.ndarray, np.int64]):
    """n random bits shown one per step, then a query step: answer the parity (XOR) of all n bits.

    Observation `[bit, query, parity]` (float32 in {0, 1}): on showing step t = 0..n-1 the t-th bit, query 0 and
    the parity of bits 0..t; then `[0, 1, parity of all n bits]`. Actions are ignored until the query, where the
    right answer earns 1.0 and ends the episode (n + 1 actions in all). The parity component is the running
    sub-result that `env.mask_velocity` hides from the learner, who must then carry it in memory.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, n: int = 16):
        if not isinstance(n, int) or not 1 <= n <= MAX_BITS:
            raise ValueError(f"env.kwargs.n={n!r}: parity needs an integer number of bits in [1, {MAX_BITS}]")
        self.n = n
        self.observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._bits = np.zeros(n, dtype=np.int64)
        self._parity = np.zeros(n, dtype=np.int64)  # _parity[t]: XOR of bits 0..t
        self._t = 0  # the step being shown; n is the query

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._bits = self.np_random.integers(0, 2, size=self.n)
        self._parity = np.cumsum(self._bits) % 2
        self._t = 0
        return self._obs(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._t < self.n:  # a showing step: nothing to answer yet
            self._t += 1
            return self._obs(), 0.0, False, False, {}
        reward = float(int(action) == self._parity[-1])
        return self._obs(), reward, True, False, {}

    def _obs(self) -> np.ndarray:
        if self._t < self.n:
            return np.array([self._bits[self._t], 0, self._parity[self._t]], dtype=np.float32)
        return np.array([0, 1, self._parity[-1]], dtype=np.float32)


# Guarded: a second import (or a reload) must not re-register the id.
if PARITY_ID not in gym.registry:
    gym.register(id=PARITY_ID, entry_point="testbed.tasks:ParityEnv")
