"""run(cfg): one call per stage, expert -> demonstrations -> BC -> PPO checkpoints -> results.json."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import set_random_seed

from testbed import tracking
from testbed.anchoring import attach_anchor, ppo_class
from testbed.bc import BCResult, BCTrainer, Trainer, train_bc
from testbed.cache import atomic_write, file_sha256
from testbed.compute import StageCompute, actor_params, forward_flops, train_flops
from testbed.config import Config, scaled_rates, to_config
from testbed.control import BCControl
from testbed.demonstrations import Demonstrations, get_demonstrations
from testbed.drift import checkpoint_drift, drift_table, probe_sample
from testbed.envs import make_vec_env
from testbed.evaluate import ActFn, Capability, EpisodeAct, evaluate, policy_act
from testbed.expert import Expert, get_expert, reference_returns
from testbed.finetune import finetune
from testbed.memory import fitted_action_dims, learner_demos, learner_env_fn, learner_vec_env
from testbed.policy import build_ppo, snapshot
from testbed.probes import memory_columns
from testbed.recurrent import RecurrentAct, build_recurrent, recurrent_drift
from testbed.recurrent_bc import RecurrentBCTrainer
from testbed.results import (
    Artifact,
    BCStage,
    DemosStage,
    ExpertStage,
    ResultsFile,
    RLStage,
    VotingStage,
    format_table,
    run_name,
)
from testbed.tracking import Tracker
from testbed.validation import validate_job
from testbed.voting import evaluate_voting

log = logging.getLogger(__name__)


def output_dir(cfg: Config | DictConfig) -> Path:
    """cfg.output_dir, else Hydra's job folder, else outputs/<run name>; of the composed config too, for the CLI's
    record of a job whose config never converted."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs") / run_name(cfg)


def setup(cfg: DictConfig) -> Config:
    """The composed config as frozen dataclasses (converted once, here), validated, with the learning rates
    `lr_rule` gives; then seed python, numpy and torch in one visible place (envs are seeded by their seeds)."""
    job = to_config(cfg)
    validate_job(job)
    job = scaled_rates(job)  # lr_rule: the rates the learner trains with
    torch.set_num_threads(job.torch_threads)
    set_random_seed(job.seed)
    return job


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job and return the content of its results.json (refused in a folder that holds another job's)."""
    job = setup(cfg)
    # results.json records (and hashes) the composed config itself, as the sweeper hashes it to resume.
    results = ResultsFile(output_dir(job), cfg)
    tracker = tracking.start(job, results.path.parent, job_type="train")
    try:
        _run_stages(job, results, tracker)
    except BaseException as exc:
        results.fail(exc)
        tracker.finish(exit_code=1)
        raise
    tracker.finish(exit_code=0)
    results.complete(tracking_s=tracker.wall_s)
    print(format_table(results.data))
    return results.data


def _run_stages(cfg: Config, results: ResultsFile, tracker: Tracker) -> None:
    """Each stage returns its result; `results` records it (the one writer of results.json), `tracker` logs it."""
    folder = results.path.parent
    expert = expert_stage(cfg)
    results.record_expert(expert)
    demos = demos_stage(cfg, expert.expert)
    results.record_demos(demos)
    model = build_learner(cfg)
    learner = learner_demos(cfg, demos.demos)  # in the learner's own spaces (testbed/memory.py)
    bc = bc_stage(cfg, model, learner, expert.references, folder)  # None for RL from scratch
    if bc is not None:
        results.record_bc(bc)
        tracker.log_bc(bc.result.curve)
    bc_compute = bc.compute if bc is not None else StageCompute()  # from scratch: no BC work
    if cfg.voting.enabled:
        results.record_voting(voting_stage(cfg, model, demos.demos, expert.references, bc_compute))

    def record_checkpoint(row: dict[str, Any]) -> None:
        results.add_checkpoint(row)
        tracker.log_checkpoint(row)

    results.record_rl(rl_stage(cfg, model, learner, expert.references, bc_compute, folder, record_checkpoint))
    tracker.log_summary(results.data)
    tracker.log_artifacts(results.data["artifacts"])


def build_learner(cfg: Config) -> PPO:
    """The PPO agent BC trains into and RL fine-tunes: RecurrentPPO for policy=lstm, else SB3's PPO (or the
    anchored subclass) in the learner's env (testbed/memory.py)."""
    if cfg.policy.kind == "lstm":
        # RecurrentPPO is an OnPolicyAlgorithm like PPO, with the interface the stages use (policy, learn, save).
        return cast(PPO, build_recurrent(cfg.env, cfg.policy, learner_vec_env(cfg, cfg.seed), cfg.seed))
    venv = make_vec_env(cfg.env, cfg.seed) if cfg.policy.kind == "mlp" else learner_vec_env(cfg, cfg.seed)
    return build_ppo(cfg.env, venv, cfg.seed, algo=ppo_class(cfg.rl.anchor))


def learner_act(cfg: Config, policy: ActorCriticPolicy) -> ActFn | EpisodeAct:
    """The act function evaluations run: a recurrent policy carries its state through each episode."""
    if isinstance(policy, RecurrentActorCriticPolicy):
        return RecurrentAct(policy, cfg.eval.deterministic)
    return policy_act(policy, cfg.eval.deterministic)


def learner_evaluate(cfg: Config, policy: ActorCriticPolicy) -> Capability:
    """Capability of the learner's policy on the evaluation episodes, in its own env."""
    env_fn = None if cfg.policy.kind == "mlp" else learner_env_fn(cfg)
    return evaluate(cfg.env, learner_act(cfg, policy), cfg.eval.episodes, cfg.eval.seed, env_fn)


def policy_columns(cfg: Config, policy: ActorCriticPolicy, refs: dict[str, float]) -> dict[str, Any]:
    """The policy's size (actor parameters, FLOPs of one action), and with eval.memory_probe its memory's
    readability (testbed/probes.py)."""
    row: dict[str, Any] = {"policy/actor_params": actor_params(policy)}
    row["policy/flops_per_step"] = forward_flops(row["policy/actor_params"], 1)
    if cfg.eval.memory_probe:
        t = time.perf_counter()
        row |= memory_columns(cfg, lambda: learner_act(cfg, policy), refs) | {"memory/wall_s": time.perf_counter() - t}
    return row


def expert_stage(cfg: Config) -> ExpertStage:
    """The expert (trained or cached) and the normalized score's references (random and expert returns)."""
    start = time.perf_counter()
    expert = get_expert(cfg)
    refs = reference_returns(cfg, expert)
    log.info(
        "expert: %s (%s), return %.1f; random %.1f",
        expert.path,
        expert.source,
        expert.return_mean,
        refs["random_return"],
    )
    return ExpertStage(expert=expert, references=refs, wall_s=time.perf_counter() - start)


def demos_stage(cfg: Config, expert: Expert) -> DemosStage:
    """The expert's demonstrations (collected or cached)."""
    start = time.perf_counter()
    demos = get_demonstrations(cfg, expert)
    return DemosStage(demos=demos, wall_s=time.perf_counter() - start)


def bc_stage(cfg: Config, model: PPO, demos: Demonstrations, refs: dict[str, float], folder: Path) -> BCStage | None:
    """Behaviour cloning into the PPO policy, saved as `folder`/bc_policy.pt, evaluated at `bc.checkpoints` on the
    way; None for RL from scratch."""
    if cfg.rl.init != "bc":
        return None
    rows: list[dict[str, Any]] = []
    demo_columns = {"compute/bc/demo_transitions": demos.n_transitions}
    bc = train_bc(
        model.policy,
        demos,
        cfg.bc,
        cfg.seed,
        progress=cfg.progress,
        on_checkpoint=lambda r: rows.append(bc_checkpoint_row(cfg, model.policy, r, refs) | demo_columns),
        trainer=bc_trainer(cfg, model.policy, demos),
    )
    bc_path = folder / "bc_policy.pt"
    atomic_write(bc_path, lambda f: torch.save(model.policy.state_dict(), f))
    compute = bc_compute(model.policy, bc)
    return BCStage(result=bc, policy=Artifact(bc_path, file_sha256(bc_path)), compute=compute, checkpoints=rows)


def bc_trainer(cfg: Config, policy: ActorCriticPolicy, demos: Demonstrations) -> Trainer:
    """BC over whole episodes with the state carried for an LSTM; a scratchpad without scratch supervision fits
    the env's action components only."""
    if isinstance(policy, RecurrentActorCriticPolicy):
        return RecurrentBCTrainer(policy, demos, cfg.bc, cfg.policy, cfg.seed)
    return BCTrainer(policy, demos, cfg.bc, cfg.seed, components=fitted_action_dims(cfg))


def bc_compute(policy: ActorCriticPolicy, bc: BCResult) -> StageCompute:
    """BC's work: it runs the actor only, forward + backward on every sample."""
    flops = train_flops(actor_params(policy), bc.samples)
    return StageCompute(samples=bc.samples, grad_steps=bc.grad_steps, flops=flops, wall_s=bc.wall_s)


def bc_checkpoint_row(cfg: Config, policy: ActorCriticPolicy, bc: BCResult, refs: dict[str, float]) -> dict[str, Any]:
    """A BC checkpoint: the policy after `bc.grad_steps` steps, evaluated as a budget-0 checkpoint is (no drift: it
    is a start). Torch's and numpy's global random states are restored after it, so evaluating changes no later
    number (a stochastic evaluation samples from torch's)."""
    np_state = np.random.get_state()
    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        cap = learner_evaluate(cfg, policy)
        eval_s = time.perf_counter() - t
        columns = policy_columns(cfg, policy, refs)
    np.random.set_state(np_state)
    compute = bc_compute(policy, bc)
    return (
        {"rl_steps": 0, "bc/grad_steps": bc.grad_steps, "bc/train_nll": bc.train_nll, "bc/val_nll": bc.val_nll}
        | {"bc/val_agreement": bc.val_agreement}
        | cap.row(refs["random_return"], refs["expert_return"])
        | {"eval/wall_s": eval_s}
        | columns
        | StageCompute().as_dict("rl")
        | compute.as_dict("bc")
        | {"compute/total/flops": compute.flops}
    )


def voting_stage(
    cfg: Config, model: PPO, demos: Demonstrations, refs: dict[str, float], bc_compute: StageCompute
) -> VotingStage:
    """Sampling-and-voting at the BC policy (`voting.enabled`): one row per K."""
    start = time.perf_counter()
    rows = evaluate_voting(cfg, snapshot(model.policy), demos, refs, bc_compute)
    log.info(
        "voting (%s): normalized %s at K = %s",
        cfg.voting.mode,
        [round(r["eval/normalized_score"], 3) for r in rows],
        [r["voting/k"] for r in rows],
    )
    return VotingStage(rows=rows, wall_s=time.perf_counter() - start)


def rl_stage(
    cfg: Config,
    model: PPO,
    demos: Demonstrations,
    refs: dict[str, float],
    bc_compute: StageCompute,
    folder: Path,
    record_checkpoint: Callable[[dict[str, Any]], None],
) -> RLStage:
    """PPO over the budgets, saved as `folder`/final_model.zip; every checkpoint is evaluated and compared with
    the policy RL started from, and its row handed to `record_checkpoint` as soon as it exists."""
    start_policy = snapshot(model.policy)  # the BC snapshot (or the initial weights, from scratch)
    attach_anchor(model, cfg.rl.anchor, start_policy, demos.observations, cfg.seed)  # no-op for kind none
    control = BCControl(cfg, start_policy, demos, model.batch_size) if cfg.eval.bc_control else None

    def on_row(row: dict[str, Any]) -> None:
        row["compute/total/flops"] = row["compute/bc/flops"] + row["compute/rl/flops"]
        if control is not None:
            row |= control.row(row["compute/rl/grad_steps"])
        record_checkpoint(row)

    start = time.perf_counter()
    finetune(
        model,
        cfg.rl,
        lambda _, ppo: checkpoint_row(cfg, ppo, start_policy, demos, refs, bc_compute),
        progress=cfg.progress,
        on_row=on_row,
    )
    wall_s = time.perf_counter() - start
    final = folder / "final_model.zip"
    atomic_write(final, lambda f: model.save(f))  # type: ignore[arg-type]  # SB3 saves into any binary file
    return RLStage(final_policy=Artifact(final, file_sha256(final)), wall_s=wall_s)


def checkpoint_row(
    cfg: Config,
    model: PPO,
    start_policy: ActorCriticPolicy,
    demos: Demonstrations,
    refs: dict[str, float],
    bc_compute: StageCompute,
) -> dict[str, Any]:
    """A checkpoint's evaluation, drift and BC-compute columns (finetune adds rl_steps and the RL columns).

    1. Capability on the fixed evaluation episodes, normalized by `refs`.
    2. With `eval.drift`: drift of `model`'s policy from `start_policy` on two probes, demonstration states and
       the states this checkpoint visited in its evaluation (`eval.probe_size` of each, a fixed sample).
    3. The BC work behind every checkpoint (zero from scratch).
    """
    t = time.perf_counter()
    cap = learner_evaluate(cfg, model.policy)
    row: dict[str, Any] = cap.row(refs["random_return"], refs["expert_return"]) | {
        "eval/wall_s": time.perf_counter() - t
    }
    row |= policy_columns(cfg, model.policy, refs)
    if cfg.eval.drift and isinstance(model.policy, RecurrentActorCriticPolicy):
        assert isinstance(start_policy, RecurrentActorCriticPolicy)  # a snapshot of the same class
        t = time.perf_counter()
        metrics = recurrent_drift(
            start_policy,
            model.policy,
            demos.observations,
            demos.actions,
            demos.episode_starts,
            cfg.eval.probe_size,
            cfg.seed,
            cfg.eval.sparsity_tols,
        )
        row |= metrics | {"drift/wall_s": time.perf_counter() - t, "drift_table": drift_table(metrics, ["demo"])}
    elif cfg.eval.drift:
        t = time.perf_counter()
        probes = {
            "demo": probe_sample(demos.observations, cfg.eval.probe_size, seed=cfg.seed),
            "visited": probe_sample(cap.visited, cfg.eval.probe_size, seed=cfg.seed),
        }
        metrics, table = checkpoint_drift(
            start_policy, model.policy, probes, demos.observations, demos.actions, cfg.eval.sparsity_tols
        )
        row |= metrics | {"drift/wall_s": time.perf_counter() - t, "drift_table": table}
    return row | bc_compute.as_dict("bc") | {"compute/bc/demo_transitions": demos.n_transitions}
