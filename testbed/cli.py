"""Hydra entry points: `testbed` runs one job (or a multirun sweep) of the pipeline."""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from testbed.config import register_configs
from testbed.pipeline import output_dir, run
from testbed.results import RESULTS_FILE, ResultsFile, check_writable

register_configs()
log = logging.getLogger(__name__)

RUN_DIR_OVERRIDE = re.compile(r"^[+~]*hydra\.run\.dir=")
_claimed: dict[str, str] = {}  # hydra.run.dir as named -> as claimed: Hydra may resolve it more than once


class RunDirError(InterpolationResolutionError, CompactHydraException):
    """hydra.run.dir cannot hold the job's folder; compact, so Hydra prints the message and no traceback."""


def claim_run_dir(base: str) -> str:
    """`${testbed_claim:base}` (conf/config.yaml's hydra.run.dir): `base`, or base_2, base_3 ... when another
    job holds it, created exclusively as sweep folders are (testbed/sweep.py claim_dir); once per process."""
    # Imported here: testbed.sweep subclasses Hydra's BasicSweeper, which Hydra's plugin scan imports anew later.
    from testbed.sweep import claim_dir

    if base not in _claimed:
        try:
            folder = claim_dir(Path(base))
            check_writable(folder)
        except OSError as exc:
            raise RunDirError(f"hydra.run.dir={base}: cannot create the job's folder there: {exc}") from exc
        _claimed[base] = str(folder)
    return _claimed[base]


OmegaConf.register_new_resolver("testbed_claim", claim_run_dir, replace=True)


def main() -> None:
    """`testbed ARGS` / `python -m testbed.cli ARGS`: one job, or a sweep with -m."""
    check_run_dir_override(sys.argv[1:])
    job()


def check_run_dir_override(args: list[str]) -> None:
    """Exit naming it when a hydra.run.dir given on the command line cannot be written.

    Hydra would fail on it with a traceback, or with "Unable to configure handler 'file'" where the folder
    exists. A sweep (-m) does not use it; a value with interpolations is left to Hydra.
    """
    if "-m" in args or "--multirun" in args:
        return
    for arg in filter(RUN_DIR_OVERRIDE.match, args):
        try:
            value = OverridesParser.create().parse_override(arg).value()
        except Exception:  # a malformed override: Hydra names it itself
            continue
        if not isinstance(value, str) or "${" in value:
            continue
        try:
            check_writable(Path(value))
        except OSError as exc:
            raise SystemExit(f"hydra.run.dir={value}: cannot create the job's folder there: {exc}") from exc


# An absolute path: the `testbed` console script imports this module, and Hydra would read a relative one as a
# Python package name ("Primary config module 'conf' not found").
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def job(cfg: DictConfig) -> None:
    """Hydra's task function: the pipeline, with a results.json that says how it ended even when it ends early."""
    try:
        with sigterm_interrupts():
            run(cfg)
    except Exception as exc:
        log.exception("job failed")  # into the job's own log; the sweep summary names it too
        record_failure(cfg, exc)
        raise


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Stop on SIGTERM as on Ctrl-C, so results.json says `interrupted` rather than `running`.

    Only where SIGTERM has no handler yet: a launcher's own (submitit's) is kept.
    """
    taken = signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    if taken or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("terminated by SIGTERM")


def record_failure(cfg: DictConfig, exc: Exception) -> None:
    """Give a job that failed before the pipeline wrote its results.json (say, in validation) a failed one."""
    folder = output_dir(cfg)
    if (folder / RESULTS_FILE).exists():
        return  # the pipeline recorded the failure itself, or the folder is another job's
    try:
        ResultsFile(folder, cfg).fail(exc)
    except Exception as inner:  # a config too broken to write down; the job's log still has the traceback
        log.warning("could not write %s: %s", folder / RESULTS_FILE, inner)


def report_main() -> None:
    """`testbed-report SWEEP_FOLDER...`: the report of one or more sweeps (testbed/report/__main__.py)."""
    from testbed.report.__main__ import main as report

    raise SystemExit(report())


if __name__ == "__main__":
    main()
