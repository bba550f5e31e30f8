"""Sweep results -> tidy tables, the imitation frontier, compute-equivalent gain with CIs, comparisons.

Reads every results.json under the given folders (no wandb). Everything here is numbers; `testbed.report`
draws and writes them. The method, in brief (docs/research.md has the long form):

- A *cell* is a set of jobs that differ only in their seed (with it their demos.seed, where that follows the
  seed, the default; a fixed demos.seed is part of the cell) and in which RL budgets they checkpoint at (a
  checkpoint at budget B equals a separate run of budget B). Capability over seeds is the IQM with
  `stats.aggregate`'s stratified bootstrap CI.
- The *imitation frontier* P_BC(C) is fitted, per env and demonstration source, from every BC snapshot:
  the `rl_steps = 0` checkpoint of every `rl.init=bc` job, BC-only or not (all are BC policies whose cost
  is `compute/bc/flops`). At each distinct cost the best BC configuration (the frontier is the best
  capability that cost buys); where a cost has several, the best is chosen on half of the seeds and scored
  on the other half, both ways (cross-fitting: a choice scored on the seeds that made it is biased up, and
  CEG with it down); then
  weighted isotonic regression (scipy's pool-adjacent-violators) over increasing cost, and linear
  interpolation in log10(cost) between fitted points. Nothing is extrapolated.
- *CEG* of a BC+RL point with capability P: C_eq = P_BC^-1(P), the least BC compute whose fitted
  capability reaches P; CEG = C_eq / C_BC and the cost-charged C_eq / (C_BC + C_RL). P above the fit's
  best but reached by some cost's measured capability maps to the cheapest such cost (never below where the
  fit tops out); P above every measured capability gives a lower bound (C_eq >= the largest cost), below
  the fit's lowest an upper bound. The same inverse on the demonstration-transitions axis gives the
  demonstration-equivalent gain D_eq / D. A cell's BC snapshot (rl_steps = 0) is marked `start`, not given
  a gain: it is a point of the frontier itself.
- *CIs* of the gains: seeds are resampled within every cell (the BC configurations that make the frontier,
  within each cross-fitting half, and the BC+RL cell, with the same draw where they share seeds), the
  frontier is refitted on every resample and the point mapped through it; percentile interval.

- The *gap to cover* (`gap`): per start and capability target, the RL steps and FLOPs to first reach the target
  (interpolated between checkpoints linearly in log(steps), linearly in steps from step 0 to the first checkpoint;
  censored where no checkpoint reaches it), the drift at that moment, and the share of the capability that BC
  delivered; one row per env for the report's cross-env section.

The modules, in the order the data flows: `load` (sweep folders -> jobs and their checkpoint rows), `cells`
(cell identity and labels), `frontier` (the fit, its inverse and the gains' CIs, on arrays only), `tables`
(every table of the report, and `analyse()`, which makes them all) and `gap` (the cross-env gap study).
"""

from testbed.analysis.cells import (
    COLUMNS,
    FOLLOWS_SEED,
    FRONTIER_KEYS,
    cell_points,
    demonstration_sets,
    flatten,
    kinds,
)
from testbed.analysis.frontier import Frontier, fit_frontier, iqm
from testbed.analysis.gap import TARGETS, Gap, gap_analysis, gap_table, reach_point, reach_table, share_table
from testbed.analysis.load import Sweep, load
from testbed.analysis.tables import (
    AXES,
    CONFIDENCE,
    DRIFT_SUMMARY,
    METRIC,
    N_RESAMPLES,
    Analysis,
    aggregate,
    analyse,
    capability_table,
    ceg_table,
    fit_frontiers,
    frontier_cells,
    layer_table,
    matched_compute_table,
    probability_of_improvement,
    scratch_table,
    tradeoff_table,
)

__all__ = [
    "AXES",
    "COLUMNS",
    "CONFIDENCE",
    "DRIFT_SUMMARY",
    "FOLLOWS_SEED",
    "FRONTIER_KEYS",
    "METRIC",
    "N_RESAMPLES",
    "TARGETS",
    "Analysis",
    "Frontier",
    "Gap",
    "Sweep",
    "aggregate",
    "analyse",
    "capability_table",
    "ceg_table",
    "cell_points",
    "demonstration_sets",
    "fit_frontier",
    "fit_frontiers",
    "flatten",
    "frontier_cells",
    "gap_analysis",
    "gap_table",
    "iqm",
    "kinds",
    "layer_table",
    "load",
    "matched_compute_table",
    "probability_of_improvement",
    "reach_point",
    "reach_table",
    "scratch_table",
    "share_table",
    "tradeoff_table",
]
