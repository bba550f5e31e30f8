"""run(cfg): one call per stage, expert -> demonstrations -> BC -> PPO checkpoints -> results.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig
from stable_baselines3 import PPO
from stable_baselines3.common.utils import set_random_seed

from testbed import tracking
from testbed.anchoring import attach_anchor, ppo_class
from testbed.bc import train_bc
from testbed.cache import atomic_write, file_sha256
from testbed.compute import StageCompute, actor_params, train_flops
from testbed.config import Config
from testbed.demonstrations import Demonstrations, get_demonstrations
from testbed.drift import checkpoint_drift, probe_sample, snapshot
from testbed.envs import make_vec_env
from testbed.evaluate import evaluate, policy_act
from testbed.expert import Expert, get_expert, reference_returns
from testbed.finetune import finetune
from testbed.policy import build_ppo
from testbed.results import ResultsFile, format_table, run_name
from testbed.tracking import Tracker
from testbed.validation import validate_job
from testbed.voting import evaluate_voting

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig) -> Path:
    """cfg.output_dir, else Hydra's job folder, else outputs/<run name>."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs") / run_name(cfg)


def setup(cfg: DictConfig) -> None:
    """Validate, then seed python, numpy and torch in one visible place (envs are seeded by their seeds)."""
    validate_job(cfg)
    torch.set_num_threads(cfg.torch_threads)
    set_random_seed(cfg.seed)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job and return the content of its results.json (refused in a folder that holds another job's)."""
    setup(cfg)
    results = ResultsFile(output_dir(cfg), cfg)
    tracker = tracking.start(cfg, results.path.parent, job_type="train")
    try:
        _run_stages(cfg, results, tracker)
    except BaseException as exc:
        results.fail(exc)
        tracker.finish(exit_code=1)
        raise
    tracker.finish(exit_code=0)
    results.data["timings"]["tracking_s"] = tracker.wall_s
    results.complete()
    print(format_table(results.data))
    return results.data


def _run_stages(dcfg: DictConfig, results: ResultsFile, tracker: Tracker) -> None:
    cfg = cast(Config, dcfg)  # a DictConfig validated against the Config schema
    expert, refs = expert_stage(cfg, results)
    demos = demos_stage(cfg, expert, results)
    model = build_ppo(cfg.env, make_vec_env(cfg.env, cfg.seed), cfg.seed, algo=ppo_class(cfg.rl.anchor))
    bc_compute = bc_stage(cfg, model, demos, results, tracker)
    voting_stage(cfg, model, demos, refs, bc_compute, results)
    rl_stage(cfg, model, demos, refs, bc_compute, results, tracker)
    tracker.log_summary(results.data)
    tracker.log_artifacts(results.data["artifacts"])


def expert_stage(cfg: Config, results: ResultsFile) -> tuple[Expert, dict[str, float]]:
    start = time.perf_counter()
    expert = get_expert(cfg)
    refs = reference_returns(cfg, expert)
    results.data["timings"]["expert_s"] = time.perf_counter() - start
    results.data["artifacts"]["expert"] = {"path": str(expert.path), "sha256": expert.sha256,
                                           "params_sha256": expert.params_sha256, "source": expert.source,
                                           "check_return": expert.return_mean}
    results.update(references=refs)
    log.info("expert: %s (%s), return %.1f; random %.1f", expert.path, expert.source, expert.return_mean,
             refs["random_return"])
    return expert, refs


def demos_stage(cfg: Config, expert: Expert, results: ResultsFile) -> Demonstrations:
    start = time.perf_counter()
    demos = get_demonstrations(cfg, expert)
    results.data["timings"]["demos_s"] = time.perf_counter() - start
    results.data["artifacts"]["demos"] = {"path": str(demos.path), "sha256": demos.sha256,
                                          "episodes": demos.n_episodes, "transitions": demos.n_transitions,
                                          "mean_return": demos.mean_return}
    results.write()
    return demos


def bc_stage(cfg: Config, model: PPO, demos: Demonstrations, results: ResultsFile, tracker: Tracker) -> StageCompute:
    """Behaviour cloning into the PPO policy (skipped for RL from scratch); returns its compute."""
    if cfg.rl.init != "bc":
        return StageCompute()
    bc = train_bc(model.policy, demos, cfg.bc, cfg.seed, progress=cfg.progress)
    bc_path = results.path.parent / "bc_policy.pt"
    atomic_write(bc_path, lambda f: torch.save(model.policy.state_dict(), f))
    results.data["artifacts"]["bc_policy"] = {"path": str(bc_path), "sha256": file_sha256(bc_path)}
    results.data["timings"]["bc_s"] = bc.wall_s
    results.update(bc={k: v for k, v in vars(bc).items() if k != "curve"} | {"curve": bc.curve})
    tracker.log_bc(bc.curve)
    # BC runs the actor only: forward + backward on every sample.
    return StageCompute(samples=bc.samples, grad_steps=bc.grad_steps,
                        flops=train_flops(actor_params(model.policy), bc.samples), wall_s=bc.wall_s)


def voting_stage(cfg: Config, model: PPO, demos: Demonstrations, refs: dict[str, float], bc_compute: StageCompute,
                 results: ResultsFile) -> None:
    """Sampling-and-voting at the BC policy (`voting.enabled`): results.json `voting`, one row per K."""
    if not cfg.voting.enabled:
        return
    start = time.perf_counter()
    rows = evaluate_voting(cfg, snapshot(model.policy), demos, refs, bc_compute)
    results.data["timings"]["voting_s"] = time.perf_counter() - start
    results.update(voting=rows)
    log.info("voting (%s): normalized %s at K = %s", cfg.voting.mode,
             [round(r["eval/normalized_score"], 3) for r in rows], [r["voting/k"] for r in rows])


def rl_stage(cfg: Config, model: PPO, demos: Demonstrations, refs: dict[str, float], bc_compute: StageCompute,
             results: ResultsFile, tracker: Tracker) -> None:
    """PPO over the budgets; every checkpoint is evaluated and compared with the policy RL started from."""
    start_policy = snapshot(model.policy)  # the BC snapshot (or the initial weights, from scratch)
    attach_anchor(model, cfg.rl.anchor, start_policy, demos.observations, cfg.seed)  # no-op for kind none
    demo_probe = probe_sample(demos.observations, cfg.eval.probe_size, seed=cfg.seed)

    def on_checkpoint(rl_steps: int, model: PPO) -> dict[str, Any]:
        t = time.perf_counter()
        cap = evaluate(cfg.env, policy_act(model.policy, cfg.eval.deterministic), cfg.eval.episodes, cfg.eval.seed)
        row: dict[str, Any] = cap.row(refs["random_return"], refs["expert_return"]) | {
            "eval/wall_s": time.perf_counter() - t}
        if cfg.eval.drift:
            t = time.perf_counter()
            probes = {"demo": demo_probe, "visited": probe_sample(cap.visited, cfg.eval.probe_size, seed=cfg.seed)}
            metrics, table = checkpoint_drift(start_policy, model.policy, probes, demos.observations,
                                              demos.actions, cfg.eval.sparsity_tols)
            row |= metrics | {"drift/wall_s": time.perf_counter() - t, "drift_table": table}
        row |= bc_compute.as_dict("bc") | {"compute/bc/demo_transitions": demos.n_transitions}
        return row

    def on_row(row: dict[str, Any]) -> None:
        row["compute/total/flops"] = row["compute/bc/flops"] + row["compute/rl/flops"]
        results.add_checkpoint(row)
        tracker.log_checkpoint(row)

    start = time.perf_counter()
    finetune(model, cfg.rl, on_checkpoint, progress=cfg.progress, on_row=on_row)
    results.data["timings"]["rl_total_s"] = time.perf_counter() - start
    final = results.path.parent / "final_model.zip"
    atomic_write(final, lambda f: model.save(f))  # type: ignore[arg-type]  # SB3 saves into any binary file
    results.data["artifacts"]["final_policy"] = {"path": str(final), "sha256": file_sha256(final)}
