"""Real offline wandb runs of the fast pipeline, read back with wandb's own reader (`wandb leet inspect`)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed.pipeline import run
from tests.unit.test_tracking import records_of, run_records, run_summary, wandb_home  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "summary/final_score",
    "summary/start_score",
    "summary/gain",
    "summary/rl_steps",
    "summary/bc_val_agreement",
}


def read_results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def without_empty(config: dict[str, Any]) -> dict[str, Any]:
    """The config as wandb stores it: it drops empty mappings such as `env.expert_kwargs: {}`."""
    return {k: without_empty(v) if isinstance(v, dict) else v for k, v in config.items() if v != {}}


def assert_complete(data: dict[str, Any]) -> None:
    assert data["status"] == "complete" and data["error"] is None
    assert [row["rl_steps"] for row in data["checkpoints"]] == [0, 512, 1024]
    assert {"expert", "demos", "bc_policy", "final_policy"} <= set(data["artifacts"])


def test_offline_run_holds_config_rl_curves_drift_tables_summary_and_artifacts(fast_cfg) -> None:  # type: ignore[no-untyped-def]
    cfg = fast_cfg("logger=wandb", "logger.tags=[test]")
    data = run(cfg)
    folder = Path(cfg.output_dir)
    summary, records = run_summary(folder), run_records(folder)

    # 1. Identity and the resolved config.
    assert (summary["state"], summary["exit_code"]) == ("finished", 0)
    assert summary["name"] == data["run_name"] == "cartpole-bc-s0" and summary["project"] == "testbed"
    assert without_empty(summary["config"]) == without_empty(data["config"])
    (run_record,) = records_of(records, "run")
    assert run_record["job_type"] == "train" and set(run_record["tags"]) == {"test", "cartpole", "bc"}
    assert not run_record.get("run_group"), "a single job has no group"

    # 2. RL metrics against env steps, BC metrics against BC samples.
    steps = {m.get("glob_name"): m.get("step_metric") for m in records_of(records, "metric")}
    assert all(steps[g] == "rl_steps" for g in ("rl/*", "eval/*", "drift/*", "compute/*"))
    assert steps["bc/*"] == "bc/samples"
    history = [h["item"] for h in records_of(records, "history")]
    rl_rows = [h for h in history if "rl_steps" in h]
    assert [h["rl_steps"] for h in rl_rows] == [0, 512, 1024]
    assert [h["eval/normalized_score"] for h in rl_rows] == [r["eval/normalized_score"] for r in data["checkpoints"]]
    assert [h["bc/samples"] for h in history if "bc/samples" in h] == [r["bc/samples"] for r in data["bc"]["curve"]]

    # 3. One per-layer drift table per checkpoint, as a wandb table file holding the row's drift_table.
    assert all(h["drift/layers._type"] == "table-file" for h in rl_rows)
    table = json.loads((Path(summary["file"]).parent / "files" / rl_rows[-1]["drift/layers.path"]).read_text())
    expected = data["checkpoints"][-1]["drift_table"]
    assert [row[0] for row in table["data"]] == [row["layer"] for row in expected]
    assert {"layer", "rel_change", "cosine", "cka/demo", "cka/visited"} <= set(table["columns"])
    assert any(c.startswith("sparsity@") for c in table["columns"])

    # 4. Summary at the largest budget.
    assert set(summary["summary"]) >= SUMMARY_KEYS
    assert summary["summary"]["summary/final_score"] == data["checkpoints"][-1]["eval/normalized_score"]
    assert summary["summary"]["drift/kl/demo"] == data["checkpoints"][-1]["drift/kl/demo"]

    # 5. Artifacts: files for the policies and the expert, a reference (not a copy) for the dataset.
    artifacts = {a["name"]: a for a in records_of(records, "artifact") if a["type"] != "run_table"}
    assert set(artifacts) == {
        "expert-cartpole",
        "demos-cartpole",
        "bc_policy-cartpole-bc-s0",
        "final_policy-cartpole-bc-s0",
    }
    demos = artifacts["demos-cartpole"]
    assert json.loads(demos["metadata"])["sha256"] == data["artifacts"]["demos"]["sha256"]
    assert all(e["ref"].startswith("file://") for e in demos["manifest"]["contents"])
    assert data["timings"]["tracking_s"] > 0


def test_multirun_gives_one_run_per_job_with_its_own_config(cache_dir: Path, tmp_path: Path) -> None:
    # One worker runs both jobs, one after the other in one process: where wandb would hand back the old run.
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "testbed.cli",
        "-m",
        "seed=0,1",
        "env=cartpole",
        "debug=fast",
        "rl.budgets=[0,512]",
        "hydra.launcher.n_jobs=1",
        f"cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep}",
    ]
    subprocess.run(cmd, cwd=REPO, env=os.environ, check=True, capture_output=True, text=True)
    jobs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert len(jobs) == 2
    runs = [run_summary(job) for job in jobs]
    assert len({r["run_id"] for r in runs}) == 2, "each job has its own run, never the previous one"
    assert sorted(r["config"]["seed"] for r in runs) == [0, 1]
    assert sorted(r["name"] for r in runs) == ["cartpole-bc-s0", "cartpole-bc-s1"]
    for job, r in zip(jobs, runs, strict=True):
        results = read_results(job)
        assert without_empty(r["config"]) == without_empty(results["config"])
        assert (r["exit_code"], results["status"]) == (0, "complete")
    groups = {records_of(run_records(job), "run")[0]["run_group"] for job in jobs}
    assert groups == {"sweep"}, "a sweep's runs are grouped under the sweep folder's name"


def test_wandb_failing_at_start_costs_no_result(
    fast_cfg,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    import wandb

    def broken_init(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("wandb cannot start")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = fast_cfg("logger=wandb")
    with caplog.at_level(logging.WARNING, logger="testbed.tracking"):
        run(cfg)
    assert_complete(read_results(Path(cfg.output_dir)))
    assert "wandb cannot start" in caplog.text


def test_wandb_failing_mid_run_costs_no_result(
    fast_cfg,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    import wandb

    def broken_log(self: Any, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("wandb went away")

    monkeypatch.setattr(wandb.Run, "log", broken_log)
    cfg = fast_cfg("logger=wandb")
    with caplog.at_level(logging.WARNING, logger="testbed.tracking"):
        run(cfg)
    folder = Path(cfg.output_dir)
    assert_complete(read_results(folder))
    assert caplog.text.count("wandb went away") == 1, "warned once"
    assert run_summary(folder)["exit_code"] == 1, "the incomplete run is finished, marked failed"


def test_failed_job_leaves_a_failed_run(fast_cfg, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def broken_finetune(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("PPO diverged")

    monkeypatch.setattr("testbed.pipeline.finetune", broken_finetune)
    cfg = fast_cfg("logger=wandb")
    with pytest.raises(RuntimeError, match="PPO diverged"):
        run(cfg)
    folder = Path(cfg.output_dir)
    assert read_results(folder)["status"] == "failed"
    summary = run_summary(folder)
    assert summary["exit_code"] != 0 and summary["state"] == "failed"
