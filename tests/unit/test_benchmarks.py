"""The benchmark runner rejects unknown names and overrides a benchmark cannot take, before running anything;
the memory benchmark reads the peak RSS of each job alone and measures jobs that compose; the width benchmark's jobs
compose at the widths it names and its ratios are over the width-64 job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import learners, memory, run, width
from testbed.compute import actor_params
from testbed.config import to_config
from testbed.pipeline import build_learner
from testbed.validation import validate_job
from tests.conftest import make_cfg


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "unknown benchmark ['nope']"),
        (["parallel", "env=cartpole"], "only apply to ['bc_speed', 'learners', 'memory', 'width']"),
    ],
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


@pytest.mark.parametrize("arch", list(width.ARCHS))
def test_the_width_jobs_compose(arch: str, tmp_path: Path) -> None:
    command = width.job_command(width.ARCHS[arch], tmp_path / arch)
    assert command[1:3] == ["-m", "testbed.cli"]
    cfg = make_cfg(*command[3:])
    assert cfg.env.name == width.ENV and list(cfg.env.net_arch) == width.ARCHS[arch]
    assert list(cfg.rl.budgets) == [0, 4096] and cfg.logger.backend == "none"


def test_the_width_warm_up_and_an_env_override_win_over_the_job_settings(tmp_path: Path) -> None:
    cfg = make_cfg(*width.job_command([64, 64], tmp_path, "env=acrobot", *width.WARM_UP)[3:])
    assert cfg.env.name == "acrobot" and cfg.bc.grad_steps == 1 and list(cfg.rl.budgets) == [0]


def test_width_ratios_are_over_the_width_64_job() -> None:
    rows = [{"compute/bc/wall_s": 1.0, "compute/rl/wall_s": 0.0, "eval/wall_s": 0.5}]
    rows += [{"compute/bc/wall_s": 1.0, "compute/rl/wall_s": 4.0, "eval/wall_s": 0.5, "drift/wall_s": 1.0}]
    assert width.stage_times({"checkpoints": rows}) == {"bc_s": 1.0, "rl_s": 4.0, "eval_drift_s": 2.0}
    got = width.ratios({"w64": {"wall_s": 2.0, "bc_s": 1.0}, "w1024": {"wall_s": 6.0, "bc_s": 4.0}})
    assert got == {
        "w64_wall_s": 2.0,
        "w64_bc_s": 1.0,
        "w1024_wall_s": 6.0,
        "w1024_bc_s": 4.0,
        "w1024_wall_s_over_w64": 3.0,
        "w1024_bc_s_over_w64": 4.0,
    }


@pytest.mark.parametrize("task", list(learners.TASKS))
def test_the_learner_jobs_compose_validate_and_match_in_size(task: str, tmp_path: Path) -> None:
    """Each timed job is a valid job of its task and learner, at the preset's sizes (within 10% of the MLP's)."""
    sizes = {}
    for learner in learners.LEARNERS:
        cfg = to_config(make_cfg(*learners.job_command(task, learner, tmp_path / learner)[3:]))
        validate_job(cfg)
        assert cfg.env.name == task and cfg.policy.kind == learner and list(cfg.rl.budgets) == [0, 8192]
        sizes[learner] = actor_params(build_learner(cfg).policy)
    assert max(sizes.values()) <= 1.1 * min(sizes.values()), sizes
