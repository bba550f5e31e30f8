"""Tracking without training: the summary numbers, the drift table, the no-op switch and the failure guard."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed import tracking
from tests.conftest import make_job


@pytest.fixture(autouse=True)
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep wandb's staging, cache and settings out of the user's home; honour the config's mode."""
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)


def leet_inspect(folder: Path, *flags: str) -> str:
    """`wandb leet inspect --json` (wandb's own reader) on the one offline run under `folder`/wandb.

    With `--summary` it prints the state, exit code, config and summary as one object; without, every
    record of the run's .wandb log, one per line.
    """
    runs = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(runs[0])]
    env = os.environ | {"WANDB_MODE": "offline"}  # the reader reports nothing to a server either
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def run_summary(folder: Path) -> dict[str, Any]:
    return json.loads(leet_inspect(folder, "--summary"))


def run_records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in leet_inspect(folder).splitlines() if line.strip()]


def records_of(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r[kind] for r in records if r["type"] == kind]


def results_with(rows: list[dict[str, Any]], bc: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"checkpoints": rows, "bc": bc}


def test_summary_compares_the_largest_budget_with_the_start() -> None:
    rows: list[dict[str, Any]] = [
        {
            "rl_steps": 1024,
            "eval/return_mean": 300.0,
            "eval/normalized_score": 0.6,
            "eval/success_rate": None,
            "drift/kl/demo": 0.5,
            "drift_table": [{"layer": "a"}],
        },
        {
            "rl_steps": 0,
            "eval/return_mean": 100.0,
            "eval/normalized_score": 0.2,
            "eval/success_rate": None,
            "drift/kl/demo": 0.0,
        },
    ]
    bc = {"val_agreement": 0.9, "val_loss": 0.3, "samples": 512, "curve": []}
    out = tracking.summary(results_with(rows, bc))
    assert out == {
        "summary/rl_steps": 1024,
        "summary/final_return": 300.0,
        "summary/final_score": 0.6,
        "summary/start_return": 100.0,
        "summary/start_score": 0.2,
        "summary/gain": pytest.approx(0.4),
        "summary/bc_val_agreement": 0.9,
        "summary/bc_val_loss": 0.3,
        "summary/bc_samples": 512,
        "drift/kl/demo": 0.5,
    }


def test_summary_without_a_start_checkpoint_or_rows() -> None:
    row = {"rl_steps": 512, "eval/return_mean": 1.0, "eval/normalized_score": 0.1, "eval/success_rate": 0.5}
    out = tracking.summary(results_with([row]))
    assert out["summary/final_success_rate"] == 0.5
    assert "summary/gain" not in out and "summary/start_score" not in out
    assert tracking.summary(results_with([])) == {}


def test_drift_table_takes_every_column_and_leaves_gaps_empty() -> None:
    columns, data = tracking.table([{"layer": "a", "cosine": 1.0}, {"layer": "b", "cka/demo": 0.5}])
    assert columns == ["layer", "cosine", "cka/demo"]
    assert data == [["a", 1.0, None], ["b", None, 0.5]]


def test_scalars_leave_out_tables_and_missing_values() -> None:
    row = {"rl_steps": 0, "eval/success_rate": None, "drift_table": [{"layer": "a"}], "name": "x", "ok": True}
    assert tracking.scalars(row) == {"rl_steps": 0, "name": "x", "ok": True}


def test_wandb_mode_env_var_overrides_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_job("logger=wandb")
    assert cfg.logger.mode == "offline" and tracking.mode(cfg) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert tracking.mode(cfg) == "online"


def test_wandb_is_the_offline_default_and_none_turns_it_off(tmp_path: Path) -> None:
    cfg = make_job()
    assert cfg.logger.backend == "wandb" and cfg.logger.mode == "offline"
    tracker = tracking.start(make_job("logger=none"), tmp_path, job_type="train")
    assert isinstance(tracker, tracking.NoTracker)
    tracker.log_checkpoint({"rl_steps": 0})
    tracker.finish(exit_code=1)
    assert not (tmp_path / "wandb").exists()


def test_wandb_mode_disabled_is_a_no_op_without_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = tracking.start(make_job("logger=wandb"), tmp_path, job_type="train")
    assert isinstance(tracker, tracking.NoTracker) and not (tmp_path / "wandb").exists()


def test_no_group_outside_a_hydra_multirun() -> None:
    assert tracking.sweep_group() is None  # no Hydra app running


class FailingRun:
    """Stands in for a wandb run whose `log` raises: only to inject the failure."""

    def __init__(self) -> None:
        self.finished_with: list[int | None] = []

    def log(self, data: dict[str, Any]) -> None:
        raise ConnectionError("wandb went away")

    def finish(self, exit_code: int | None = None) -> None:
        self.finished_with.append(exit_code)


def test_a_failing_call_warns_once_finishes_the_run_as_failed_and_stops_tracking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = FailingRun()
    tracker = tracking.WandbTracker(run, "cartpole-bc-s0", "cartpole")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="testbed.tracking"):
        tracker.log_bc([{"bc/samples": 1}, {"bc/samples": 2}])
        tracker.log_checkpoint({"rl_steps": 0})
        tracker.finish(exit_code=0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "log_bc" in warnings[0].getMessage()
    assert run.finished_with == [1], "the incomplete run is finished once, as failed"
    assert tracker.run is None and tracker.wall_s > 0


def test_wandb_failing_to_start_gives_a_no_op_tracker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import wandb

    def broken_init(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="testbed.tracking"):
        tracker = tracking.start(make_job("logger=wandb"), tmp_path, job_type="train")
    assert isinstance(tracker, tracking.NoTracker)
    assert "no wandb today" in caplog.text
