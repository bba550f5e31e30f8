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

from testbed.bc import train_bc
from testbed.cache import file_sha256
from testbed.config import Config, validate
from testbed.demonstrations import get_demonstrations
from testbed.envs import make_vec_env
from testbed.evaluate import evaluate, policy_act, reference_returns
from testbed.expert import get_expert
from testbed.finetune import finetune
from testbed.policy import build_ppo
from testbed.results import ResultsFile, format_table, run_name

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
    validate(cfg)
    torch.set_num_threads(cfg.torch_threads)
    set_random_seed(cfg.seed)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job and return the content of its results.json."""
    setup(cfg)
    results = ResultsFile(output_dir(cfg), cfg)
    try:
        _run_stages(cfg, results)
    except BaseException as exc:
        results.fail(exc)
        raise
    results.complete()
    print(format_table(results.data))
    return results.data


def _run_stages(dcfg: DictConfig, results: ResultsFile) -> None:
    cfg = cast(Config, dcfg)  # a DictConfig validated against the Config schema
    timings: dict[str, float] = {}
    start = time.perf_counter()
    expert = get_expert(cfg)
    refs = reference_returns(cfg, expert.return_mean)
    timings["expert_s"] = time.perf_counter() - start
    results.update(
        references=refs,
        artifacts={"expert": {"path": str(expert.path), "sha256": expert.sha256, "source": expert.source}},
    )
    log.info(
        "expert: %s (%s), return %.1f; random %.1f",
        expert.path,
        expert.source,
        expert.return_mean,
        refs["random_return"],
    )

    start = time.perf_counter()
    demos = get_demonstrations(cfg, expert)
    timings["demos_s"] = time.perf_counter() - start
    results.data["artifacts"]["demos"] = {
        "path": str(demos.path),
        "sha256": demos.sha256,
        "episodes": demos.n_episodes,
        "transitions": demos.n_transitions,
        "mean_return": demos.mean_return,
    }

    model = build_ppo(cfg.env, make_vec_env(cfg.env, cfg.seed), cfg.seed)
    if cfg.rl.init == "bc":
        bc = train_bc(model.policy, demos, cfg.bc, cfg.seed, progress=cfg.progress)
        results.update(bc={k: v for k, v in vars(bc).items() if k != "curve"} | {"curve": bc.curve})
        timings["bc_s"] = bc.wall_s
        bc_path = results.path.parent / "bc_policy.pt"
        torch.save(model.policy.state_dict(), bc_path)
        results.data["artifacts"]["bc_policy"] = {"path": str(bc_path), "sha256": file_sha256(bc_path)}

    def on_checkpoint(rl_steps: int, model: PPO) -> dict[str, Any]:
        t = time.perf_counter()
        cap = evaluate(cfg.env, policy_act(model.policy, cfg.eval.deterministic), cfg.eval.episodes, cfg.eval.seed)
        row = cap.row(refs["random_return"], refs["expert_return"]) | {"eval/wall_s": time.perf_counter() - t}
        results.add_checkpoint({"rl_steps": rl_steps, **row})
        return row

    start = time.perf_counter()
    rows = finetune(model, cfg.rl, on_checkpoint, progress=cfg.progress)
    timings["rl_total_s"] = time.perf_counter() - start
    results.update(checkpoints=rows, timings=timings)
    final = results.path.parent / "final_model.zip"
    model.save(final)
    results.data["artifacts"]["final_policy"] = {"path": str(final), "sha256": file_sha256(final)}
