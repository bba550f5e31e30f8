"""Hydra entry points: `testbed` runs one job (or a multirun sweep) of the pipeline."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from testbed.config import register_configs
from testbed.pipeline import output_dir, run
from testbed.results import RESULTS_FILE, ResultsFile

register_configs()
log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except Exception as exc:
        log.exception("job failed")  # into the job's own log; the sweep summary names it too
        record_failure(cfg, exc)
        raise


def record_failure(cfg: DictConfig, exc: Exception) -> None:
    """Give a job that failed before the pipeline wrote its results.json (say, in validation) a failed one."""
    folder = output_dir(cfg)
    if (folder / RESULTS_FILE).exists():
        return  # the pipeline recorded the failure itself
    try:
        ResultsFile(folder, cfg).fail(exc)
    except Exception as inner:  # a config too broken to write down; the job's log still has the traceback
        log.warning("could not write %s: %s", folder / RESULTS_FILE, inner)


def report_main() -> None:
    """`testbed-report SWEEP_FOLDER...`: the report of one or more sweeps (testbed/report.py)."""
    from testbed.report import main as report

    raise SystemExit(report())


if __name__ == "__main__":
    main()
