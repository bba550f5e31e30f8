"""Real CLI jobs on an env id their env file was not written for: Hydra's folders, results.json and the sweep's run
names all carry the name of the env id used, and a borrowed reference fails the job before anything trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Pendulum's file on MountainCarContinuous-v0, with Pendulum's reference_return (-250) checked: before names and
# references followed env.id, a do-nothing expert (about -0.5) passed it and the job ran as "pendulum".
MCC = ["env=pendulum", "env.id=MountainCarContinuous-v0", "debug=fast", "expert.check_reference=true"]
TINY = ["logger=none", "rl.budgets=[0]", "eval.episodes=2", "eval.drift=false"]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m testbed.cli ARGS` run from `cwd`, so its outputs/ and multirun/ folders land there."""
    env = os.environ | {"WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "testbed.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_job_on_another_env_id_is_named_after_it_and_borrows_no_reference(tmp_path: Path) -> None:
    proc = cli(tmp_path, *MCC, *TINY, f"cache_dir={tmp_path / 'cache'}")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["mountaincarcontinuous-v0"]
    (job,) = (tmp_path / "outputs" / "mountaincarcontinuous-v0").iterdir()
    results = json.loads((job / "results.json").read_text())
    assert results["run_name"] == "mountaincarcontinuous-v0-bc-s0"
    assert results["status"] == "failed"
    assert "env.settings_for=MountainCarContinuous-v0" in results["error"]["message"]
    assert not (tmp_path / "cache").exists(), "nothing may be trained or cached"


def test_sweep_on_another_env_id_names_its_folder_and_runs_after_it(tmp_path: Path) -> None:
    cli(tmp_path, "-m", *MCC, *TINY, "seed=0,1", f"cache_dir={tmp_path / 'cache'}")
    assert [p.name for p in (tmp_path / "multirun").iterdir()] == ["mountaincarcontinuous-v0"]
    (sweep,) = (tmp_path / "multirun" / "mountaincarcontinuous-v0").iterdir()
    expected = ["mountaincarcontinuous-v0-bc-s0", "mountaincarcontinuous-v0-bc-s1"]
    assert sorted(json.loads(p.read_text())["run_name"] for p in sweep.glob("*/results.json")) == expected
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert sorted(job["run_name"] for job in manifest["jobs"]) == expected
    assert not (tmp_path / "cache").exists(), "nothing may be trained or cached"
