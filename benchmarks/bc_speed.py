"""BC throughput of the testbed's index-slicing loop against a naive DataLoader loop, same data and model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import torch
from torch.utils.data import DataLoader, TensorDataset

from testbed.bc import nll_and_entropy, split, to_tensors, train_bc
from testbed.config import Config
from testbed.demonstrations import get_demonstrations
from testbed.envs import make_vec_env
from testbed.expert import get_expert
from testbed.policy import build_ppo


def default_config(*overrides: str):  # type: ignore[no-untyped-def]
    """The default job's config, composed as the CLI composes it."""
    from hydra import compose, initialize_config_dir

    from testbed.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose("config", overrides=["logger=none", *overrides])


def naive_bc(policy, obs: torch.Tensor, actions: torch.Tensor, steps: int, lr: float) -> float:  # type: ignore[no-untyped-def]
    """The textbook loop: DataLoader over a TensorDataset, batch 256, reshuffled every epoch, loss through
    SB3's distribution classes."""
    loader = DataLoader(TensorDataset(obs, actions), batch_size=256, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    params = [p for n, p in policy.named_parameters() if "value" not in n]
    optimizer = torch.optim.Adam(params, lr=lr)
    start, done = time.perf_counter(), 0
    while done < steps:
        for x, y in loader:
            loss = -policy.get_distribution(x).log_prob(y).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def main() -> dict[str, float]:
    """Default BC settings on the default env's demonstrations (expert and dataset from the cache)."""
    cfg = cast(Config, default_config())
    torch.set_num_threads(1)
    demos = get_demonstrations(cfg, get_expert(cfg))
    fresh = lambda: build_ppo(cfg.env, make_vec_env(cfg.env, 0, n_envs=1), seed=0).policy  # noqa: E731

    ours = fresh()
    result = train_bc(ours, demos, cfg.bc, seed=0, progress=False)
    ours_rate = result.samples / result.wall_s

    naive = fresh()
    obs, actions = to_tensors(naive, demos)
    train_idx, val_idx = split(len(actions), cfg.bc.val_fraction, 0)
    seconds = naive_bc(naive, obs[train_idx], actions[train_idx], cfg.bc.grad_steps, cfg.bc.lr)
    naive_samples = cfg.bc.grad_steps * min(256, len(train_idx))
    with torch.no_grad():
        naive_val = float(nll_and_entropy(naive, obs[val_idx], actions[val_idx])[0])
    return {"ours_samples_per_s": ours_rate, "naive_samples_per_s": naive_samples / seconds,
            "speedup": ours_rate / (naive_samples / seconds), "ours_val_nll": result.val_loss,
            "naive_val_nll": naive_val, "transitions": demos.n_transitions}
