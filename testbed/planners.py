"""Exact experts that need no training (env.expert_algo=planner): one planner per task, acting on one flat
observation and returning its action.

A planner acts on the observation alone, so it needs a fully observed task: for MiniGrid, the `minigrid_full`
wrapper's flattened (width x height x 3) grid encoding; for parity, the full observation with its running result
(envs.PLANNER_NEEDS says what each needs). Its identity is a hash of this file's source, so editing a planner
re-keys every demonstration set and reference made with it.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

# MiniGrid's encoding (minigrid.core.constants): object index per cell, door states, direction vectors.
EMPTY, FLOOR, DOOR, KEY, GOAL, AGENT = 1, 3, 4, 5, 8, 10
DOOR_OPEN, DOOR_LOCKED = 0, 2
LEFT, RIGHT, FORWARD, PICKUP, TOGGLE = 0, 1, 2, 3, 5
DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # right, down, left, up


def _cells(grid: np.ndarray, kind: int) -> list[tuple[int, int]]:
    xs, ys = np.nonzero(grid[:, :, 0] == kind)
    return [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]


def _passable(grid: np.ndarray, x: int, y: int) -> bool:
    kind, _, state = grid[x, y]
    return kind in (EMPTY, FLOOR, GOAL, AGENT) or (kind == DOOR and state == DOOR_OPEN)


def _first_step(grid: np.ndarray, start: tuple[int, int, int], done: Callable[[int, int, int], bool]) -> int | None:
    """The first of the fewest left/right/forward moves from `start` (x, y, direction) to a state where `done`
    holds; None when already there or when no such state is reachable."""
    if done(*start):
        return None
    first: dict[tuple[int, int, int], int] = {start: -1}
    queue = deque([start])
    while queue:
        x, y, d = state = queue.popleft()
        dx, dy = DIRECTIONS[d]
        moves = [(LEFT, (x, y, (d - 1) % 4)), (RIGHT, (x, y, (d + 1) % 4))]
        if _passable(grid, x + dx, y + dy):
            moves.append((FORWARD, (x + dx, y + dy, d)))
        for action, nxt in moves:
            if nxt in first:
                continue
            first[nxt] = action if first[state] == -1 else first[state]
            if done(*nxt):
                return first[nxt]
            queue.append(nxt)
    return None


def doorkey_action(grid: np.ndarray) -> int:
    """MiniGrid DoorKey: fetch the key, open the door, walk to the goal, each by a shortest path.

    The key counts as carried once it is no longer on the grid (the full encoding shows no carried object), and
    the agent's own cell shows the agent, not what it stands on.
    """
    ax, ay = _cells(grid, AGENT)[0]
    start = (ax, ay, int(grid[ax, ay, 2]))  # the agent's cell holds its direction
    doors, keys = _cells(grid, DOOR), _cells(grid, KEY)
    door = doors[0] if doors else None  # no door cell: the agent stands in the (open) doorway
    door_state = DOOR_OPEN if door is None else grid[door][2]

    def facing(target: tuple[int, int]) -> Callable[[int, int, int], bool]:
        return lambda x, y, d: (x + DIRECTIONS[d][0], y + DIRECTIONS[d][1]) == target

    if door_state == DOOR_LOCKED and keys:  # the key is still on the floor: pick it up
        step = _first_step(grid, start, facing(keys[0]))
        return PICKUP if step is None else step
    if door is not None and door_state != DOOR_OPEN:  # carrying the key (or the door is only closed): open it
        step = _first_step(grid, start, facing(door))
        return TOGGLE if step is None else step
    goal = _cells(grid, GOAL)[0]
    step = _first_step(grid, start, lambda x, y, d: (x, y) == goal)
    return FORWARD if step is None else step


def square_grid(obs: np.ndarray, planner: str) -> np.ndarray:
    """A flattened (side x side x 3) MiniGrid encoding back as its grid."""
    side = int(round((obs.size / 3) ** 0.5))
    if side * side * 3 != obs.size:
        raise ValueError(f"planner '{planner}' needs a flattened square grid, got {obs.size} values")
    return obs.reshape(side, side, 3)


def minigrid_doorkey(obs: np.ndarray) -> int:
    """doorkey_action on `minigrid_full`'s flattened grid."""
    return doorkey_action(square_grid(obs, "minigrid_doorkey"))


def parity_action(obs: np.ndarray) -> int:
    """testbed/Parity-v0 (`[bit, query, parity]`): answer the parity at the query step, else 0.

    Not the running parity on the showing steps, where any action does: those labels would hand each sub-result
    to a learner that is meant to find them from the final answer alone.
    """
    return int(obs[2] > 0.5) if obs[1] > 0.5 else 0


# Each acts on one flat observation row.
PLANNERS: dict[str, Callable[[np.ndarray], int]] = {"minigrid_doorkey": minigrid_doorkey, "parity": parity_action}


def source_sha256() -> str:
    """The planners' identity: a hash of this file, so a changed planner never reuses cached demonstrations."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


class PlannerModel:
    """A planner behind the part of SB3's model interface the pipeline calls: `predict` on one or a batch of
    flattened observations."""

    def __init__(self, name: str):
        if name not in PLANNERS:
            raise ValueError(f"env.expert_planner='{name}' is not one of {sorted(PLANNERS)}")
        self.name, self.act = name, PLANNERS[name]

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        obs = np.asarray(obs)
        actions = np.array([self.act(row) for row in obs.reshape(-1, obs.shape[-1])])
        return (actions if obs.ndim > 1 else actions[0]), None
