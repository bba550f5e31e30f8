"""The checks a job's config must pass before anything trains: what the schema (testbed/config.py) cannot say,
because it needs the env, the expert or SB3. pipeline.setup runs them; a failure names the key."""

from __future__ import annotations

from testbed.config import SEED_RANGE, Config, DemosConfig, DemoSource
from testbed.envs import DEMO_SEEDS_PER_SET, check_env_id, check_spaces
from testbed.expert import check_expert_kwargs, load_user_expert_zip
from testbed.memory import KINDS, scratch_bounds
from testbed.policy import check_ppo_kwargs


def validate_job(cfg: Config) -> None:
    """Checks the schema cannot express, run before any training so a bad job starts nothing."""
    _check_seeds(cfg)
    check_env_id(cfg.env.id)
    check_ppo_kwargs(cfg.env)
    check_expert_kwargs(cfg.env)
    check_spaces(cfg.env)
    _check_settings_for(cfg)
    _one_of("rl.init", cfg.rl.init, ("bc", "scratch"))
    _one_of("lr_rule", cfg.lr_rule, ("fixed", "width"))
    if cfg.eval.bc_control and (cfg.rl.init != "bc" or cfg.rl.critic_warmup_steps):
        raise ValueError(
            "eval.bc_control continues BC for as many optimizer steps as PPO took: it needs rl.init=bc and no critic "
            f"warm-up (whose steps leave the actor alone), got rl.init={cfg.rl.init}, "
            f"rl.critic_warmup_steps={cfg.rl.critic_warmup_steps}"
        )
    _check_anchor_and_voting(cfg)
    _check_policy(cfg)
    _one_of("logger.backend", cfg.logger.backend, ("wandb", "none"))
    _one_of("logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    if any(b < 0 for b in cfg.rl.budgets) or (cfg.rl.budget is not None and cfg.rl.budget < 0):
        raise ValueError(f"rl.budgets must be >= 0, got {list(cfg.rl.budgets)} / rl.budget={cfg.rl.budget}")
    if any(not 0 < k <= cfg.bc.grad_steps for k in cfg.bc.checkpoints):
        raise ValueError(
            f"bc.checkpoints must lie in [1, bc.grad_steps={cfg.bc.grad_steps}], got {list(cfg.bc.checkpoints)}"
        )
    _check_demo_source("demos", cfg.demos)
    for i, source in enumerate(cfg.demos.mix):
        _check_demo_source(f"demos.mix[{i}]", source)
    total = cfg.demos.episodes + sum(s.episodes for s in cfg.demos.mix)
    if total > DEMO_SEEDS_PER_SET:  # demos.seed s uses start seeds s * 10,000 + i: more would reach set s + 1's
        raise ValueError(f"demos: {total} episodes in all, more than one set's {DEMO_SEEDS_PER_SET} start seeds")
    for key, value in (
        ("demos.episodes", cfg.demos.episodes),
        ("eval.episodes", cfg.eval.episodes),
        ("bc.batch_size", cfg.bc.batch_size),
        ("env.n_envs", cfg.env.n_envs),
    ):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if cfg.expert.path:  # last: loading the zip is the slowest check
        load_user_expert_zip(cfg.expert.path, cfg.env.expert_algo)


def _check_seeds(cfg: Config) -> None:
    low, high = SEED_RANGE
    seeds = {"seed": cfg.seed, "expert.seed": cfg.expert.seed, "demos.seed": cfg.demos.seed, "eval.seed": cfg.eval.seed}
    for key, value in seeds.items():
        if not low <= value < high:
            raise ValueError(f"{key}={value} is out of range: a seed must lie in [0, 2**32) (numpy's seed range)")


def _check_settings_for(cfg: Config) -> None:
    """Refuse references measured for another env than env.id: they would accept or reject the wrong expert."""
    env = cfg.env
    if env.id == env.settings_for:
        return
    origin = f"was measured for {env.settings_for} (env.settings_for)"
    # A user's expert (expert.path) is never checked against reference_return, so it borrows nothing.
    if cfg.expert.check_reference and not cfg.expert.path:
        raise ValueError(
            f"env.id='{env.id}' has no reference return of its own: env.reference_return={env.reference_return} "
            f"{origin}. Set env.reference_return=<value> env.settings_for={env.id} (or add a conf/env file for "
            f"{env.id}), or expert.check_reference=false to accept any expert."
        )
    if env.success_return is not None:
        raise ValueError(
            f"env.id='{env.id}' has no success return of its own: env.success_return={env.success_return} {origin}. "
            f"Set env.success_return=<value> env.settings_for={env.id}, or env.success_return=null (no success rate)."
        )


def _check_demo_source(key: str, source: DemosConfig | DemoSource) -> None:
    if not 0.0 <= source.epsilon <= 1.0:
        raise ValueError(f"{key}.epsilon must lie in [0, 1], got {source.epsilon}")
    if source.expert_quality is not None and not 0.0 < source.expert_quality <= 1.0:
        raise ValueError(f"{key}.expert_quality must lie in (0, 1] (a normalized score), got {source.expert_quality}")
    if source.episodes < 1:
        raise ValueError(f"{key}.episodes must be >= 1, got {source.episodes}")


def _check_anchor_and_voting(cfg: Config) -> None:
    anchor, voting = cfg.rl.anchor, cfg.voting
    _one_of("rl.anchor.kind", anchor.kind, ("none", "bc_kl", "kickstart", "ewc"))
    _one_of("rl.anchor.decay", anchor.decay, ("none", "exp", "linear"))
    _one_of("voting.mode", voting.mode, ("seeds", "samples"))
    if anchor.coef < 0 or not 0 < anchor.decay_rate <= 1 or anchor.decay_steps < 1 or anchor.fisher_states < 1:
        raise ValueError("rl.anchor needs coef >= 0, 0 < decay_rate <= 1, decay_steps >= 1 and fisher_states >= 1")
    if anchor.kind != "none" and cfg.rl.init != "bc":
        raise ValueError(f"rl.anchor.kind='{anchor.kind}' anchors to the BC policy and needs rl.init=bc")
    if voting.enabled and (cfg.rl.init != "bc" or not voting.ks or min(voting.ks) < 1):
        raise ValueError(f"voting needs rl.init=bc and voting.ks >= 1, got rl.init={cfg.rl.init}, ks={list(voting.ks)}")


def _check_policy(cfg: Config) -> None:
    """The learner's memory (policy=...): a known kind, positive sizes, and only the stages written for it."""
    p = cfg.policy
    _one_of("policy.kind", p.kind, KINDS)
    for key, value, least in (
        ("policy.frames", p.frames, 1),
        ("policy.scratch_bins", p.scratch_bins, 2),
        ("policy.lstm_hidden", p.lstm_hidden, 1),
        ("policy.bc_seq_len", p.bc_seq_len, 1),
        ("policy.bc_batch_episodes", p.bc_batch_episodes, 1),
    ):
        if value < least:
            raise ValueError(f"{key} must be >= {least}, got {value}")
    if p.kind == "mlp":
        return
    for key, on in (
        ("rl.anchor.kind", cfg.rl.anchor.kind != "none"),
        ("voting.enabled", cfg.voting.enabled),
        ("eval.bc_control", cfg.eval.bc_control),
    ):
        if on:
            raise ValueError(f"{key} is written for the feed-forward learner only, and policy.kind='{p.kind}'")
    if p.kind == "scratchpad":
        scratch_bounds(cfg.env)  # raises, naming the env, when it hides nothing or nothing bounded


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}='{value}' is not one of {list(allowed)}")
