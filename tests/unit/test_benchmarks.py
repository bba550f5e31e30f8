"""The benchmark runner rejects unknown names and overrides a benchmark cannot take, before running anything;
the memory benchmark reads the peak RSS of each job alone and measures jobs that compose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import memory, run
from tests.conftest import make_cfg


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["nope"], "unknown benchmark ['nope']"), (["parallel", "env=cartpole"], "only apply to ['bc_speed', 'memory']")],
)
def test_runner_rejects_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_peak_rss_is_each_childs_own(tmp_path: Path) -> None:
    # 200 MiB written (so resident), then a child that allocates nothing: RUSAGE_CHILDREN would report 200+ twice.
    big = memory.peak_rss_mib([sys.executable, "-c", "x = b'1' * (200 << 20)"], tmp_path / "big.log")
    small = memory.peak_rss_mib([sys.executable, "-c", "pass"], tmp_path / "small.log")
    assert 200 < big < 300 and small < 100, (big, small)


def test_a_failing_job_raises_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        memory.peak_rss_mib([sys.executable, "-c", "raise SystemExit('no such env')"], tmp_path / "job.log")
    assert failure.value.returncode == 1 and "no such env" in failure.value.output


def test_env_override_picks_the_envs_and_the_rest_go_to_every_job() -> None:
    assert memory.split_envs(()) == (list(memory.ENVS), [])
    assert memory.split_envs(("env=cartpole,acrobot", "seed=1")) == (["cartpole", "acrobot"], ["seed=1"])


@pytest.mark.parametrize("env", memory.ENVS)
def test_the_measured_jobs_compose(env: str, tmp_path: Path) -> None:
    command = memory.job_command(env, tmp_path / "job")
    assert command[1:3] == ["-m", "testbed.cli"]
    cfg = make_cfg(*command[3:])
    assert cfg.env.name == env and list(cfg.rl.budgets) == [0, 4096] and cfg.logger.backend == "none"
