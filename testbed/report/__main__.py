"""Sweep folders -> analysis -> figures (PNG), tables (CSV) and one self-contained HTML page plus Markdown.

    python -m testbed.report SWEEP_FOLDER [SWEEP_FOLDER ...] [--out DIR] [--no-wandb]

Writes into `<first folder>/report/` (or --out): index.html (figures embedded as base64 PNG), report.md
(the same tables, figures linked), one PNG per figure, tables/*.csv (the tidy checkpoint table included)
and summary.json (the headline numbers). The figures and tables also go to a wandb run of job type `report`
(offline unless WANDB_MODE or --wandb-mode says otherwise; --no-wandb skips it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

from testbed import analysis
from testbed.analysis import METRIC
from testbed.report import NothingToReport, Report, build
from testbed.report.gap import console_lines
from testbed.report.tables import _plain

log = logging.getLogger(__name__)


def log_to_wandb(report: Report, folders: Sequence[Path], project: str = "testbed", mode: str = "offline") -> bool:
    """Log the report's figures and tables to a wandb run of job type `report`; False (with a warning) on failure.

    The run is grouped under the first sweep folder's name, as the sweep's training runs are.
    """
    try:
        import wandb

        group = Path(folders[0]).resolve().name
        run = wandb.init(
            project=project,
            name=f"report-{group}",
            group=group,
            job_type="report",
            dir=report.out.resolve(),
            mode=mode,  # type: ignore[arg-type]
            config={"folders": [str(f) for f in folders]},
            reinit="create_new",
        )
        run.log({f"report/{name}": wandb.Image(str(path)) for name, path in report.figures.items()})
        run.log(
            {
                f"report/tables/{name}": wandb.Table(dataframe=_plain(t))
                for name, t in report.tables.items()
                if not t.empty and name != "points"
            }
        )
        run.log({"report/page": wandb.Html(report.html.read_text())})
        run.summary.update({"headline": report.headline})
        run.finish()
    except Exception as exc:  # the report on disk is complete; wandb is a copy
        log.warning(
            "logging the report to wandb failed (%s: %s); the report on disk is complete", type(exc).__name__, exc
        )
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m testbed.report FOLDER...` / `testbed-report FOLDER...` / `make report SWEEP=FOLDER`."""
    parser = argparse.ArgumentParser(
        prog="testbed-report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="+", help="sweep folders; every results.json under them is read")
    parser.add_argument("--out", help="report folder (default: <first folder>/report)")
    parser.add_argument("--metric", default=METRIC, help=f"capability column of the checkpoints (default {METRIC})")
    parser.add_argument("--resamples", type=int, default=analysis.N_RESAMPLES, help="bootstrap resamples")
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also log to a wandb run of job type `report` (default: on, offline like the jobs)",
    )
    parser.add_argument("--wandb-project", default="testbed")
    parser.add_argument(
        "--wandb-mode",
        default=os.environ.get("WANDB_MODE") or "offline",
        choices=["offline", "online", "disabled"],
        help="default: $WANDB_MODE, else offline",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = [repr(f) for f in args.folders if not f or not Path(f).is_dir()]
    if missing:
        print(f"testbed-report: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    matplotlib.use("Agg")  # figures go to files; set here, not at import, where it would switch a notebook's backend
    try:
        report = build(args.folders, args.out, args.metric, args.resamples)
    except NothingToReport as exc:
        print(f"testbed-report: {exc}", file=sys.stderr)
        return 2
    if args.wandb:
        log_to_wandb(report, [Path(f) for f in args.folders], args.wandb_project, args.wandb_mode)
    problems = report.tables["jobs"].loc[~report.tables["jobs"]["included"]]
    print(f"report: {report.html}  ({len(report.figures)} figures; markdown {report.markdown})")
    for _, p in problems.iterrows():
        print(f"  not in the analysis: {p['folder']}: {p['problem']}")
    for line in console_lines(report.gap) if report.gap is not None else []:
        print(f"  {line}")
    for row in report.headline:
        print(
            f"  {row['env']} {row['cell']} @ {row['rl_steps']:,} RL steps: BC {row['BC']} -> {row['BC+RL']}, "
            f"CEG {row['CEG']}, cost-charged {row['CEG cost-charged']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
