"""Cache faults met by hand: edited records, an unchecked expert reused, folders without records, stale staging, modes.

Each test works on a cache of its own holding a copy of the fast expert (trained once into the session cache), so
it may damage that cache freely.
"""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from testbed.cache import CacheError
from testbed.config import to_config
from testbed.demonstrations import demos_key, get_demonstrations
from testbed.expert import ExpertRejected, get_expert, reference_returns, weaker_expert
from testbed.pipeline import run
from tests.conftest import CfgFactory, make_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(cache_dir: Path) -> Path:
    """The fast expert's folder in the session cache (trained there once, shared with the other test files)."""
    cfg = make_job("env=cartpole", "debug=fast", "logger=none", f"cache_dir={cache_dir}")
    return get_expert(cfg).path.parent


@pytest.fixture
def cache(trained: Path, tmp_path: Path) -> Path:
    """A cache of this test's own with a copy of the trained expert."""
    root = tmp_path / "cache"
    shutil.copytree(trained, root / "experts" / trained.name)
    return root


@pytest.fixture
def cfg(fast_cfg: CfgFactory, cache: Path) -> CfgFactory:
    """fast_cfg on this test's own cache."""
    return lambda *overrides: fast_cfg(f"cache_dir={cache}", *overrides)


def expert_folder(cache: Path) -> Path:
    (folder,) = [p for p in (cache / "experts").glob("cartpole-*") if p.is_dir()]
    return folder


def edit_json(path: Path, **changes: object) -> None:
    """Change fields of a JSON file in place, keeping it valid JSON (what a hand edit does)."""
    path.write_text(json.dumps(json.loads(path.read_text()) | changes, indent=2))


# 1. A cache record edited in place is refused, naming the file and saying to delete it.


def references(c: DictConfig) -> dict[str, float]:
    job = to_config(c)
    return reference_returns(job, get_expert(job))


@pytest.mark.parametrize("end", ["random", "expert"])
def test_edited_reference_is_refused(cfg: CfgFactory, cache: Path, end: str) -> None:
    refs = references(cfg())
    (path,) = (cache / "references").glob(f"cartpole-{end}-*.json")
    edit_json(path, return_mean=refs[f"{end}_return"] + 100.0)
    with pytest.raises(CacheError, match=f"{path}.*delete"):
        references(cfg())


def test_old_reference_without_a_hash_is_refused(cfg: CfgFactory, cache: Path) -> None:
    references(cfg())
    (path,) = (cache / "references").glob("cartpole-random-*.json")
    path.write_text(json.dumps({"random_return": 20.0, "random_return_std": 1.0}))  # as older versions wrote it
    with pytest.raises(CacheError, match=f"{path}.*no record_sha256.*delete"):
        references(cfg())


def test_hand_edited_expert_return_in_meta_json_is_refused(cfg: CfgFactory, cache: Path) -> None:
    folder = expert_folder(cache)
    edit_json(folder / "meta.json", return_mean=123.0)
    with pytest.raises(CacheError, match=f"{folder / 'meta.json'}.*delete {folder}"):
        get_expert(to_config(cfg()))


def test_edited_user_expert_return_is_refused(cfg: CfgFactory, cache: Path) -> None:
    user = to_config(cfg(f"expert.path={expert_folder(cache) / 'model.zip'}"))
    get_expert(user)
    (path,) = (cache / "experts").glob("user-*.json")
    edit_json(path, return_mean=1.0)
    with pytest.raises(CacheError, match=f"{path}.*delete"):
        get_expert(user)


def test_edited_checkpoint_returns_are_refused(cfg: CfgFactory, cache: Path) -> None:
    job = to_config(cfg())
    expert = get_expert(job)
    weaker_expert(job, expert, 0.3)
    path = expert.path.parent / f"checkpoint_returns-{job.expert.eval_episodes}.json"
    scores = json.loads(path.read_text())
    first = next(k for k in scores if k.startswith("checkpoints/"))
    edit_json(path, **{first: {"return_mean": 500.0, "return_std": 0.0}})
    with pytest.raises(CacheError, match=f"{path}.*delete"):
        weaker_expert(job, expert, 0.3)


def test_edited_dataset_record_is_refused(cfg: CfgFactory) -> None:
    job = to_config(cfg())
    demos = get_demonstrations(job, get_expert(job))
    edit_json(demos.path / "testbed.json", sources=[])
    with pytest.raises(CacheError, match=f"{demos.path / 'testbed.json'}.*delete {demos.path}"):
        get_demonstrations(job, get_expert(job))


# 2. The reference check applies to a cached expert as it does to a freshly trained one.


def test_expert_cached_unchecked_is_rejected_by_a_checked_job(cfg: CfgFactory, cache: Path) -> None:
    folder = expert_folder(cache)
    # The fast expert returns 500: a reference above it stands for an expert that misses the bar.
    assert get_expert(to_config(cfg("env.reference_return=501"))).return_mean < 501
    with pytest.raises(ExpertRejected, match=f"Cached expert {folder}.*below env.reference_return=501"):
        get_expert(to_config(cfg("env.reference_return=501", "expert.check_reference=true")))
    assert (folder / "meta.json").exists() and (folder / "model.zip").exists(), "nothing cached is deleted"


# 3. A cache folder without its record fails up front, before any training or collecting.


def test_expert_folder_without_meta_json_fails_before_training(
    cfg: CfgFactory, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = expert_folder(cache)
    (folder / "meta.json").unlink()
    monkeypatch.setattr("testbed.expert.build_expert", _must_not_run("training"))
    with pytest.raises(CacheError, match=f"{folder} has no meta.json.*delete {folder}"):
        run(cfg("rl.budgets=[0]"))


def test_dataset_folder_without_testbed_json_fails_before_collecting(
    cfg: CfgFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = to_config(cfg())
    demos = get_demonstrations(job, get_expert(job))
    (demos.path / "testbed.json").unlink()
    monkeypatch.setattr("testbed.demonstrations.collect_sources", _must_not_run("collecting"))
    with pytest.raises(CacheError, match=f"{demos.path} has no testbed.json.*delete {demos.path}"):
        run(cfg("rl.budgets=[0]"))


def _must_not_run(what: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{what} started although the cache folder is unusable")

    return fail


# 4. Staging left by a killed producer is removed by the next job that takes the target's lock.


def test_stale_staging_is_removed_and_the_job_completes(cfg: CfgFactory, cache: Path) -> None:
    job = cfg("rl.budgets=[0]")
    expert = get_expert(to_config(job))
    datasets = cache / "datasets" / "testbed"
    dataset = f"cartpole-{demos_key(to_config(job), expert)[:16]}-v0"
    stale = [
        cache / "experts" / f".{expert.path.parent.name}.k9k9k9k9.tmp" / "checkpoints",  # cache.staging_dir
        datasets / f".{dataset}.k9k9k9k9.tmp" / "testbed" / dataset / "data",
        datasets / ".staging-k9k9k9k9" / "testbed" / dataset / "data",  # demonstrations' older staging
    ]
    other = cache / "experts" / ".cartpole-0123456789abcdef.k9k9k9k9.tmp"  # another target's: not ours to judge
    for folder in [*stale, other]:
        folder.mkdir(parents=True)
        (folder / "partial.bin").write_bytes(b"cut short by kill -9")
    assert run(job)["status"] == "complete"
    assert not [p for p in stale if p.exists()], "stale staging folders are removed"
    assert other.exists(), "staging of a target this job did not lock is left alone"
    assert not list((cache / "experts").glob(f".{expert.path.parent.name}.*"))


# 5. Files and folders the cache and results writers create follow the umask, as open() and mkdir() would.


def test_job_files_follow_the_umask(cfg: CfgFactory, cache: Path, tmp_path: Path, umask_022: None) -> None:
    shutil.rmtree(cache / "experts")  # the copy keeps the modes of the session's run; train afresh
    job = cfg("rl.budgets=[0]", "env.expert_timesteps=2048", f"output_dir={tmp_path / 'job'}")
    run(job)
    made = [p for root in (cache, tmp_path / "job") for p in [root, *root.rglob("*")]]
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in made}
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o755 if Path(p).is_dir() else 0o644)}
    assert not wrong, wrong
    assert oct(modes[str(tmp_path / "job" / "results.json")]) == "0o644"
