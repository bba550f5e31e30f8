"""BC throughput of the testbed's loop (default BC settings) against a naive DataLoader loop, over several seeds.

Both loops get the same data, model, train/held-out split and learning rate. The naive loop runs as many gradient
steps as ours and its held-out NLL is read twice: when it has run as long as ours took (same wall time: what a
researcher waiting for BC gets) and at the end (same steps). Held-out NLL is measured on the held-out
transitions of the split and on fresh expert episodes that neither loop saw (demonstration seeds disjoint from
the training demonstrations'): neighbouring transitions of one episode are near copies, so only fresh episodes
show generalization.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from testbed.bc import nll_and_entropy, split, to_tensors, train_bc
from testbed.config import Config
from testbed.demonstrations import get_demonstrations
from testbed.envs import make_vec_env
from testbed.expert import get_expert
from testbed.policy import actor_parameters, build_ppo

SEEDS = (0, 1, 2, 3, 4)
FRESH_EPISODES = 16  # from demonstration seed 1: start states the training demonstrations never had
NAIVE_BATCH = 256


def default_config(*overrides: str) -> Config:
    """The default job's config, composed as the CLI composes it."""
    from hydra import compose, initialize_config_dir

    from testbed.config import register_configs, to_config

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return to_config(compose("config", overrides=["logger=none", *overrides]))


@torch.no_grad()
def nlls(policy: Any, heldout: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    return [float(nll_and_entropy(policy, obs, actions)[0]) for obs, actions in heldout]


def naive_bc(
    policy: Any,
    data: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    lr: float,
    seed: int,
    read_at_s: float,
    heldout: list[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, Any]:
    """The textbook loop: DataLoader over a TensorDataset, batch 256, reshuffled every epoch, loss through SB3's
    distribution classes, Adam on the actor's parameters. Held-out NLLs are read (off the clock) once the loop
    has trained for `read_at_s` seconds."""
    loader = DataLoader(
        TensorDataset(*data), batch_size=NAIVE_BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.Adam(actor_parameters(policy), lr=lr)
    epochs = (batch for _ in itertools.count() for batch in loader)  # endless, reshuffled every epoch
    seconds, samples, at_time = 0.0, 0, None
    for _ in range(steps):
        start = time.perf_counter()
        x, y = next(epochs)
        loss = -policy.get_distribution(x).log_prob(y).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds, samples = seconds + time.perf_counter() - start, samples + len(y)
        if at_time is None and seconds >= read_at_s:
            at_time = nlls(policy, heldout)
    # A loop that finished all its steps within ours' wall time is read at its end.
    return {
        "seconds": seconds,
        "samples": samples,
        "nll_same_time": at_time or nlls(policy, heldout),
        "nll_same_steps": nlls(policy, heldout),
    }


def new_policy(cfg: Config, seed: int) -> Any:
    return build_ppo(cfg.env, make_vec_env(cfg.env, 0, n_envs=1), seed=seed).policy


def main(*overrides: str) -> dict[str, Any]:
    """Default BC settings on the default env's demonstrations (expert and datasets from the cache)."""
    cfg = default_config(*overrides)
    torch.set_num_threads(1)
    expert = get_expert(cfg)
    demos = get_demonstrations(cfg, expert)
    fresh = get_demonstrations(default_config(*overrides, "demos.seed=1", f"demos.episodes={FRESH_EPISODES}"), expert)
    rows: dict[str, list[float]] = {}
    for seed in SEEDS:
        ours = new_policy(cfg, seed)
        result = train_bc(ours, demos, cfg.bc, seed=seed, progress=False)

        naive = new_policy(cfg, seed)
        obs, actions = to_tensors(naive, demos)
        train_idx, val_idx = split(len(actions), cfg.bc.val_fraction, seed)  # the split train_bc used
        heldout = [(obs[val_idx], actions[val_idx]), to_tensors(naive, fresh)]
        run = naive_bc(
            naive, (obs[train_idx], actions[train_idx]), result.grad_steps, cfg.bc.lr, seed, result.wall_s, heldout
        )
        ours_nll = nlls(ours, heldout)
        for key, value in {
            "ours_wall_s": result.wall_s,
            "naive_wall_s": run["seconds"],
            "ours_samples_per_s": result.samples / result.wall_s,
            "naive_samples_per_s": run["samples"] / run["seconds"],
            "ours_heldout_nll": ours_nll[0],
            "naive_same_time_heldout_nll": run["nll_same_time"][0],
            "naive_same_steps_heldout_nll": run["nll_same_steps"][0],
            "ours_fresh_nll": ours_nll[1],
            "naive_same_time_fresh_nll": run["nll_same_time"][1],
            "naive_same_steps_fresh_nll": run["nll_same_steps"][1],
        }.items():
            rows.setdefault(key, []).append(value)
    out: dict[str, Any] = {k: round(float(np.mean(v)), 4) for k, v in rows.items()}
    out["speedup"] = round(out["ours_samples_per_s"] / out["naive_samples_per_s"], 2)
    # The target: speedup >= 5 with a mean held-out NLL no worse than the naive loop's after the same wall time.
    out["no_worse_same_time"] = bool(
        out["ours_heldout_nll"] <= out["naive_same_time_heldout_nll"]
        and out["ours_fresh_nll"] <= out["naive_same_time_fresh_nll"]
    )
    # Seeds where ours is no worse than the naive loop after the same wall time, on both held-out sets.
    out["seeds_no_worse_same_time"] = sum(
        o <= n and of <= nf
        for o, n, of, nf in zip(
            rows["ours_heldout_nll"],
            rows["naive_same_time_heldout_nll"],
            rows["ours_fresh_nll"],
            rows["naive_same_time_fresh_nll"],
            strict=True,
        )
    )
    out["per_seed"] = {k: [round(x, 3) for x in v] for k, v in rows.items() if "nll" in k or "wall" in k}
    out |= {
        "seeds": len(SEEDS),
        "grad_steps": result.grad_steps,
        "lr": cfg.bc.lr,
        "batch_size": min(cfg.bc.batch_size, result.train_transitions),
        "transitions": demos.n_transitions,
        "fresh_transitions": fresh.n_transitions,
    }
    return out
