"""Typed config schemas, registered in Hydra's ConfigStore so a typo or wrong type fails at compose time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class EnvConfig:
    """One gymnasium task, with the references and PPO hyperparameters that go with it."""

    id: str = MISSING  # gymnasium id, e.g. "Pendulum-v1"
    name: str = MISSING  # short name used in run names and folders
    n_envs: int = 8  # DummyVecEnv copies for PPO (8 is fastest on 2 cores)
    max_episode_steps: int | None = None  # None keeps the registered TimeLimit
    wrapper: str | None = None  # named observation wrapper (see envs.WRAPPERS), e.g. "minigrid_flat"
    mask_velocity: bool = False  # hide velocity components (partial observability)
    reference_return: float = MISSING  # the expert is rejected below this mean return
    success_return: float | None = None  # an episode succeeds when its return reaches this
    expert_timesteps: int = 100_000  # PPO steps to train the expert
    # rl-zoo3-style SB3 PPO keyword arguments for this env (expert and fine-tuning share them).
    ppo: dict[str, Any] = field(default_factory=dict)
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"  # "tanh" | "relu"


@dataclass
class ExpertConfig:
    """Where the expert comes from and how it is checked."""

    path: str | None = None  # a user's own SB3 PPO zip; None trains one here (cached)
    eval_episodes: int = 50
    check_reference: bool = True  # reject an expert below env.reference_return
    seed: int = 0  # the expert's own seed, independent of the job's seed so jobs share it


@dataclass
class DemosConfig:
    """Expert demonstrations collected for behaviour cloning."""

    episodes: int = 2
    epsilon: float = 0.0  # probability of a uniformly random action (imperfect expert)
    deterministic: bool = True  # expert acts by its mode, not a sample
    seed: int = 0  # demonstration episodes use seeds disjoint from training and evaluation


@dataclass
class BCConfig:
    """Behaviour cloning into the SB3 ActorCriticPolicy that PPO fine-tunes."""

    grad_steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    ent_coef: float = 0.0  # bonus on the policy's entropy
    l2_coef: float = 0.0  # penalty on the squared actor weights
    val_fraction: float = 0.1  # transitions held out for the validation loss
    log_every: int = 100  # gradient steps between logged losses


@dataclass
class RLConfig:
    """PPO fine-tuning: from the BC weights or from scratch, evaluated at each budget."""

    init: str = "bc"  # "bc" | "scratch"
    budgets: list[int] = field(default_factory=lambda: [0, 10_000, 30_000, 100_000])
    budget: int | None = None  # a single budget (for multirun); overrides `budgets`
    learning_rate: float | None = None  # None keeps env.ppo's; always constant (budget-independent)
    critic_warmup_steps: int = 0  # env steps of value-only updates with the actor frozen


@dataclass
class EvalConfig:
    """Capability on fixed evaluation seeds, disjoint from training seeds."""

    episodes: int = 50
    deterministic: bool = True
    seed: int = 0


@dataclass
class LoggerConfig:
    """Experiment tracking (wandb); results.json is written regardless."""

    backend: str = "none"  # "wandb" | "none"
    project: str = "testbed"
    mode: str = "offline"  # "offline" | "online" | "disabled"; WANDB_MODE overrides
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    """A whole job: one env, one seed, one variant, BC then PPO over the RL budgets."""

    env: EnvConfig = MISSING
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    variant: str = "${rl.init}"  # part of the run identity: env + variant + seed
    cache_dir: str = "${oc.env:TESTBED_CACHE,.cache/testbed}"  # experts, datasets, references
    output_dir: str | None = None  # None: Hydra's job folder (or the cwd when run without Hydra)
    torch_threads: int = 1  # one thread per job: 2 threads gain nothing for these small MLPs
    progress: bool = True  # progress bars (quiet anyway when not on a terminal)


def register_configs() -> None:
    """Register the schemas so conf/ files are validated against them."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="expert", name="expert_schema", node=ExpertConfig)
    cs.store(group="demos", name="demos_schema", node=DemosConfig)
    cs.store(group="bc", name="bc_schema", node=BCConfig)
    cs.store(group="rl", name="rl_schema", node=RLConfig)
    cs.store(group="eval", name="eval_schema", node=EvalConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


def validate(cfg: Any) -> None:
    """Checks the schema cannot express, run before any training so a bad job starts nothing."""
    from testbed.envs import check_env_id
    from testbed.policy import check_ppo_kwargs

    check_env_id(cfg.env.id)
    check_ppo_kwargs(cfg.env)
    _one_of("rl.init", cfg.rl.init, ("bc", "scratch"))
    _one_of("logger.backend", cfg.logger.backend, ("wandb", "none"))
    _one_of("logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    if any(b < 0 for b in cfg.rl.budgets) or (cfg.rl.budget is not None and cfg.rl.budget < 0):
        raise ValueError(f"rl.budgets must be >= 0, got {list(cfg.rl.budgets)} / rl.budget={cfg.rl.budget}")
    if not 0.0 <= cfg.demos.epsilon <= 1.0:
        raise ValueError(f"demos.epsilon must lie in [0, 1], got {cfg.demos.epsilon}")
    for key, value in (
        ("demos.episodes", cfg.demos.episodes),
        ("eval.episodes", cfg.eval.episodes),
        ("bc.batch_size", cfg.bc.batch_size),
        ("env.n_envs", cfg.env.n_envs),
    ):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}='{value}' is not one of {list(allowed)}")
