"""Measure the environment table of docs/envs.md: each env's expert, and BC from 1, 4 and 16 demonstrations.

    .venv/bin/python experiments/env_table.py                      # every env, from the cached experts
    .venv/bin/python experiments/env_table.py --envs acrobot --seeds 0 1 2 3 4

For every env the expert comes from the cache (trained there on a miss, which can take many minutes: see
the table's training times). Each BC cell is one pipeline job at RL budget 0: `demos.episodes=n`,
`demos.seed=s`, `seed=s`, so every seed clones its own demonstration episodes. A second table repeats the
BC cells with the velocities hidden from the learner (`env.mask_velocity=true`; `--no-masked` skips it).
Jobs whose results.json is complete for the same config are not rerun (they live in outputs/env_table/).
The tables go to stdout and, with the per-job numbers, to experiments/results/env_table.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.cache import read_json  # noqa: E402
from testbed.config import register_configs, to_config  # noqa: E402
from testbed.envs import HIDDEN_INDICES  # noqa: E402
from testbed.expert import get_expert  # noqa: E402
from testbed.pipeline import run  # noqa: E402
from testbed.results import config_hash, is_complete  # noqa: E402

ENVS = ["cartpole", "acrobot", "mountaincar", "lunarlander", "pendulum", "doorkey"]
OUT = ROOT / "experiments" / "results"


def make_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def expert_row(env: str, cache_dir: str) -> dict[str, Any]:
    """The cached expert's return and training cost (training it on a cache miss)."""
    cfg = make_cfg(f"env={env}", f"cache_dir={cache_dir}", "logger=none", "progress=false")
    expert = get_expert(to_config(cfg))
    meta = read_json(expert.path.parent / "meta.json")
    return {
        "env": env,
        "env_id": cfg.env.id,
        "algo": meta.get("algo", "ppo"),
        "expert_steps": meta["timesteps"],
        "expert_return": meta["return_mean"],
        "expert_return_std": meta["return_std"],
        "reference_return": cfg.env.reference_return,
        "train_s": meta["train_seconds"],
        "train_cpu_s": meta.get("train_cpu_seconds"),
        "demo_episodes": cfg.env.demo_episodes,
    }


def bc_cell(env: str, n: int, seed: int, cache_dir: str, masked: bool = False) -> dict[str, Any]:
    """BC from `n` demonstrations with seed `seed`: one pipeline job at RL budget 0 (velocities hidden from the
    learner if `masked`; the expert still sees them)."""
    folder = ROOT / "outputs" / "env_table" / env / f"demos{n}_s{seed}{'_masked' if masked else ''}"
    cfg = make_cfg(
        f"env={env}",
        f"env.mask_velocity={masked}",
        f"demos.episodes={n}",
        f"demos.seed={seed}",
        f"seed={seed}",
        "rl.budgets=[0]",
        "eval.drift=false",
        "logger=none",
        "progress=false",
        f"cache_dir={cache_dir}",
        f"output_dir={folder}",
    )
    path = folder / "results.json"
    data = read_json(path) if is_complete(path, config_hash(cfg)) else run(cfg)
    row = data["checkpoints"][0]
    return {
        "env": env,
        "masked": masked,
        "demos": n,
        "seed": seed,
        "return": row["eval/return_mean"],
        "normalized": row["eval/normalized_score"],
        "success": row["eval/success_rate"],
        "demo_return": data["artifacts"]["demos"]["mean_return"],
        "transitions": data["artifacts"]["demos"]["transitions"],
        "random_return": data["references"]["random_return"],
    }


def fmt(x: float, scale: float | None = None) -> str:
    """A return with the precision its scale (default: itself) needs; DoorKey's lie in [0, 1]."""
    return f"{x:.3f}" if abs(x if scale is None else scale) < 10 else f"{x:.1f}"


def score_columns(cells: list[dict[str, Any]], demos: list[int]) -> list[str]:
    """Mean ± std over seeds of the normalized score, one column per demonstration count."""
    cols = []
    for n in demos:
        scores = np.array([c["normalized"] for c in cells if c["demos"] == n])
        cols.append(f"{scores.mean():.2f} ± {scores.std():.2f}" if len(scores) else "-")
    return cols


def table(experts: list[dict[str, Any]], cells: list[dict[str, Any]], demos: list[int]) -> str:
    head = (
        "| env | expert | steps | expert return | random return | train wall / CPU (min) | "
        + " | ".join(f"BC {n} demo{'s' if n > 1 else ''}" for n in demos)
        + " | default demos |"
    )
    lines = [head, "|" + "---|" * (7 + len(demos))]
    for e in experts:
        mine = [c for c in cells if c["env"] == e["env"] and not c["masked"]]
        random_return = fmt(mine[0]["random_return"]) if mine else "-"
        cpu = "-" if e["train_cpu_s"] is None else f"{e['train_cpu_s'] / 60:.1f}"
        scores = " | ".join(score_columns(mine, demos))
        lines.append(
            f"| {e['env_id']} | {e['algo'].upper()} | {e['expert_steps']:,} | "
            f"{fmt(e['expert_return'])} ± {fmt(e['expert_return_std'], e['expert_return'])} | {random_return} | "
            f"{e['train_s'] / 60:.1f} / {cpu} | {scores} | {e['demo_episodes']} |"
        )
    return "\n".join(lines)


def masked_table(experts: list[dict[str, Any]], cells: list[dict[str, Any]], demos: list[int]) -> str:
    """BC of a feed-forward learner that does not see the velocities, from the full-observation expert."""
    head = "| env | hidden components | " + " | ".join(f"BC {n} demo{'s' if n > 1 else ''}" for n in demos) + " |"
    lines = [head, "|" + "---|" * (2 + len(demos))]
    for e in experts:
        mine = [c for c in cells if c["env"] == e["env"] and c["masked"]]
        if mine:
            hidden = ", ".join(map(str, HIDDEN_INDICES[e["env_id"]]))
            lines.append(f"| {e['env_id']} | {hidden} | " + " | ".join(score_columns(mine, demos)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--demos", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache" / "testbed"))
    parser.add_argument("--no-masked", action="store_true", help="skip BC with velocities hidden from the learner")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    register_configs()

    experts = [expert_row(env, args.cache_dir) for env in args.envs]
    cells = [bc_cell(env, n, s, args.cache_dir) for env in args.envs for n in args.demos for s in args.seeds]
    if not args.no_masked:
        maskable = [e["env"] for e in experts if e["env_id"] in HIDDEN_INDICES]
        cells += [bc_cell(env, n, s, args.cache_dir, True) for env in maskable for n in args.demos for s in args.seeds]
    text = table(experts, cells, args.demos)
    if not args.no_masked:
        text += "\n\nVelocities hidden from the learner (`env.mask_velocity=true`):\n\n" + masked_table(
            experts, cells, args.demos
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "env_table.md").write_text(text + "\n")
    (OUT / "env_table.json").write_text(json.dumps({"experts": experts, "bc": cells}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
