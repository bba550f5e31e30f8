"""Typed config schemas, registered in Hydra's ConfigStore so a typo or wrong type fails at compose time; a composed
config becomes frozen instances of the same dataclasses (to_config), which is what every stage receives."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

# numpy's seed range: every seed reaches np.random.seed (the job's through set_random_seed, the others through SB3).
SEED_RANGE = (0, 2**32)


@dataclass(frozen=True)
class EnvConfig:
    """One gymnasium task, with the references and PPO hyperparameters that go with it."""

    id: str = MISSING  # gymnasium id, e.g. "Pendulum-v1"
    # The env id this file's settings (name, references, budgets, ppo) were measured for: a job whose env.id
    # differs borrows none of its references (see validate).
    settings_for: str = MISSING
    # Short name in run names, folders and cache names; env files set `${testbed_env_name:<short>,<their id>}`.
    name: str = MISSING
    n_envs: int = 8  # DummyVecEnv copies for PPO (8 is fastest on 2 cores)
    max_episode_steps: int | None = None  # None keeps the registered TimeLimit
    wrapper: str | None = None  # named observation wrapper (see envs.WRAPPERS), e.g. "minigrid_flat"
    mask_velocity: bool = False  # hide the state the task hides: velocities; parity's running result (envs.py)
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of gym.make, e.g. {n: 16} for parity
    reference_return: float = MISSING  # the expert is rejected below this mean return
    success_return: float | None = None  # an episode succeeds when its return reaches this
    # The expert's own algorithm, hyperparameters and architecture: what trains it (and all that keys its cache),
    # apart from the learner's `ppo`, `net_arch` and `activation` below, so a learner setting never retrains it.
    expert_timesteps: int = 100_000  # env steps to train the expert
    # The expert's algorithm only, "ppo" | "dqn" (SB3, trained here) | "planner" (an exact scripted expert, no
    # training: env.expert_planner names it); BC and fine-tuning are always PPO.
    expert_algo: str = "ppo"
    expert_planner: str | None = None  # with expert_algo=planner: a name in testbed/planners.py PLANNERS
    expert_kwargs: dict[str, Any] = field(default_factory=dict)  # its SB3 keyword arguments (not policy_kwargs)
    expert_net_arch: list[int] | None = None  # hidden widths; None: SB3's default for expert_algo
    expert_activation: str | None = None  # "tanh" | "relu"; None: SB3's default for expert_algo
    # Per-env defaults of other groups (demos.episodes, rl.budgets interpolate them; overriding those still wins).
    demo_episodes: int = 2  # few enough that BC stays clearly below the expert
    rl_budgets: list[int] = field(default_factory=lambda: [0, 10_000, 30_000, 100_000])  # PPO env steps
    # The learner's: rl-zoo3-style SB3 PPO keyword arguments for fine-tuning (env files start the expert's from
    # the same values with a YAML anchor, `expert_kwargs: *ppo`), and the BC/PPO network.
    ppo: dict[str, Any] = field(default_factory=dict)
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"  # "tanh" | "relu"


@dataclass(frozen=True)
class ExpertConfig:
    """Where the expert comes from and how it is checked."""

    path: str | None = None  # a user's own SB3 PPO zip; None trains one here (cached)
    eval_episodes: int = 50
    check_reference: bool = True  # reject an expert below env.reference_return
    seed: int = 0  # the expert's own seed, independent of the job's seed so jobs share it


# Not frozen, unlike the others: OmegaConf makes each list element of a frozen dataclass a read-only node, and an
# override of one element (`demos.mix.0.epsilon=0.5`) writes into it.
@dataclass
class DemoSource:
    """One more source of episodes mixed into the demonstrations (same seed and determinism as the main one)."""

    episodes: int = MISSING
    epsilon: float = 0.0  # probability of a uniformly random action
    expert_quality: float | None = None  # a weaker expert: see DemosConfig.expert_quality


@dataclass(frozen=True)
class DemosConfig:
    """Expert demonstrations collected for behaviour cloning."""

    episodes: int = II("env.demo_episodes")
    epsilon: float = 0.0  # probability of a uniformly random action (imperfect expert)
    # A weaker expert: the first training checkpoint whose normalized score (0 random, 1 final expert) on the
    # expert's evaluation episodes reaches this target; None uses the final expert.
    expert_quality: float | None = None
    # Further sources whose episodes are appended to the main ones, e.g. [{episodes: 8, epsilon: 0.5}].
    mix: list[DemoSource] = field(default_factory=list)
    deterministic: bool = True  # expert acts by its mode, not a sample
    # Which demonstration set: each job seed draws its own by default, so the spread over seeds includes the
    # variance of drawing demonstrations (large for BC from few episodes); a number fixes one set for all seeds.
    # Its episodes use start seeds disjoint from training and evaluation.
    seed: int = II("seed")


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning into the SB3 ActorCriticPolicy that PPO fine-tunes."""

    grad_steps: int = 2000
    # Fewer gradient steps at which the same run's BC policy is also evaluated (`bc.checkpoints` in results.json):
    # BC configurations differing only in steps come from one run, as RL budgets do; each equals a separate run.
    checkpoints: list[int] = field(default_factory=list)
    batch_size: int = 1024  # capped at the training set: small demo sets train full-batch
    lr: float = 1e-3
    ent_coef: float = 0.0  # bonus on the policy's entropy
    l2_coef: float = 0.0  # penalty on the squared actor weights
    val_fraction: float = 0.1  # transitions held out for the validation loss
    log_every: int = 100  # gradient steps between logged losses


@dataclass(frozen=True)
class AnchorConfig:
    """A term pulling PPO's actor (never the critic) toward the BC policy; see testbed/anchoring.py."""

    # "none" | "bc_kl": KL(pi_bc || pi) on demonstration states | "kickstart": the same KL on the states of
    # PPO's current rollout minibatch | "ewc": sum_i F_i (theta_bc_i - theta_i)^2, F = diagonal Fisher on demo states
    kind: str = "none"
    coef: float = 1.0  # weight of the term in PPO's loss, at the first update after the critic warm-up
    # "none" | "exp": coef x decay_rate^u at the u-th update (0-based, one update per rollout) |
    # "linear": coef x max(0, 1 - t / decay_steps), t = RL env steps collected before the update's rollout
    decay: str = "none"
    decay_rate: float = 0.99  # multiplicative factor per PPO update ("exp")
    decay_steps: int = 100_000  # RL env steps until the coefficient reaches 0 ("linear")
    batch_size: int | None = None  # demonstration states per bc_kl minibatch; None: PPO's batch_size
    fisher_states: int = 1000  # demonstration states (one sampled action each) for EWC's Fisher


@dataclass(frozen=True)
class RLConfig:
    """PPO fine-tuning: from the BC weights or from scratch, evaluated at each budget."""

    init: str = "bc"  # "bc" | "scratch"
    budgets: list[int] = II("env.rl_budgets")  # PPO env steps at which to evaluate
    budget: int | None = None  # a single budget (for multirun); overrides `budgets`
    learning_rate: float | None = None  # None keeps env.ppo's; always constant (budget-independent)
    critic_warmup_steps: int = 0  # env steps of value-only updates with the actor frozen
    anchor: AnchorConfig = field(default_factory=AnchorConfig)  # anchoring the actor to the BC policy


@dataclass(frozen=True)
class VotingConfig:
    """Sampling-and-voting at the BC policy (no RL): K policies act by vote; see testbed/voting.py."""

    enabled: bool = False
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 9])  # committee sizes to evaluate
    # "seeds": K BC policies (the job's own plus K-1 trained with other seeds) vote with their modes |
    # "samples": K actions sampled from the job's BC policy vote (one forward pass per step)
    mode: str = "seeds"


@dataclass(frozen=True)
class EvalConfig:
    """Capability on fixed evaluation seeds, disjoint from training seeds."""

    episodes: int = 50
    deterministic: bool = True
    seed: int = 0
    drift: bool = True  # weight, representation and behaviour drift at every checkpoint
    probe_size: int = 1000  # states per probe set (demonstration states; states the current policy visits)
    sparsity_tols: list[float] = field(default_factory=lambda: [1e-8, 1e-6, 1e-4])  # absolute |delta| tolerances
    # The control for RL's drift (the scale study): at each RL checkpoint, the BC policy continued by BC on the same
    # demonstrations for as many optimizer steps as PPO took, with PPO's learning rate and minibatch size, and its
    # drift from the start as `control/drift/...` (weights, and on demonstration states CKA and KL).
    bc_control: bool = False
    # The memory study (issue 16, testbed/probes.py): at every checkpoint, a linear probe from the learner's memory
    # to the state the task hides (`memory/probe_*`), and for a scratchpad the causal check (`memory/causal/...`).
    memory_probe: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    """The learner's memory (conf/policy/, testbed/memory.py): what it can know of the steps before this one."""

    # "mlp": none (the feed-forward baseline) | "framestack": the last `frames` observations | "scratchpad": it
    # also writes values appended to its next observation (an externalized memory) | "lstm": sb3-contrib's
    # RecurrentPPO, memory in a hidden state
    kind: str = "mlp"
    frames: int = 4  # framestack: observations the learner sees (this one and frames - 1 before it)
    # scratchpad: BC also fits the expert's scratch values (the hidden task variable: the running sub-result, the
    # true velocity); false fits the env's actions only and leaves the scratch for the learner to invent
    scratch_supervision: bool = True
    scratch_bins: int = 2  # scratchpad with Discrete actions: levels of each scratch value over its range
    lstm_hidden: int = 64  # lstm: units of the actor's (and the critic's own) LSTM
    bc_seq_len: int = 32  # lstm: BC's truncated backpropagation window, in steps (the state is carried across)
    bc_batch_episodes: int = 8  # lstm: demonstration episodes per BC minibatch


@dataclass(frozen=True)
class LoggerConfig:
    """Experiment tracking (wandb); results.json is written regardless."""

    backend: str = "none"  # "wandb" | "none"
    project: str = "testbed"
    mode: str = "offline"  # "offline" | "online" | "disabled"; WANDB_MODE overrides
    group: str | None = None  # None: the sweep folder's name under multirun, else no group
    tags: list[str] = field(default_factory=list)  # env name and variant are always added
    dir: str | None = None  # where wandb/ goes; None: the job's output folder


@dataclass(frozen=True)
class Config:
    """A whole job: one env, one seed, one variant, BC then PPO over the RL budgets."""

    env: EnvConfig = MISSING
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    voting: VotingConfig = field(default_factory=VotingConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    seed: int = 0
    # Part of the run identity (env + variant + seed): by default named after what makes the variant (see
    # variant_name), so an anchored or voting job started by hand is never named like plain fine-tuning.
    variant: str = "${testbed_variant:${rl.init},${rl.anchor.kind},${voting.enabled}}"
    cache_dir: str = "${oc.env:TESTBED_CACHE,.cache/testbed}"  # experts, datasets, references
    output_dir: str | None = None  # None: Hydra's job folder (or the cwd when run without Hydra)
    # The learner's learning rates against its width: "fixed" (bc.lr and PPO's rate as set) | "width" (both x
    # 64 / the widest hidden layer of env.net_arch: 64 keeps them, 1024 divides them by 16), see scaled_rates.
    lr_rule: str = "fixed"
    torch_threads: int = 1  # one thread per job: 2 threads gain nothing for these small MLPs
    progress: bool = True  # progress bars (quiet anyway when not on a terminal)


def env_name(short: str, for_id: str, *, _parent_: Any) -> str:
    """`name: ${testbed_env_name:pendulum,Pendulum-v1}`: `short` while env.id is `for_id`, else a slug of env.id
    (MountainCarContinuous-v0 -> mountaincarcontinuous-v0), so an env.id override names the run, its folders and
    its caches after the env it runs. An interpolation, not a rewrite in validate: Hydra names the job's folder
    from ${env.name} before the job starts."""
    env_id = str(_parent_.id)
    return short if env_id == for_id else re.sub(r"[^a-z0-9]+", "-", env_id.lower()).strip("-")


def variant_name(init: str, anchor_kind: str, voting: bool) -> str:
    """`variant: ${testbed_variant:${rl.init},${rl.anchor.kind},${voting.enabled}}`, the default variant: what the
    job does to the BC policy. `scratch` | `bc` (plain fine-tuning) | the anchor's kind (`bc_kl`, `kickstart`,
    `ewc`), with `voting` appended when voting is on (`voting` alone at the plain BC policy). The presets' variants
    carry these names; settings within a variant (rl.anchor.coef, rl.budgets, voting.mode ...) are not in it, so
    runs that differ only there need `variant=<name>` (bc_frontier's `bc_only`: BC with rl.budgets=[0])."""
    base = anchor_kind if anchor_kind != "none" else init
    if not voting:
        return base
    return "voting" if base == "bc" else f"{base}_voting"


# At import, not in register_configs: any process that reads a config (a launcher's worker, analysis) needs them.
OmegaConf.register_new_resolver("testbed_env_name", env_name, replace=True)
OmegaConf.register_new_resolver("testbed_variant", variant_name, replace=True)


def to_config(cfg: DictConfig) -> Config:
    """A composed config as the frozen Config its schema typed it against, every interpolation resolved: what the
    stages take. Raises on a missing mandatory value, naming its key."""
    config = OmegaConf.to_object(cfg)
    if not isinstance(config, Config):
        raise TypeError(f"expected a config composed against the Config schema, got {type(config).__name__}")
    return config


# The width at which lr_rule=width keeps the configured rates: SB3's default hidden width, every env file's.
LR_REFERENCE_WIDTH = 64
SB3_PPO_LEARNING_RATE = 3e-4  # PPO's own default, where neither rl.learning_rate nor env.ppo sets one


def scaled_rates(cfg: Config) -> Config:
    """`cfg` with the learning rates `lr_rule` gives: unchanged for "fixed"; for "width", bc.lr and the PPO rate
    (rl.learning_rate, else env.ppo's, else SB3's) times LR_REFERENCE_WIDTH / the widest hidden layer, the 1/width
    rule for Adam in wide layers (a wider layer sums more inputs, so one step moves its outputs more)."""
    if cfg.lr_rule == "fixed":
        return cfg
    factor = LR_REFERENCE_WIDTH / max(cfg.env.net_arch)
    bc = replace(cfg.bc, lr=cfg.bc.lr * factor)
    return replace(cfg, bc=bc, rl=replace(cfg.rl, learning_rate=ppo_learning_rate(cfg) * factor))


def ppo_learning_rate(cfg: Config) -> float:
    """The learner's PPO learning rate: rl.learning_rate, else env.ppo's, else SB3's default (always constant)."""
    if cfg.rl.learning_rate is not None:
        return float(cfg.rl.learning_rate)
    return float(cfg.env.ppo.get("learning_rate", SB3_PPO_LEARNING_RATE))


def register_configs() -> None:
    """Register the schema that conf/config.yaml extends, so every conf/ file is validated against it.

    One node types the whole config, each group included; the group files (conf/bc/default.yaml ...) write its
    defaults out. No per-group schema is stored: none is used, and each would be listed as a group option.
    """
    ConfigStore.instance().store(name="config_schema", node=_writable(OmegaConf.structured(Config)))


def _writable(node: DictConfig) -> DictConfig:
    """`node` with none of its nodes read-only. OmegaConf makes the node of a frozen dataclass read-only, and Hydra
    merges the conf/ files and the overrides into the schema; the instances to_config makes stay frozen."""
    OmegaConf.set_readonly(node, None)  # None: as its parent, and the root has none (writable)
    for key, child in node.items_ex(resolve=False):
        if not isinstance(child, DictConfig):
            continue
        if OmegaConf.is_missing(node, key):  # env: no nodes below it until a conf/env file fills it
            OmegaConf.set_readonly(child, None)
        else:
            _writable(child)
    return node
