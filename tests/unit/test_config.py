"""Every conf/ file composes; bad input fails before any training, with a message that names it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from testbed.pipeline import run
from testbed.validation import validate_job
from tests.conftest import CONF, make_cfg

GROUP_OPTIONS = sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml") if p.parent.name not in ("hydra",))


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_conf_file_composes_and_validates(group: str, option: str) -> None:
    if group == "launcher":
        pytest.skip("launchers compose under hydra/launcher, tested with sweeps")
    cfg = make_cfg(f"{group}={option}")
    validate_job(cfg)


def test_typo_in_key_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg("bc.grad_stepz=10")
    assert "grad_stepz" in str(info.value) or "grad_stepz" in str(info.value.__cause__)


def test_wrong_type_names_the_key() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        make_cfg("bc.grad_steps=many")
    text = str(info.value) + str(info.value.__cause__)
    assert "grad_steps" in text


def test_typo_in_group_option_fails() -> None:
    with pytest.raises(ConfigCompositionException, match="cartpol"):
        make_cfg("env=cartpol")


def test_unknown_env_id_fails_before_training(tmp_path: Path) -> None:
    cfg = make_cfg("env.id=CartPole-v9", f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}")
    with pytest.raises(ValueError, match="CartPole-v9"):
        run(cfg)
    assert not (tmp_path / "cache").exists(), "nothing may be trained or cached for a bad env id"


def test_unknown_ppo_argument_names_it(tmp_path: Path) -> None:
    cfg = make_cfg("+env.ppo.n_stepz=3")
    with pytest.raises(ValueError, match="n_stepz"):
        validate_job(cfg)


def test_bad_choice_names_the_key() -> None:
    cfg = make_cfg("rl.init=pretrained")
    with pytest.raises(ValueError, match="rl.init"):
        validate_job(cfg)


def test_each_job_seed_draws_its_own_demonstrations_unless_fixed() -> None:
    """The spread over seeds must include the variance of drawing demonstrations (large for BC from few)."""
    assert [make_cfg(f"seed={s}").demos.seed for s in (0, 1, 4)] == [0, 1, 4]
    assert [make_cfg(f"seed={s}", "demos.seed=7").demos.seed for s in (0, 1, 4)] == [7, 7, 7]


def test_the_console_script_finds_the_configs_from_any_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).parent / "testbed"
    done = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "== Configuration groups ==" in done.stdout, done.stderr[-2000:]
