"""Demonstration quality on the fast CartPole expert: weaker experts from checkpoints, noise, mixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.cache import read_json
from testbed.demonstrations import collect_episodes, demos_key, get_demonstrations
from testbed.evaluate import normalized_score
from testbed.expert import get_expert, random_reference, weaker_expert
from testbed.pipeline import run
from tests.conftest import CfgFactory, JobFactory

pytestmark = pytest.mark.slow


def test_weaker_expert_is_the_first_checkpoint_reaching_the_target(fast_job: JobFactory) -> None:
    cfg = fast_job()
    expert = get_expert(cfg)
    # Both ends on the expert's check episodes, where the checkpoints are scored.
    random_return = random_reference(cfg.env, cfg.cache_dir, cfg.expert.eval_episodes, seed=0)["return_mean"]
    weak = weaker_expert(cfg, expert, 0.3)
    assert weak.source == "checkpoint" and weak.steps is not None and weak.steps < cfg.env.expert_timesteps
    assert normalized_score(weak.return_mean, random_return, expert.return_mean) >= 0.3
    # Every earlier checkpoint falls short of the target (they were evaluated in order and cached).
    folder = expert.path.parent
    meta = read_json(folder / "meta.json")
    scores = read_json(folder / f"checkpoint_returns-{cfg.expert.eval_episodes}.json")
    earlier = [c["file"] for c in meta["checkpoints"] if c["steps"] < weak.steps]
    assert all(normalized_score(scores[f]["return_mean"], random_return, expert.return_mean) < 0.3 for f in earlier)
    assert weaker_expert(cfg, expert, 0.3).sha256 == weak.sha256, "the choice is stable"
    assert weaker_expert(cfg, expert, 1.0) is expert


def test_mixed_dataset_records_each_source(fast_job: JobFactory) -> None:
    cfg = fast_job("demos.episodes=2", "demos.mix=[{episodes:3,epsilon:1.0},{episodes:2,expert_quality:0.3}]")
    expert = get_expert(cfg)
    demos = get_demonstrations(cfg, expert)
    assert demos.n_episodes == 7
    assert [s["episodes"] for s in demos.sources] == [2, 3, 2]
    meta = json.loads((demos.path / "testbed.json").read_text())
    assert meta["episode_sources"] == [0, 0, 1, 1, 1, 2, 2]
    for j, source in enumerate(demos.sources):
        own = demos.returns[np.array(meta["episode_sources"]) == j]
        assert source["mean_return"] == pytest.approx(own.mean())
    expert_src, noisy_src, weak_src = demos.sources
    assert expert_src["expert_sha256"] == expert.sha256 and expert_src["expert_return"] == expert.return_mean
    assert noisy_src["mean_return"] < expert_src["mean_return"], "all-random actions lose return"
    assert weak_src["expert_sha256"] != expert.sha256 and weak_src["expert_steps"] < cfg.env.expert_timesteps
    # Every episode starts from its own demonstration seed.
    firsts = demos.observations[demos.episode_starts]
    assert len({tuple(o) for o in firsts}) == demos.n_episodes


def test_plain_and_mixed_datasets_are_cached_apart(fast_job: JobFactory) -> None:
    cfg_plain = fast_job("demos.episodes=2")
    expert = get_expert(cfg_plain)
    plain = get_demonstrations(cfg_plain, expert)
    noisy = get_demonstrations(fast_job("demos.episodes=2", "demos.epsilon=0.5"), expert)
    weak = get_demonstrations(fast_job("demos.episodes=2", "demos.expert_quality=0.3"), expert)
    assert len({plain.key, noisy.key, weak.key}) == 3
    assert plain.sources[0]["epsilon"] == 0.0 and noisy.sources[0]["epsilon"] == 0.5
    assert weak.sources[0]["expert_quality"] == 0.3


def test_results_json_shows_the_datasets_own_mean_return(fast_cfg: CfgFactory, tmp_path: Path) -> None:
    cfg = fast_cfg(f"output_dir={tmp_path / 'job'}", "rl.budgets=[0]", "demos.mix=[{episodes:2,epsilon:1.0}]")
    data = run(cfg)
    demos = data["artifacts"]["demos"]
    meta = json.loads((Path(demos["path"]) / "testbed.json").read_text())
    assert demos["mean_return"] == pytest.approx(np.mean(meta["returns"]))
    assert demos["mean_return"] < data["references"]["expert_return"]


@pytest.mark.parametrize("epsilon", [0.0, 0.4])
def test_fewer_episodes_are_the_first_of_a_larger_cached_set(fast_job: JobFactory, epsilon: float) -> None:
    """Starts that differ only in their demonstration count share one collection: 3 episodes after 6 are the first 3
    of the 6 (no new dataset), and equal 3 collected on their own (episode i's seed and epsilon draws are fixed)."""
    large = fast_job("demos.episodes=6", f"demos.epsilon={epsilon}", "demos.seed=7")
    expert = get_expert(large)
    six = get_demonstrations(large, expert)
    datasets = lambda: sorted(p for p in six.path.parent.iterdir() if p.is_dir())  # noqa: E731
    before = datasets()
    small = fast_job("demos.episodes=3", f"demos.epsilon={epsilon}", "demos.seed=7")
    three = get_demonstrations(small, expert)
    assert datasets() == before, "no dataset of its own"
    assert (three.path, three.sha256, three.n_episodes) == (six.path, six.sha256, 3)
    assert three.key == demos_key(small, expert) != six.key
    alone = collect_episodes(small.env, expert, small.demos)
    assert np.array_equal(three.actions, np.concatenate([ep["actions"] for ep in alone]))
    assert np.array_equal(three.observations, np.concatenate([ep["observations"][:-1] for ep in alone]))
    assert three.sources[0]["episodes"] == 3 and three.mean_return == np.mean([ep["rewards"].sum() for ep in alone])
    # A mixture is never a prefix (its later sources start after the earlier ones' episodes): collected anew.
    mixed = get_demonstrations(fast_job("demos.episodes=3", "demos.seed=7", "demos.mix=[{episodes:1}]"), expert)
    assert mixed.path != six.path
