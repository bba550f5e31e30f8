"""A job the pipeline cannot run fails at validation, before anything trains, with a message naming the key (and
the env id or file); a job on another env id than its env file's is named after that id and borrows none of the
file's references."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from stable_baselines3 import PPO

from testbed.pipeline import run, setup
from testbed.results import run_name
from testbed.validation import validate_job
from tests.conftest import CONF, make_cfg, make_job

ENV_NAMES = sorted(p.stem for p in (CONF / "env").glob("*.yaml"))
# A job on MountainCarContinuous-v0 composed from Pendulum's file (both: Box observations, one Box action).
MCC = ("env=pendulum", "env.id=MountainCarContinuous-v0")


# 1. Spaces the pipeline does not support.


class _MultiDiscreteActions(gym.Env):
    """Box observations, MultiDiscrete actions: an action space BC's direct path and voting do not handle."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[no-untyped-def]
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):  # type: ignore[no-untyped-def]
        return np.zeros(2, np.float32), 0.0, True, False, {}


gym.register("TestbedMultiDiscreteActions-v0", entry_point=_MultiDiscreteActions, max_episode_steps=5)  # type: ignore[arg-type]


def test_discrete_observations_fail_naming_env_id_and_space() -> None:
    with pytest.raises(ValueError, match=r"env.id='CliffWalking-v1'.*observation space Discrete\(48\)"):
        setup(make_cfg("env=cartpole", "debug=fast", "env.id=CliffWalking-v1"))


def test_observation_space_is_checked_after_the_env_wrappers() -> None:
    validate_job(make_job("env=doorkey"))  # MiniGrid's Dict observation, a Box after env.wrapper=minigrid_flat
    with pytest.raises(ValueError, match=r"env.id='MiniGrid-DoorKey-5x5-v0'.*observation space Dict"):
        validate_job(make_job("env=doorkey", "env.wrapper=null"))


def test_unsupported_action_space_fails_naming_env_id_and_space() -> None:
    cfg = make_job("env=cartpole", "debug=fast", "env.id=TestbedMultiDiscreteActions-v0", "env.success_return=null")
    with pytest.raises(ValueError, match=r"env.id='TestbedMultiDiscreteActions-v0'.*action space MultiDiscrete"):
        validate_job(cfg)


def test_dqn_expert_needs_discrete_actions() -> None:
    cfg = make_job("env=mountaincar", "env.id=MountainCarContinuous-v0", "expert.check_reference=false")
    with pytest.raises(ValueError, match=r"env.expert_algo='dqn'.*Discrete.*MountainCarContinuous-v0"):
        validate_job(cfg)


def test_unsupported_env_trains_and_caches_nothing(tmp_path: Path) -> None:
    cfg = make_cfg(
        "env=cartpole", "debug=fast", "logger=none", "env.id=CliffWalking-v1",
        f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
    )  # fmt: skip
    with pytest.raises(ValueError, match="CliffWalking-v1"):
        run(cfg)
    assert not (tmp_path / "cache").exists(), "nothing may be trained or cached for an unsupported env"


# 2. Run identity and references from the env id actually used.


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_files_keep_their_names_and_say_what_their_settings_are_for(name: str) -> None:
    cfg = make_cfg(f"env={name}")
    assert cfg.env.name == name
    assert cfg.env.settings_for == cfg.env.id


def test_another_env_id_names_the_run_folder_and_cache_after_itself() -> None:
    cfg = make_cfg(*MCC, "expert.check_reference=false")
    assert cfg.env.name == "mountaincarcontinuous-v0"
    assert run_name(cfg) == "mountaincarcontinuous-v0-bc-s0"
    # The file's name comes back with the file's id, whatever settings_for says.
    assert make_cfg("env=pendulum", "env.settings_for=Other-v0").env.name == "pendulum"


def test_hydra_folders_use_the_name_of_the_env_id_used() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*MCC, "expert.check_reference=false"], return_hydra_config=True)
    assert cfg.hydra.sweep.dir.startswith("multirun/mountaincarcontinuous-v0/")
    # The run folder is claimed (created) as it resolves, so only read what it is made of; a real job's folder is
    # checked in tests/integration/test_validation_jobs.py.
    assert "outputs/${env.name}/" in OmegaConf.to_yaml(cfg.hydra.run)  # unresolved


def test_borrowed_reference_return_fails_naming_both_ids() -> None:
    with pytest.raises(ValueError) as info:
        validate_job(make_job(*MCC))
    message = str(info.value)
    for part in ("env.id='MountainCarContinuous-v0'", "env.reference_return=-250.0", "Pendulum-v1",
                 "env.settings_for=MountainCarContinuous-v0", "expert.check_reference=false"):  # fmt: skip
        assert part in message, (part, message)


def test_reference_of_the_env_id_or_no_check_passes() -> None:
    validate_job(make_job(*MCC, "expert.check_reference=false"))
    cfg = make_job(*MCC, "env.reference_return=90", "env.settings_for=MountainCarContinuous-v0")
    validate_job(cfg)
    assert cfg.env.name == "mountaincarcontinuous-v0"


def test_borrowed_success_return_fails_naming_it() -> None:
    # CartPole's success_return (475) would score every Acrobot episode a failure.
    cfg = make_job("env=cartpole", "debug=fast", "env.id=Acrobot-v1")
    with pytest.raises(ValueError, match=r"env.success_return=475.0 .*CartPole-v1.*env.success_return=null"):
        validate_job(cfg)
    validate_job(make_job("env=cartpole", "debug=fast", "env.id=Acrobot-v1", "env.success_return=null"))


# 3. Seeds.


@pytest.mark.parametrize("key", ["seed", "expert.seed", "demos.seed", "eval.seed"])
def test_negative_seed_fails_naming_the_key(key: str) -> None:
    with pytest.raises(ValueError, match=rf"^{key}=-1 is out of range"):
        setup(make_cfg("env=cartpole", "debug=fast", f"{key}=-1"))


def test_seed_beyond_numpys_range_fails_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"^seed=4294967296 is out of range"):
        validate_job(make_job("env=cartpole", f"seed={2**32}"))


@pytest.mark.parametrize("steps", ["[0]", "[100,2001]"])
def test_bc_checkpoint_outside_the_run_fails_naming_the_key(steps: str) -> None:
    with pytest.raises(ValueError, match=r"^bc.checkpoints must lie in \[1, bc.grad_steps=2000\]"):
        validate_job(make_job("env=cartpole", f"bc.checkpoints={steps}"))


@pytest.mark.parametrize("setting", ["rl.init=scratch", "rl.critic_warmup_steps=256"])
def test_bc_control_without_a_bc_start_or_with_a_warm_up_fails_naming_the_key(setting: str) -> None:
    with pytest.raises(ValueError, match=r"^eval.bc_control continues BC"):
        validate_job(make_job("env=cartpole", "eval.bc_control=true", setting))


def test_unknown_lr_rule_fails_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"lr_rule"):
        validate_job(make_job("env=cartpole", "lr_rule=sqrt"))


def test_more_demonstrations_than_one_sets_start_seeds_fail() -> None:
    """demos.seed s starts its episodes s x 10,000 apart: 10,001 would reuse set s + 1's first start state."""
    validate_job(make_job("env=cartpole", "demos.episodes=9999", "demos.mix=[{episodes:1}]"))
    with pytest.raises(ValueError, match=r"^demos: 10001 episodes in all"):
        validate_job(make_job("env=cartpole", "demos.episodes=10000", "demos.mix=[{episodes:1}]"))


# 4. A user's expert file.


def _bad_zips(folder: Path) -> dict[str, Path]:
    """Files that are not SB3 models: text, a zip without SB3's data, a truncated SB3 zip, a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.zip").write_text("not a zip")
    with zipfile.ZipFile(folder / "other.zip", "w") as z:
        z.writestr("readme.txt", "not a model")
    good = folder / "good.zip"
    PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, device="cpu").save(good)
    data = good.read_bytes()
    (folder / "truncated.zip").write_bytes(data[: len(data) // 2])
    return {name: folder / name for name in ("notes.zip", "other.zip", "truncated.zip")} | {"folder": folder}


def test_expert_path_that_is_no_sb3_model_fails_naming_key_and_file(tmp_path: Path) -> None:
    for path in _bad_zips(tmp_path / "zips").values():
        cfg = make_job("env=cartpole", "debug=fast", f"expert.path={path}")
        with pytest.raises(ValueError, match=rf"^expert.path={re.escape(str(path))}: .*SB3 PPO model"):
            validate_job(cfg)
    validate_job(make_job("env=cartpole", "debug=fast", f"expert.path={tmp_path / 'zips' / 'good.zip'}"))


def test_missing_expert_path_fails_naming_key_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(FileNotFoundError, match=rf"^expert.path={re.escape(str(missing))} does not exist"):
        validate_job(make_job("env=cartpole", "debug=fast", f"expert.path={missing}"))


def test_bad_expert_path_trains_and_caches_nothing(tmp_path: Path) -> None:
    path = _bad_zips(tmp_path / "zips")["truncated.zip"]
    cfg = make_cfg(
        "env=cartpole", "debug=fast", "logger=none", f"expert.path={path}",
        f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
    )  # fmt: skip
    with pytest.raises(ValueError, match="expert.path"):
        run(cfg)
    assert not (tmp_path / "cache").exists()
