"""Job records -> cell identity: cells (jobs that differ only in seed), BC snapshots and frontier groups, readable
labels, and the tidy checkpoint and layer rows; per cell, its kind and which demonstrations it cloned."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from testbed.cache import content_hash
from testbed.results import _HASH_NEUTRAL, _NOT_HASHED

# Config keys (dotted prefixes) that never split a cell: the seed, where the job reports, which budgets and which
# BC step counts it also evaluated (each such checkpoint becomes a record of its own, load._bc_checkpoint_records).
_NOT_CELL = (*_NOT_HASHED, "seed", "rl.budgets", "rl.budget", "env.rl_budgets", "bc.checkpoints")
# Keys that do not change a BC snapshot: its RL settings and its name.
_NOT_BC = (*_NOT_CELL, "rl", "variant")
# Keys that change what a frontier's capability means (task, expert, demonstration source, evaluation).
# Demonstration count, BC steps and the learner's width (env.net_arch) are the frontier's axes, and the
# learner's PPO settings (env.ppo) only shape RL after the BC snapshot, so none of them are among them; nor is
# demos.seed: which draw of demonstrations a job clones is seed noise of one source, not another source.
FRONTIER_KEYS = (
    "env.id",
    "env.max_episode_steps",
    "env.wrapper",
    "env.mask_velocity",
    "env.expert_timesteps",
    "env.expert_algo",
    "env.expert_kwargs",
    "env.expert_net_arch",
    "env.expert_activation",
    "expert",
    "demos.epsilon",
    "demos.expert_quality",
    "demos.mix",
    "demos.deterministic",
    "eval.episodes",
    "eval.deterministic",
    "eval.seed",
    "policy",  # each learner has its own frontier: CEG per learner is against its own imitation
)
# demos.seed in a cell's config where each job's demonstrations follow its seed (the default, `${seed}`).
FOLLOWS_SEED = "${seed}"
# Identity and config columns of the tidy table (before the checkpoint's own columns). `demos_seed` is the
# job's resolved demos.seed; `demos_follow_seed` says whether it follows the job's seed or is fixed.
COLUMNS = (
    "env",
    "env_id",
    "variant",
    "seed",
    "rl_init",
    "run_name",
    "cell",
    "label",
    "bc_hash",
    "frontier",
    "demos",
    "grad_steps",
    "width",
    "depth",
    "lr_rule",
    "demos_seed",
    "demos_follow_seed",
    "config_hash",
    "folder",
)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {dotted key: value}; lists and empty dicts stay whole values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


# _HASH_NEUTRAL by flat key (a group's neutral dict, `policy`, key by key, as flatten gives its values).
_NEUTRAL_FLAT = {
    key: value
    for dotted, neutral in _HASH_NEUTRAL.items()
    for key, value in (
        flatten(neutral, f"{dotted}.") if isinstance(neutral, dict) and neutral else {dotted: neutral}
    ).items()
}


def _without(flat: dict[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    prefixes = tuple(prefixes)
    return {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in prefixes)}


def _only(flat: dict[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    prefixes = tuple(prefixes)
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def _label_cells(records: list[dict[str, Any]]) -> None:
    """Give each record its cell, BC snapshot and frontier hashes and a readable label.

    A label is the variant plus the config values that vary between the env's cells, e.g.
    `bc demos.episodes=4 bc.grad_steps=500`.
    """
    flats = _demos_seed_follows(records)
    for r, flat in zip(records, flats, strict=True):
        # RL from scratch uses neither BC settings nor demonstrations (but for its drift probe): not in its cell.
        scratch = r["data"]["config"]["rl"]["init"] != "bc"
        r["flat"] = _without(flat, (*_NOT_CELL, "bc", "demos") if scratch else _NOT_CELL)
        r["cell"] = content_hash(r["flat"])[:12]
        r["bc_hash"] = content_hash(_without(flat, _NOT_BC))[:12]
        r["frontier_flat"] = _only(flat, FRONTIER_KEYS)
    for env in {r["env"] for r in records}:
        group = [r for r in records if r["env"] == env]
        varying = _varying([r["flat"] for r in group], skip=("variant", "rl.init"))
        frontier_varying = _varying([r["frontier_flat"] for r in group], skip=())
        for r in group:
            keys = [k for k in varying if k in r["flat"]]
            r["label"] = " ".join([str(r["data"]["variant"]), *(f"{k}={_short(r['flat'][k])}" for k in keys)])
            # A key absent from a record is at its neutral value there (left out by _demos_seed_follows).
            values = {k: r["frontier_flat"].get(k, _NEUTRAL_FLAT.get(k)) for k in frontier_varying}
            r["frontier"] = " ".join([env, *(f"{k}={_short(v)}" for k, v in values.items())])


def _demos_seed_follows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's flat config with demos.seed as FOLLOWS_SEED where it follows the job's seed.

    The config in results.json is resolved, so `demos.seed == seed` is all that tells the default (`${seed}`)
    from a fixed set; a job whose fixed value happens to equal its seed counts as fixed when other jobs of its
    configuration used that value with other seeds. Sets `demos_follow_seed` on every record.
    """
    # A setting added after some results existed is absent from theirs: at its neutral value it is the same cell.
    neutral = _NEUTRAL_FLAT
    flats = [
        {k: v for k, v in flatten(r["data"]["config"]).items() if k not in neutral or v != neutral[k]} for r in records
    ]
    config = [content_hash(_without(flat, (*_NOT_CELL, "demos.seed"))) for flat in flats]
    fixed = {
        (c, flat["demos.seed"])
        for c, flat in zip(config, flats, strict=True)
        if "demos.seed" in flat and flat["demos.seed"] != flat["seed"]
    }
    for r, c, flat in zip(records, config, flats, strict=True):
        r["demos_follow_seed"] = (
            "demos.seed" in flat and flat["demos.seed"] == flat["seed"] and (c, flat["demos.seed"]) not in fixed
        )
        if r["demos_follow_seed"]:
            flat["demos.seed"] = FOLLOWS_SEED
    return flats


def _varying(flats: list[dict[str, Any]], skip: Sequence[str]) -> list[str]:
    keys = dict.fromkeys(k for flat in flats for k in flat if k not in skip)
    return [k for k in keys if len({json.dumps(flat[k], sort_keys=True) for flat in flats if k in flat}) > 1]


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)


def _checkpoint_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    data, config = rec["data"], rec["data"]["config"]
    arch = config["env"].get("net_arch")  # hand-made test records may leave it out
    ident = {
        "env": rec["env"],
        "env_id": data["env_id"],
        "variant": data["variant"],
        "seed": data["seed"],
        "rl_init": config["rl"]["init"],
        "run_name": data["run_name"],
        "cell": rec["cell"],
        "label": rec["label"],
        "bc_hash": rec["bc_hash"],
        "frontier": rec["frontier"],
        "demos": config["demos"]["episodes"],
        "grad_steps": config["bc"]["grad_steps"] if config["rl"]["init"] == "bc" else 0,
        "width": max(arch) if arch else None,  # the learner's widest hidden layer
        "depth": len(arch) if arch else None,  # its number of hidden layers
        "lr_rule": config.get("lr_rule", "fixed"),  # absent from results made before it existed: fixed
        "policy": policy_label(config.get("policy") or {}),  # the learner's memory; absent before policy=: mlp
        "demos_seed": config["demos"].get("seed"),
        "demos_follow_seed": rec["demos_follow_seed"],
        "config_hash": data["config_hash"],
        "folder": rec["folder"],
    }
    refs = {f"references/{k}": v for k, v in (data.get("references") or {}).items()}
    return [
        ident | refs | {k: v for k, v in row.items() if not isinstance(v, list | dict)} for row in data["checkpoints"]
    ]


def policy_label(policy: dict[str, Any]) -> str:
    """The learner's memory as the memory study names it: the policy kind, `scratchpad_final` for a scratchpad
    whose BC fitted the env's actions only."""
    kind = str(policy.get("kind", "mlp"))
    return "scratchpad_final" if kind == "scratchpad" and not policy.get("scratch_supervision", True) else kind


def _layer_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    data = rec["data"]
    ident = {
        "env": rec["env"],
        "seed": data["seed"],
        "cell": rec["cell"],
        "label": rec["label"],
        "rl_init": data["config"]["rl"]["init"],
    }
    return [
        ident | {"rl_steps": row["rl_steps"]} | layer
        for row in data["checkpoints"]
        for layer in row.get("drift_table") or []
    ]


def cell_points(points: pd.DataFrame) -> pd.DataFrame:
    """One row per cell x seed x rl_steps (the same checkpoint from two jobs of one cell counts once)."""
    return points.drop_duplicates(["cell", "seed", "rl_steps"]).reset_index(drop=True)


def demonstration_sets(points: pd.DataFrame) -> pd.DataFrame:
    """Per env, which demonstrations its BC-started cells cloned: `mode` 'per_seed' (each job seed its own set,
    demos.seed = seed), 'fixed' (one set for all seeds, `fixed_seeds` = [demos.seed]), 'mixed' (cells of both, or
    several fixed sets) or 'unknown' (results without demos.seed); `cells_per_seed`, `cells_fixed`: cell counts."""
    rows = []
    for env, g in points[points["rl_init"] == "bc"].groupby("env", sort=True):
        cells = g.drop_duplicates("cell")
        own = cells["demos_follow_seed"].astype(bool)
        fixed = cells.loc[~own & cells["demos_seed"].notna(), "demos_seed"]
        unknown = len(cells) - own.sum() - len(fixed)  # results.json written before demos.seed existed
        sets = {*(["seed"] if own.any() else []), *fixed, *(["?"] if unknown else [])}
        mode = "mixed" if len(sets) > 1 else {"seed": "per_seed", "?": "unknown"}.get(sets.pop(), "fixed")
        rows.append(
            {
                "env": env,
                "mode": mode,
                "fixed_seeds": sorted(int(s) for s in set(fixed)),
                "cells_per_seed": int(own.sum()),
                "cells_fixed": len(fixed),
            }
        )
    return pd.DataFrame(rows, columns=["env", "mode", "fixed_seeds", "cells_per_seed", "cells_fixed"])


def kinds(points: pd.DataFrame) -> pd.Series:
    """Per cell: 'bc_only' (BC snapshots only), 'bc_rl' (BC then RL) or 'scratch' (RL from scratch)."""
    by_cell = points.groupby("cell").agg(init=("rl_init", "first"), top=("rl_steps", "max"))
    kind = np.where(by_cell["init"] == "scratch", "scratch", np.where(by_cell["top"] > 0, "bc_rl", "bc_only"))
    return pd.Series(kind, index=by_cell.index)


def start_and_budgets(points: pd.DataFrame, metric: str) -> Iterator[tuple[str, Any, pd.Series, pd.DataFrame]]:
    """Per BC+RL cell and RL budget > 0: (cell, budget, each seed's `metric` at RL step 0 indexed by seed, the
    budget's rows); the walk both the gain (tables.tradeoff_table) and the imitation share (gap.share_table) pair."""
    pts = cell_points(points)
    pts = pts[pts["cell"].map(kinds(pts)).eq("bc_rl")]
    for cell, g in pts.groupby("cell", sort=False):
        start = g[g["rl_steps"] == 0].set_index("seed")[metric]
        for rl_steps, b in g[g["rl_steps"] > 0].groupby("rl_steps"):
            yield str(cell), rl_steps, start, b
