"""The memory study (testbed.analysis.memory) -> the report's memory section: one table per task, its learners
by row (size, capability after BC and after each RL budget, compute to reach capability levels, CEG, how readable
their memory is, a scratchpad's causal check). Shown when the folders hold probed cells of more than one learner
(`memory.studied`)."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from testbed.analysis.memory import LEVELS, Memory
from testbed.report.gap import _records
from testbed.report.tables import Table, _ci, _gain_text, _int, _nan, _sci

TITLE = "Memory: hidden state against written-out notes"
INTRO = (
    "Per task, the same pipeline for learners with different memory, their actors of about the same size: mlp (none), "
    "framestack (its last 4 observations), scratchpad (writes a note appended to its next observation; BC fits the "
    "expert's notes, the state the task hides, too), scratchpad_final (the same learner, BC on the env's actions "
    "only), lstm (RecurrentPPO; BC over whole episodes with the state carried). Scores: normalized (0 random, 1 "
    "expert), IQM over seeds with a percentile bootstrap 95% CI. FLOPs to a level: BC + RL FLOPs of each seed's "
    "first checkpoint at or above it (at the checkpoints' granularity), IQM over seeds, with the number of seeds that "
    "reached it. CEG: cost-charged, at the largest budget, against the learner's own imitation frontier. Probe: a "
    "linear map from the memory (mlp: its observation; framestack: the stacked observations; scratchpad: its notes; "
    "lstm: hidden and cell state) to the hidden state, fitted on half the probe episodes and scored on the other "
    "half: accuracy for a binary state (parity's running result; chance is about 0.5), R^2 for a continuous one. "
    "Causal check (scratchpad): the score with every note overwritten by the truth and by a wrong value (a flipped "
    "bit, the negated velocity), and the fraction of steps at which one overwritten note changes the env action."
)


def _score(r: pd.Series, name: str) -> str:
    return _ci(r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high"))


def _flops(r: pd.Series, level: float) -> str:
    name, seeds = f"flops_to_{level:g}", int(r["seeds"])
    reached = int(r[f"reached_{level:g}"])
    if reached * 4 <= seeds * 3 or _nan(r[name]):  # more than a quarter censored: no finite IQM
        return f"not reached ({reached}/{seeds})"
    return f"{_sci(r[name])} ({reached}/{seeds})"


def _row(r: pd.Series, budgets: list[float], bc_only: list[str]) -> dict[str, Any]:
    row = {
        "learner": r["policy"],
        "actor params": _int(r["actor_params"]),
        "FLOPs / step": _int(r["flops_per_step"]),
        f"BC ({int(r['demos'])} demos)": _score(r, "bc_score"),
    }
    row |= {f"BC {c.removeprefix('bc@').replace('x', ' demos x ')} steps": _score(r, c) for c in bc_only}
    row |= {f"RL {int(b):,}": _score(r, f"score@{int(b)}") for b in budgets}
    row |= {f"FLOPs to {level:g}": _flops(r, level) for level in LEVELS}
    row["CEG"] = _gain_text(r, "ceg_charged", "ceg") if "ceg_charged" in r and not _nan(r["ceg_charged"]) else "-"
    probe = r.get("probe") or "probe"
    row[f"{probe}: BC"] = _score(r, "probe_bc")
    row[f"{probe}: RL"] = _score(r, "probe_rl")
    if not _nan(r.get("own_score_bc")):
        row["notes own / true / wrong (BC)"] = " / ".join(
            _ci(r[f"{k}_score_bc"], float("nan"), float("nan")) for k in ("own", "true", "wrong")
        )
        row["action change true / wrong"] = f"{_ci(r['true_action_change_bc'], float('nan'), float('nan'))} / " + _ci(
            r["wrong_action_change_bc"], float("nan"), float("nan")
        )
    return row


def _natural(name: str) -> list[Any]:
    """parity8 before parity16: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def memory_tables(m: Memory) -> list[Table]:
    """(title, note, table of strings) per task, in the order of the table."""
    tables = []
    envs = sorted(m.table["env"].unique(), key=_natural)
    for env, g in ((e, m.table[m.table["env"] == e]) for e in envs):
        budgets = [b for b in m.budgets if g[f"score@{int(b)}"].notna().any()]  # this task's own budgets
        bc_only = sorted(
            {c for c in g.columns if c.startswith("bc@") and not c.endswith(("_ci_low", "_ci_high"))},
            key=lambda c: [int(x) for x in c.removeprefix("bc@").split("x")],
        )
        rows = pd.DataFrame([_row(r, budgets, bc_only) for _, r in g.iterrows()])
        note = f"{int(g['seeds'].max())} seeds; RL budgets in env steps; BC-only columns: the learner's other BC cells."
        tables.append((f"Memory: {env}", note, rows))
    return tables


def raw_tables(m: Memory) -> dict[str, pd.DataFrame]:
    """The memory study's numbers for tables/*.csv (+inf: censored)."""
    return {"memory": m.table}


def summary(m: Memory) -> dict[str, Any]:
    """summary.json's `memory`: the budgets and the table as records (NaN as null, +inf as "inf")."""
    return {"rl_budgets": m.budgets, "memory": _records(m.table)}
