"""Dataset round trip through Minari's format, and every validation failure names file and field."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from testbed.cache import CacheError
from testbed.config import EnvConfig
from testbed.demonstrations import DatasetError, check_episodes, load_dataset, record_episode, write_dataset
from testbed.envs import make_env

ENV = EnvConfig(id="CartPole-v1", name="cartpole", reference_return=475.0)


def random_episodes(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    env = make_env(ENV)
    env.action_space.seed(seed)
    return [record_episode(env, lambda obs: env.action_space.sample(), seed + i) for i in range(n)]


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    episodes = random_episodes(3)
    folder = tmp_path / "testbed" / "cartpole-abc-v0"
    write_dataset(folder, episodes, ENV, key="abc")
    demos = load_dataset(folder, ENV)
    assert demos.n_episodes == 3
    np.testing.assert_array_equal(demos.observations, np.concatenate([e["observations"][:-1] for e in episodes]))
    np.testing.assert_array_equal(demos.actions, np.concatenate([e["actions"] for e in episodes]))
    np.testing.assert_array_equal(demos.rewards, np.concatenate([e["rewards"] for e in episodes]))
    np.testing.assert_array_equal(demos.terminated, np.concatenate([e["terminations"] for e in episodes]))
    np.testing.assert_array_equal(demos.truncated, np.concatenate([e["truncations"] for e in episodes]))
    np.testing.assert_array_equal(demos.returns, [e["rewards"].sum() for e in episodes])
    assert list(demos.episode_starts) == [
        0,
        len(episodes[0]["actions"]),
        len(episodes[0]["actions"]) + len(episodes[1]["actions"]),
    ]
    assert (folder / "data" / "main_data.hdf5").exists(), "stored in Minari's layout"
    hidden = [p.name for p in (tmp_path / "testbed").iterdir() if p.name.startswith(".")]
    assert hidden == [], "no staging folder or temp file is left behind"


def test_minari_reads_it_back_with_its_own_loader(tmp_path: Path) -> None:
    from minari import MinariDataset

    folder = tmp_path / "testbed" / "cartpole-abc-v0"
    write_dataset(folder, random_episodes(2), ENV, key="abc")
    assert MinariDataset(folder / "data").total_episodes == 2


def _broken(field: str, change) -> list[dict[str, np.ndarray]]:  # type: ignore[no-untyped-def]
    episodes = random_episodes(2)
    episodes[1][field] = change(episodes[1][field])
    return episodes


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("actions", lambda a: a[:-1], "length"),
        ("rewards", lambda r: r[:-1], "length"),
        ("observations", lambda o: np.where(np.arange(len(o))[:, None] == 2, np.nan, o).astype(np.float32), "NaN"),
        ("observations", lambda o: o.astype(np.complex64), "dtype"),
        ("terminations", lambda t: t.astype(np.float32), "dtype"),
        ("actions", lambda a: a + 5, "outside the space"),
        ("rewards", lambda r: r * np.inf, "NaN or infinite"),
    ],
)
def test_validation_names_file_episode_and_field(field: str, change, message: str) -> None:  # type: ignore[no-untyped-def]
    env = make_env(ENV)
    with pytest.raises(DatasetError) as info:
        check_episodes(_broken(field, change), env.observation_space, env.action_space, Path("/x/main_data.hdf5"))
    text = str(info.value)
    assert "/x/main_data.hdf5" in text and "episode 1" in text and f"'{field}'" in text and message in text


def test_tampered_file_fails_its_hash_and_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "testbed" / "cartpole-abc-v0"
    write_dataset(folder, random_episodes(2), ENV, key="abc")
    data = folder / "data" / "main_data.hdf5"
    with h5py.File(data, "r+") as f:
        f["episode_0/actions"][0] = 1 - f["episode_0/actions"][0]
    before = data.read_bytes()
    with pytest.raises(CacheError, match="does not match its hash"):
        load_dataset(folder, ENV)
    assert data.read_bytes() == before, "a failed load never rewrites the cached file"


def test_corrupt_metadata_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "testbed" / "cartpole-abc-v0"
    write_dataset(folder, random_episodes(1), ENV, key="abc")
    (folder / "testbed.json").write_text("{not json")
    with pytest.raises(CacheError, match="testbed.json"):
        load_dataset(folder, ENV)
