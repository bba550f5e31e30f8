"""Job faults met by hand: two jobs in one second, a full disk, unwritable folders, Ctrl-C and SIGTERM."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from testbed.config import to_config
from testbed.demonstrations import get_demonstrations
from testbed.expert import get_expert
from testbed.pipeline import run
from testbed.results import config_hash
from testbed.sweep import complete_results
from tests.conftest import CfgFactory

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Jobs run in a folder of the test's own (their outputs/ lands there), importing testbed from this checkout.
ENV = os.environ | {"PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
FAST = ["env=cartpole", "debug=fast", "logger=none"]
# `python -m testbed.cli ARGS` once told to, with Hydra's clock stopped: two of them name their folder in one second.
SAME_SECOND = """
import runpy, sys, time
from datetime import datetime
from pathlib import Path
import hydra.core.utils

class Stopped(datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 1, 12, 0, 0)

hydra.core.utils.datetime = Stopped  # what `${now:...}` in hydra.run.dir reads
ready, go, *args = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
sys.argv = ["testbed", *args]
runpy.run_module("testbed.cli", run_name="__main__", alter_sys=True)
"""


def read_results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def cli(cwd: Path, *args: str, log: Path) -> subprocess.Popen:
    """`python -m testbed.cli ARGS` in `cwd`, its output into `log`."""
    with log.open("w") as out:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "testbed.cli", *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
            # A shell without job control starts background commands (a CI runner, `make test &`) with SIGINT
            # ignored, and the child would inherit that; give it the default, as a terminal's Ctrl-C sees.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def in_ppo(folder: Path) -> bool:
    """The job's first checkpoint (0 RL steps) is written: PPO runs next."""
    try:
        return bool(read_results(folder)["checkpoints"])
    except (OSError, ValueError):  # not there yet, or just claimed (empty)
        return False


def wait_until(done: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"timed out; log:\n{log.read_text()}"
        time.sleep(0.1)


# 1. A job's folder is its own: single jobs claim it as sweeps do; an output_dir holding another job is refused.


def test_two_jobs_started_in_the_same_second_get_their_own_folders(tmp_path: Path, cache_dir: Path) -> None:
    args = [*FAST, "rl.budgets=[0]", "eval.episodes=2", "eval.drift=false", f"cache_dir={cache_dir}"]
    lrs, go = ("0.001", "0.0003"), tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAME_SECOND, str(tmp_path / f"ready{lr}"), str(go), *args, f"bc.lr={lr}"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for lr in lrs
    ]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready{lr}").exists() for lr in lrs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a job died before starting"
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    base = "2026-01-01_12-00-00_bc_s0"
    folders = sorted((tmp_path / "outputs" / "cartpole").iterdir())
    assert [f.name for f in folders] == [base, f"{base}_2"], "one folder each, claimed once per job"
    seen = set()
    for folder in folders:
        data = read_results(folder)
        (override,) = [o for o in (folder / ".hydra" / "overrides.yaml").read_text().split() if "bc.lr" in o]
        assert data["status"] == "complete" and override == f"bc.lr={data['config']['bc']['lr']}"
        assert (folder / "cli.log").exists() and data["artifacts"]["bc_policy"]["path"].startswith(str(folder))
        seen.add(override)
    assert seen == {f"bc.lr={lr}" for lr in lrs}


def test_an_output_dir_holding_another_jobs_results_is_refused(fast_cfg: CfgFactory, tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    other = json.dumps({"status": "complete", "run_name": "cartpole-bc-s0", "config_hash": "another job"})
    (folder / "results.json").write_text(other)
    with pytest.raises(FileExistsError, match=f"{folder} already holds the results.json of another job"):
        run(fast_cfg("bc.lr=0.0003", "rl.budgets=[0]"))
    assert (folder / "results.json").read_text() == other, "left as it was"


def test_a_failed_attempt_of_the_same_job_is_rerun_in_its_folder(fast_cfg: CfgFactory, tmp_path: Path) -> None:
    cfg = fast_cfg("rl.budgets=[0]", "eval.episodes=2")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "results.json").write_text(json.dumps({"status": "failed", "config_hash": config_hash(cfg)}))
    assert run(cfg)["status"] == "complete"


# 2. A full disk while saving a policy leaves no cut file, and the failed results.json names the file.


@pytest.mark.parametrize("name", ["final_model.zip", "bc_policy.pt"])
def test_a_full_disk_while_saving_a_policy_leaves_no_cut_file(
    name: str, fast_cfg: CfgFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = fast_cfg("eval.episodes=2", "eval.drift=false")
    job = to_config(cfg)
    get_demonstrations(job, get_expert(job))  # cached before the disk fills: only the policy's save fails

    def full_disk(original: Callable[..., Any]) -> Callable[..., Any]:
        def save(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(path, str | Path):  # a model's own zip or a cache entry: let it through
                if not str(path).endswith(name):
                    return original(obj, path, *args, **kwargs)
                path = open(path, "wb")  # noqa: SIM115  (the fault leaves it open, as a crash would)
            path.write(b"PK\x03\x04" + bytes(4096))
            path.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return save

    if name == "final_model.zip":
        monkeypatch.setattr(BaseAlgorithm, "save", full_disk(BaseAlgorithm.save))
    else:
        monkeypatch.setattr(torch, "save", full_disk(torch.save))
    folder = Path(cfg.output_dir)
    with pytest.raises(OSError, match="No space left on device"):
        run(cfg)
    assert not (folder / name).exists(), "no truncated file"
    assert not list(folder.glob(".*.tmp")), "no temp file left"
    data = read_results(folder)
    assert data["status"] == "failed" and str(folder / name) in data["error"]["message"]


# 3. A hydra.run.dir that cannot be written fails before the job, naming the folder.


@pytest.mark.parametrize("where", ["under a file", "/proc", "default under /proc"])
def test_an_unwritable_run_dir_fails_naming_it(where: str, tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "afile").write_text("a regular file")
    folder = {"under a file": str(tmp_path / "afile" / "run"), "/proc": "/proc/self"}.get(where)
    override = [f"hydra.run.dir={folder}"] if folder else []  # else the config's outputs/... under cwd /proc
    log = tmp_path / "job.log"
    proc = cli(Path("/proc") if folder is None else tmp_path, *FAST, f"cache_dir={cache_dir}", *override, log=log)
    assert proc.wait(timeout=300) == 1
    out = log.read_text()
    assert f"hydra.run.dir={folder or 'outputs/cartpole/'}" in out, out
    assert "Traceback" not in out and "Unable to configure handler" not in out, out


# 4. An unwritable logger.dir turns tracking off with a warning naming it; the job's results are complete.


def test_an_unwritable_logger_dir_warns_naming_it_and_the_job_completes(
    fast_cfg: CfgFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "afile").write_text("a regular file")
    wandb_dir = tmp_path / "afile" / "wandb"
    cfg = fast_cfg("logger=wandb", f"logger.dir={wandb_dir}", "rl.budgets=[0]", "eval.episodes=2")
    with caplog.at_level(logging.WARNING, logger="testbed.tracking"):
        data = run(cfg)
    assert data["status"] == "complete"
    assert f"logger.dir={wandb_dir}" in caplog.text and "tracking is off" in caplog.text, caplog.text


# 5. Ctrl-C (SIGINT) and SIGTERM record `interrupted`; a sweep's resume reruns such a job.


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_job_records_interrupted(sig: signal.Signals, tmp_path: Path, cache_dir: Path) -> None:
    folder, log = tmp_path / "multirun" / "sweep" / "0_bc_s0", tmp_path / "job.log"  # where a sweep's job lies
    proc = cli(
        tmp_path,
        *FAST,
        "rl.budgets=[0,1000000]",
        "eval.episodes=2",
        f"cache_dir={cache_dir}",
        f"output_dir={folder}",
        f"hydra.run.dir={tmp_path / 'run'}",
        log=log,
    )
    try:
        wait_until(lambda: in_ppo(folder), proc, log)  # then PPO runs toward a million steps
        proc.send_signal(sig)
        assert proc.wait(timeout=120) != 0
    finally:
        proc.kill()  # a failed wait must not leave a million-step job running
    data = read_results(folder)
    assert data["status"] == "interrupted" and data["finished_at"], log.read_text()
    assert data["error"]["type"] == "KeyboardInterrupt"
    why = "interrupted by the user (Ctrl-C / SIGINT)" if sig == signal.SIGINT else "terminated by SIGTERM"
    assert why in data["error"]["message"]
    assert complete_results(tmp_path / "multirun") == {}, "a sweep's resume runs it again"
