"""Shared fixtures: compose configs the way the CLI does, with one expert cache per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from testbed.config import Config, register_configs, to_config

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()
torch.set_num_threads(1)

CfgFactory = Callable[..., DictConfig]  # fast_cfg: composed configs, what run() takes
JobFactory = Callable[..., Config]  # fast_job: the same, converted, what the stages take


def make_cfg(*overrides: str) -> DictConfig:
    """Compose conf/config.yaml with overrides, exactly as `python -m testbed.cli` would."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def make_job(*overrides: str) -> Config:
    """make_cfg converted as pipeline.setup converts it: the frozen Config every stage takes."""
    return to_config(make_cfg(*overrides))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so the fast expert is trained once and shared by every test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def fast_cfg(cache_dir: Path, tmp_path: Path) -> CfgFactory:
    """A factory of fast CartPole configs writing into this test's own folder."""

    def factory(*overrides: str) -> DictConfig:
        # No wandb run unless a test asks for one (`logger=wandb`): it costs seconds per process.
        return make_cfg(
            "env=cartpole",
            "debug=fast",
            "logger=none",
            f"cache_dir={cache_dir}",
            f"output_dir={tmp_path / 'job'}",
            *overrides,
        )

    return factory


@pytest.fixture
def fast_job(fast_cfg: CfgFactory) -> JobFactory:
    """fast_cfg's configs, converted: for tests that call stages directly."""
    return lambda *overrides: to_config(fast_cfg(*overrides))


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Files made during the test see umask 022, as on most machines; the old umask comes back after."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)
