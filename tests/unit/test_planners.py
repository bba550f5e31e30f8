"""The exact planner expert: it solves its task from the observation alone, and refuses what it cannot do."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.envs import check_spaces, make_env
from testbed.evaluate import evaluate, policy_act
from testbed.planners import PLANNERS, PlannerModel, doorkey_action
from tests.conftest import make_job


@pytest.mark.parametrize("env_id", ["MiniGrid-DoorKey-5x5-v0", "MiniGrid-DoorKey-8x8-v0", "MiniGrid-DoorKey-16x16-v0"])
def test_the_doorkey_planner_solves_every_episode_by_a_short_path(env_id: str) -> None:
    """Success on every one of 30 evaluation episodes; in steps, no more than a loose bound on a shortest path
    (walk to the key, to the door, to the goal, each at most the grid's perimeter, plus the turns)."""
    env = make_job("env=doorkey8", f"env.id={env_id}", "env.settings_for=" + env_id).env
    cap = evaluate(env, policy_act(PlannerModel("minigrid_doorkey")), 30)
    side = int(env_id.split("-")[-2].split("x")[0])
    assert cap.success_rate == 1.0
    assert cap.lengths.max() <= 3 * 4 * side, cap.lengths


def test_the_planner_acts_on_one_observation_or_a_batch_alike() -> None:
    env = make_env(make_job("env=doorkey8").env)
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    model = PlannerModel("minigrid_doorkey")
    batch, _ = model.predict(obs)
    assert [int(model.predict(o)[0]) for o in obs] == list(batch)
    assert list(batch) == [doorkey_action(o.reshape(8, 8, 3)) for o in obs]


def test_the_planner_picks_up_the_key_when_facing_it_and_opens_the_locked_door_when_carrying_it() -> None:
    # A 5x5 grid indexed [x, y]: walls around and along the row y=3, empty cells above it, a locked door at (2, 3)
    grid = np.zeros((5, 5, 3), dtype=np.uint8)
    grid[:, :, 0] = 2  # walls
    grid[1:4, 1:3, 0] = 1  # empty cells
    grid[2, 3] = (4, 0, 2)  # the locked door
    grid[2, 1] = (5, 0, 0)  # the key, right of the agent
    grid[1, 1] = (10, 0, 0)  # the agent, facing right (+x): the key is in front
    assert doorkey_action(grid) == 3  # pickup
    grid[2, 1] = (1, 0, 0)  # the key is gone (carried); the agent now stands above the door, facing down
    grid[1, 1] = (1, 0, 0)
    grid[2, 2] = (10, 0, 1)
    assert doorkey_action(grid) == 5  # toggle


def test_unknown_planner_and_planner_without_a_full_grid_fail_naming_the_key() -> None:
    assert "minigrid_doorkey" in PLANNERS
    with pytest.raises(ValueError, match="env.expert_planner='nope'"):
        PlannerModel("nope")
    with pytest.raises(ValueError, match="env.wrapper=minigrid_full"):
        check_spaces(make_job("env=doorkey8", "env.wrapper=minigrid_flat").env)
