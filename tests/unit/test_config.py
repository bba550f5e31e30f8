"""Every conf/ file composes; bad input fails before any training, with a message that names it."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, asdict
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from testbed.config import (
    AnchorConfig,
    BCConfig,
    Config,
    DemosConfig,
    DemoSource,
    EvalConfig,
    ExpertConfig,
    PolicyConfig,
    RLConfig,
    VotingConfig,
    scaled_rates,
    to_config,
)
from testbed.pipeline import run
from testbed.results import run_name
from testbed.validation import validate_job
from tests.conftest import CONF, make_cfg, make_job

GROUP_OPTIONS = sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml") if p.parent.name not in ("hydra",))
# Each group's default.yaml and the schema whose defaults it writes out.
GROUP_SCHEMAS = {
    "expert": ExpertConfig,
    "demos": DemosConfig,
    "bc": BCConfig,
    "rl": RLConfig,
    "eval": EvalConfig,
    "voting": VotingConfig,
}


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_conf_file_composes_and_validates(group: str, option: str) -> None:
    if group == "launcher":
        pytest.skip("launchers compose under hydra/launcher, tested with sweeps")
    extra = ["env.mask_velocity=true"] if (group, option) == ("policy", "scratchpad") else []  # writes hidden state
    validate_job(make_job(f"{group}={option}", *extra))


def test_policy_mlp_file_is_the_schema_defaults() -> None:
    """conf/policy/mlp.yaml (the default learner) writes out PolicyConfig's defaults; the other policy files set
    only their kind (and the schema fills the rest)."""
    assert OmegaConf.to_container(OmegaConf.load(CONF / "policy" / "mlp.yaml")) == asdict(PolicyConfig())
    for path in (CONF / "policy").glob("*.yaml"):
        assert set(OmegaConf.load(path)) <= {"kind"} or path.stem == "mlp", path
        assert make_job(f"policy={path.stem}").policy.kind == path.stem


def test_default_group_files_are_the_schema_defaults() -> None:
    """conf/<group>/default.yaml writes out the schema's defaults (the schema types them and code builds them):
    the same keys and values, written and composed, so the two never drift apart."""
    assert set(GROUP_SCHEMAS) == {p.parent.name for p in CONF.glob("*/default.yaml")}, "a default.yaml is untested"
    composed = make_cfg()
    for group, schema in GROUP_SCHEMAS.items():
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        assert OmegaConf.to_container(OmegaConf.load(CONF / group / "default.yaml")) == defaults, group
        assert OmegaConf.to_container(composed[group]) == defaults, group


@pytest.mark.parametrize("key", ["bc.grad_stepz", "rl.anchor.coeff", "voting.enable"])
def test_typo_in_key_names_the_key(key: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg(f"{key}=10")
    name = key.rsplit(".", 1)[1]
    assert name in str(info.value) or name in str(info.value.__cause__)


@pytest.mark.parametrize("key", ["bc.grad_steps", "rl.anchor.coef", "voting.enabled"])
def test_wrong_type_names_the_key(key: str) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        make_cfg(f"{key}=many")
    text = str(info.value) + str(info.value.__cause__)
    assert key.rsplit(".", 1)[1] in text


@pytest.mark.parametrize(
    ("overrides", "variant"),
    [
        ((), "bc"),
        (("rl.init=scratch",), "scratch"),
        (("rl.anchor.kind=bc_kl",), "bc_kl"),
        (("rl.anchor.kind=kickstart",), "kickstart"),
        (("rl.anchor.kind=ewc",), "ewc"),
        (("voting.enabled=true",), "voting"),
        (("voting.enabled=true", "rl.anchor.kind=bc_kl"), "bc_kl_voting"),
        (("rl.anchor.kind=bc_kl", "variant=x"), "x"),
    ],
)
def test_the_default_variant_names_what_makes_the_run(overrides: tuple[str, ...], variant: str) -> None:
    """Run identity cannot collide: an anchored or voting job started by hand is not named like plain BC+RL."""
    cfg = make_cfg(*overrides)
    assert cfg.variant == variant and run_name(cfg) == f"pendulum-{variant}-s0"


def test_job_folders_carry_the_variant() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["rl.anchor.kind=bc_kl"], return_hydra_config=True)
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert isinstance(hydra, dict) and cfg.variant == "bc_kl"
    assert "_${variant}_s${seed}" in hydra["run"]["dir"] and "_${variant}_s${seed}" in hydra["sweep"]["subdir"]


def test_typo_in_group_option_fails() -> None:
    with pytest.raises(ConfigCompositionException, match="cartpol"):
        make_cfg("env=cartpol")


def test_unknown_env_id_fails_before_training(tmp_path: Path) -> None:
    cfg = make_cfg("env.id=CartPole-v9", f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}")
    with pytest.raises(ValueError, match="CartPole-v9"):
        run(cfg)
    assert not (tmp_path / "cache").exists(), "nothing may be trained or cached for a bad env id"


def test_unknown_ppo_argument_names_it(tmp_path: Path) -> None:
    cfg = make_job("+env.ppo.n_stepz=3")
    with pytest.raises(ValueError, match="n_stepz"):
        validate_job(cfg)


def test_bad_choice_names_the_key() -> None:
    cfg = make_job("rl.init=pretrained")
    with pytest.raises(ValueError, match="rl.init"):
        validate_job(cfg)


def test_stages_get_the_composed_config_as_frozen_dataclasses() -> None:
    """pipeline.setup converts once: every value kept (interpolations resolved, the same JSON that results.json and
    wandb record), and no stage can change it. One element of demos.mix can still be overridden."""
    composed = make_cfg("seed=4", "demos.mix=[{episodes:3}]", "demos.mix.0.epsilon=0.5")
    cfg = to_config(composed)
    assert isinstance(cfg, Config) and isinstance(cfg.rl.anchor, AnchorConfig)
    assert cfg.demos.mix == [DemoSource(episodes=3, epsilon=0.5)] and cfg.demos.seed == 4 and cfg.variant == "bc"
    assert json.dumps(asdict(cfg)) == json.dumps(OmegaConf.to_container(composed, resolve=True))
    with pytest.raises(FrozenInstanceError):
        cfg.rl.anchor.coef = 2.0  # type: ignore[misc]


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
    groups = done.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "bc: default\n" in groups and "_schema" not in groups, "only conf/ files are group options"


def test_width_rule_scales_both_learning_rates_by_64_over_the_widest_layer() -> None:
    """lr_rule=width: bc.lr and PPO's rate x 64 / width (pendulum's PPO rate is 1e-3); 64 keeps them; fixed keeps
    every rate; rl.learning_rate, when set, is the rate scaled."""
    wide = scaled_rates(make_job("env=pendulum", "lr_rule=width", "env.net_arch=[1024,1024,1024]"))
    assert (wide.bc.lr, wide.rl.learning_rate) == (1e-3 / 16, 1e-3 / 16)
    narrow = scaled_rates(make_job("env=pendulum", "lr_rule=width", "env.net_arch=[32,16]"))
    assert (narrow.bc.lr, narrow.rl.learning_rate) == (2e-3, 2e-3)
    same = scaled_rates(make_job("env=pendulum", "lr_rule=width"))
    assert (same.bc.lr, same.rl.learning_rate) == (1e-3, 1e-3)
    set_rate = scaled_rates(make_job("env=pendulum", "lr_rule=width", "env.net_arch=[256]", "rl.learning_rate=4e-4"))
    assert set_rate.rl.learning_rate == 1e-4
    fixed = make_job("env=pendulum", "env.net_arch=[1024,1024]")
    assert scaled_rates(fixed) is fixed
