"""Sweeps: presets, launchers, caches shared by parallel jobs, resume after kill -9, failure isolation, folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from testbed.analysis.cells import policy_label
from testbed.cli import record_failure
from testbed.compute import actor_params
from testbed.config import to_config
from testbed.pipeline import build_learner
from testbed.results import config_hash, is_complete, run_name
from testbed.sweep import MANIFEST, claim_dir, expand
from testbed.validation import validate_job
from tests.conftest import CONF, make_cfg

REPO = CONF.parent
# The smallest real job: BC on CartPole, evaluated on 2 episodes at each RL budget (set per test).
TINY = ["env=cartpole", "debug=fast", "logger=none", "eval.episodes=2", "eval.drift=false"]
PRESETS = ("rl_budget", "bc_frontier", "from_scratch", "study")


def hydra_cfg(*overrides: str) -> DictConfig:
    """The whole config with its hydra node, as a multirun composes it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def preset_jobs(name: str, *arguments: str) -> list[list[str]]:
    sweeper = hydra_cfg(f"experiment={name}").hydra.sweeper
    return expand(sweeper.params or {}, sweeper.variants or {}, list(arguments), OverridesParser.create())


def start_sweep(log: Path, *args: str, new_session: bool = False) -> subprocess.Popen:
    """Start `python -m testbed.cli -m ARGS` from the repository root, its output into `log`."""
    env = os.environ | {"WANDB_MODE": "disabled"}
    with log.open("w") as out:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "testbed.cli", "-m", *args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=new_session,
        )


def run_sweep(log: Path, *args: str) -> tuple[int, str]:
    rc = start_sweep(log, *args).wait(timeout=900)
    return rc, log.read_text()


def manifest(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / MANIFEST).read_text())["jobs"]


def results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


# -- presets and launcher configs (fast) -------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_presets_sweep_five_seeds_on_the_default_env(name: str) -> None:
    cfg = hydra_cfg(f"experiment={name}")
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.job.name == name
    assert cfg.env.name == hydra_cfg().env.name, "presets leave the env to the config default or ENV="
    jobs = preset_jobs(name)
    assert sorted({o for job in jobs for o in job if o.startswith("seed=")}) == [f"seed={s}" for s in range(5)]
    assert hydra_cfg(f"experiment={name}", "env=cartpole").env.name == "cartpole"


def test_presets_set_what_their_question_needs() -> None:
    assert make_cfg("experiment=rl_budget").rl.init == "bc"
    frontier = make_cfg("experiment=bc_frontier")
    assert list(frontier.rl.budgets) == [0] and frontier.variant == "bc_only"
    assert len(preset_jobs("bc_frontier")) == 5 * 5 * 3
    assert make_cfg("experiment=from_scratch").variant == "scratch"
    variants = [next(o for o in job if o.startswith("variant=")) for job in preset_jobs("study")]
    assert {v: variants.count(v) for v in set(variants)} == {
        "variant=bc_only": 75,
        "variant=bc": 5,
        "variant=scratch": 5,
    }


def test_preset_variants_are_named_as_their_jobs_would_be_by_default() -> None:
    """A variant's name is the one its settings get without `variant=` (a job started by hand is named alike),
    and rl.budgets is one list value, never a sweep; bc_only (BC with rl.budgets=[0]) is the one name of its own."""
    for name in ("study", "anchoring"):
        firsts = {next(o for o in job if o.startswith("variant=")): job for job in preset_jobs(name, "seed=0")}
        for variant, job in firsts.items():
            derived = make_cfg(f"experiment={name}", *(o for o in job if o != variant)).variant
            assert derived == variant.removeprefix("variant=") or variant == "variant=bc_only", (name, derived)
            assert [o for o in job if o.startswith("rl.budgets")] in ([], ["rl.budgets=[0]"])


def test_study_is_the_union_of_the_presets_so_their_results_are_reused() -> None:
    # One seed and one demonstration count keep it fast: 3 BC-only cells, BC+RL and scratch.
    def hashes(name: str) -> set[str]:
        jobs = preset_jobs(name, "env=cartpole", "seed=0", "demos.episodes=1")
        return {config_hash(make_cfg(f"experiment={name}", *job)) for job in jobs}

    study = hashes("study")
    parts = [hashes(name) for name in ("bc_frontier", "rl_budget", "from_scratch")]
    assert study == set().union(*parts) and sum(map(len, parts)) == len(study) == 3 + 1 + 1


def test_the_gap_preset_sweeps_four_starts_scratch_and_the_frontier_per_env() -> None:
    """experiment=gap: 4 envs x (4 BC starts + scratch) x 5 seeds on the same RL budgets, plus BC-only jobs that
    extend each env's frontier (fN: 8,000 BC steps, a checkpoint at the starts' 2,000 where N is new); each job's
    run name env-variant-seed, every (env, variant) a distinct config apart from the seed."""
    jobs = preset_jobs("gap")
    assert len(jobs) == (4 * 5 + 11) * 5
    cfgs = [make_cfg("experiment=gap", *job) for job in preset_jobs("gap", "seed=0")]
    names = [run_name(cfg) for cfg in cfgs]
    assert len(set(names)) == 31 and {"doorkey8-d2048-s0", "mountaincar-scratch-s0", "pendulum-f512-s0"} < set(names)
    assert {cfg.env.name for cfg in cfgs} == {"pendulum", "mountaincar", "doorkey", "doorkey8"}
    starts = [cfg for cfg in cfgs if not cfg.variant.startswith("f")]
    frontier = [cfg for cfg in cfgs if cfg.variant.startswith("f")]
    assert len(starts) == 20 and len(frontier) == 11
    assert all(list(cfg.rl.budgets) == [0, 3000, 10000, 30000, 60000, 100000] for cfg in starts)
    assert all(list(cfg.rl.budgets) == [0] and cfg.bc.grad_steps == 8000 for cfg in frontier)
    assert all(cfg.bc.grad_steps == 2000 and not cfg.bc.checkpoints for cfg in starts)
    # Where the count is new, the 2,000-step checkpoint is that count's start-like snapshot (same cell as a start).
    assert {cfg.variant: list(cfg.bc.checkpoints) for cfg in frontier if cfg.env.name == "pendulum"} == {
        "f512": [2000],
        "f128": [2000],
        "f32": [],
    }
    assert len({config_hash(cfg) for cfg in cfgs}) == 31


def test_command_line_overrides_win_over_preset_params() -> None:
    jobs = preset_jobs("study", "seed=7", "rl.budgets=[0,1000]")
    assert all("seed=7" in job for job in jobs) and len(jobs) == 17
    assert all(job.count("rl.budgets=[0,1000]") == 1 and "rl.budgets=[0]" not in job for job in jobs)


def test_launcher_configs() -> None:
    local = hydra_cfg().hydra.launcher
    assert local._target_.endswith("JoblibLauncher") and local.n_jobs == -1  # one worker per core
    slurm = hydra_cfg("hydra/launcher=slurm").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.timeout_min, slurm.cpus_per_task, slurm.mem_gb) == (None, 120, 1, 4)
    tuned = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=30")
    assert (tuned.hydra.launcher.partition, tuned.hydra.launcher.timeout_min) == ("cpu", 30)


def test_ray_launcher_config() -> None:
    ray = hydra_cfg("hydra/launcher=ray_cluster").hydra.launcher
    assert ray._target_.endswith("RayLauncher") and ray.ray.remote.num_cpus == 1


def test_claimed_folders_are_distinct_under_a_race(tmp_path: Path) -> None:
    base, claimed, start = tmp_path / "2026-01-01_00-00-00_study", [], threading.Barrier(8)

    def claim() -> None:
        start.wait()
        claimed.append(claim_dir(base))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8 and base in claimed and all(p.is_dir() for p in claimed)


def test_a_job_failing_before_the_pipeline_still_gets_a_failed_results_json(tmp_path: Path) -> None:
    cfg = make_cfg("debug=fast", "logger=none", "rl.init=bogus", f"output_dir={tmp_path}")
    with pytest.raises(ValueError) as failure:
        validate_job(to_config(cfg))
    record_failure(cfg, failure.value)
    data = results(tmp_path / "results.json")
    assert data["status"] == "failed" and data["error"]["type"] == "ValueError"
    assert "rl.init" in data["error"]["message"]


# -- real sweeps (slow) -------------------------------------------------------------------------------------

WORKER = """
import json, logging, sys, time
from pathlib import Path
from hydra import compose, initialize_config_dir
from testbed.config import register_configs, to_config
from testbed.demonstrations import get_demonstrations
from testbed.expert import get_expert

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
register_configs()
conf, ready, go, *overrides = sys.argv[1:]
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfg = to_config(compose("config", overrides=overrides))
Path(ready).touch()
while not Path(go).exists():  # all processes ask at the same moment
    time.sleep(0.01)
expert = get_expert(cfg)
demos = get_demonstrations(cfg, expert)
print(json.dumps({"source": expert.source, "expert": expert.sha256, "demos": demos.sha256}))
"""


@pytest.mark.slow
def test_parallel_jobs_produce_a_missing_expert_and_dataset_once(tmp_path: Path) -> None:
    cache, go, n = tmp_path / "cache", tmp_path / "go", 4
    overrides = [*TINY, f"cache_dir={cache}", "env.expert_timesteps=4096"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(CONF), str(tmp_path / f"ready{i}"), str(go), *overrides],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a worker died before asking"
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    logs = "".join(err for _, err in outs)
    assert sorted(r["source"] for r in reports) == ["cache"] * (n - 1) + ["trained"]
    assert logs.count("(cache miss)") == 1 and logs.count("demos: collecting") == 1, logs
    assert len({r["expert"] for r in reports}) == 1 and len({r["demos"] for r in reports}) == 1
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".staging")]


def two_job_sweep(tmp_path: Path, cache_dir: Path, name: str, *launcher: str) -> Path:
    """A 2-seed BC-only sweep through `launcher`; asserts both jobs completed and returns the sweep folder."""
    sweep_dir = tmp_path / "multirun" / name
    rc, log = run_sweep(
        tmp_path / "sweep.log",
        *TINY,
        "rl.budgets=[0]",
        "seed=0,1",
        f"cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        *launcher,
    )
    assert rc == 0, log
    jobs = manifest(sweep_dir)
    assert [job["status"] for job in jobs] == ["complete", "complete"]
    assert all(is_complete(job["results"], job["config_hash"]) for job in jobs)
    return sweep_dir


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_real_multirun(tmp_path: Path, cache_dir: Path) -> None:
    sweep_dir = two_job_sweep(
        tmp_path, cache_dir, "submitit", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"
    )
    assert (sweep_dir / ".submitit").is_dir(), "the jobs ran through submitit"


@pytest.mark.slow
def test_ray_launcher_runs_a_real_multirun_on_a_local_instance(tmp_path: Path, cache_dir: Path) -> None:
    # Ray is in requirements.lock (the `ray` extra), so this runs in CI: about 1 min, 15 s of it Ray's start.
    two_job_sweep(tmp_path, cache_dir, "ray", "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.num_cpus=2")
    log = (tmp_path / "sweep.log").read_text()
    assert "Ray Launcher is launching 2 jobs" in log and "Started a local Ray instance" in log, "the jobs ran on Ray"


@pytest.mark.slow
def test_a_failing_job_is_recorded_the_others_finish_and_the_sweep_fails(tmp_path: Path, cache_dir: Path) -> None:
    sweep_dir, missing = tmp_path / "multirun" / "failing", tmp_path / "no-such-expert.zip"
    rc, log = run_sweep(
        tmp_path / "sweep.log",
        *TINY,
        "rl.budgets=[0]",
        "seed=0,1",
        f"expert.path=null,{missing}",
        f"cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert rc != 0, log
    jobs = manifest(sweep_dir)
    failed = [job for job in jobs if f"expert.path={missing}" in job["overrides"]]
    assert [job["status"] for job in jobs if job not in failed] == ["complete", "complete"]
    assert [job["status"] for job in failed] == ["failed", "failed"]
    for job in failed:
        data = results(job["results"])
        assert data["status"] == "failed" and data["error"]["type"] == "FileNotFoundError"
        assert "Traceback" in data["error"]["traceback"]
    # The summary: a head line, then one line per job saying what failed and why.
    assert f"{sweep_dir}: 4 jobs, 2 complete, 0 complete earlier, 2 failed" in log
    why = f"failed    FileNotFoundError: expert.path={missing} does not exist"
    assert log.count(why) == 4, log  # each failed job in the summary and again in the closing error
    assert "2 of 4 jobs failed" in log


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


@pytest.mark.slow
def test_rerun_after_kill_9_loses_nothing_recomputes_nothing_and_completes(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "multirun"
    args = [*TINY, "rl.budgets=[0,1024]", "seed=0,1,2,3", f"cache_dir={cache_dir}", f"hydra.sweep.dir={root / 's'}"]
    # 1. Start the sweep (2 workers) and kill -9 its whole process group once a job has finished.
    proc = start_sweep(tmp_path / "first.log", *args, new_session=True)
    deadline = time.monotonic() + 600
    while not any(results(p)["status"] == "complete" for p in (root / "s").glob("*/results.json")):
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "no job finished in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while _group_alive(proc.pid):
        time.sleep(0.05)
    first = {p: p.read_bytes() for p in (root / "s").glob("*/results.json")}
    done = {json.loads(b)["config_hash"]: p for p, b in first.items() if json.loads(b)["status"] == "complete"}
    killed = {json.loads(b)["config_hash"] for b in first.values() if json.loads(b)["status"] == "running"}
    assert 1 <= len(done) < 4, "the kill came too late to test anything"

    # 2. The same command again: a new folder beside the first, only the missing jobs run.
    rc, log = run_sweep(tmp_path / "second.log", *args)
    assert rc == 0, log
    jobs = manifest(root / "s_2")
    skipped = {job["config_hash"]: job["results"] for job in jobs if job["status"] == "skipped"}
    ran = {job["config_hash"] for job in jobs if job["status"] == "complete"}
    assert skipped == {h: str(p) for h, p in done.items()}, "every complete result is reused, none recomputed"
    assert ran.isdisjoint(done) and killed <= ran and len(ran) + len(skipped) == 4
    assert all(p.read_bytes() == b for p, b in first.items() if p in done.values()), "0 complete results lost"
    assert all(is_complete(job["results"], job["config_hash"]) for job in jobs), "the final set is complete"
    assert f"4 jobs: {4 - len(done)} to run, {len(done)} complete earlier" in log


@pytest.mark.slow
def test_two_sweeps_started_together_get_their_own_folders(tmp_path: Path, cache_dir: Path) -> None:
    same = tmp_path / "multirun" / "2026-01-01_00-00-00_x"  # what two sweeps started in one second would name
    args = [
        *TINY,
        "rl.budgets=[0]",
        "seed=0",
        f"cache_dir={cache_dir}",
        f"hydra.sweep.dir={same}",
        "hydra.sweeper.resume=false",
        "hydra.launcher.n_jobs=1",
    ]
    a, b = (start_sweep(tmp_path / f"{name}.log", *args) for name in "ab")
    assert a.wait(timeout=900) == 0 and b.wait(timeout=900) == 0
    folders = sorted(same.parent.iterdir())
    assert [f.name for f in folders] == [same.name, f"{same.name}_2"]
    for folder in folders:
        (job,) = manifest(folder)
        assert job["status"] == "complete" and Path(job["results"]).parent.parent == folder


def test_the_scale_preset_crosses_sizes_and_rules_on_one_expert_and_demonstration_set_per_env() -> None:
    """experiment=scale: 3 envs x (4 widths at depth 2 and 3 at depth 4 at the env's rates + 3 widths at depth 2 with
    lr_rule=width) x 5 seeds, every job with the BC control; within an env only the learner's size and rule differ."""
    jobs = preset_jobs("scale")
    assert len(jobs) == 3 * (7 + 3) * 5
    cfgs = [make_cfg("experiment=scale", *job) for job in preset_jobs("scale", "seed=0")]
    assert all(cfg.eval.bc_control and list(cfg.rl.budgets) == [0, 4000, 16000] for cfg in cfgs)
    sizes = {(max(c.env.net_arch), len(c.env.net_arch), c.lr_rule) for c in cfgs}
    assert sizes == {(w, d, "fixed") for w in (32, 64, 256, 1024) for d in (2, 4) if (w, d) != (1024, 4)} | {
        (w, 2, "width") for w in (32, 256, 1024)
    }
    for env in ("pendulum", "doorkey", "mountaincar"):
        same = {
            (c.demos.episodes, c.demos.expert_quality, c.bc.grad_steps, c.bc.batch_size)
            for c in cfgs
            if c.env.name == env
        }
        assert len(same) == 1, env
    assert len({run_name(c) for c in cfgs}) == len(cfgs) == 30


def test_the_memory_preset_compares_five_learners_of_matched_size_on_four_tasks() -> None:
    """experiment=memory: 4 tasks x 5 learners x (BC+RL from 16 demonstrations, BC only from 128) x 5 seeds, every
    job probing its memory; within a task the learners' actors are within 10% of each other in parameters (the
    issue's matched comparison), counted on the built policies."""
    assert len(preset_jobs("memory")) == 4 * 5 * 2 * 5
    cfgs = [to_config(make_cfg("experiment=memory", *job)) for job in preset_jobs("memory", "seed=0")]
    assert all(c.eval.memory_probe and c.bc.checkpoints == [500] for c in cfgs)
    assert len({run_name(c) for c in cfgs}) == len(cfgs) == 40
    for task in ("parity8", "parity16", "parity64", "pendulum_masked"):
        mine = [c for c in cfgs if c.env.name == task and c.demos.episodes == 16]
        assert sorted(policy_label(asdict(c.policy)) for c in mine) == sorted(
            ["mlp", "framestack", "scratchpad", "scratchpad_final", "lstm"]
        )
        sizes = [actor_params(build_learner(c).policy) for c in mine]
        assert max(sizes) <= 1.1 * min(sizes), (task, sizes)
