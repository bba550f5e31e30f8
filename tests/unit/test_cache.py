"""Cache helpers: self-hashed records, stale staging removed under the target's lock, modes that follow the umask."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from testbed.cache import CacheError, atomic_write_json, locked, read_record, staging_dir, write_record
from testbed.demonstrations import write_dataset
from tests.unit.test_demonstrations import ENV, random_episodes


def test_record_round_trip_keeps_the_content_and_stores_its_hash(tmp_path: Path) -> None:
    record = {"return_mean": 487.25, "nested": {"steps": [1, 2]}, "nan": float("nan")}
    write_record(tmp_path / "r.json", record)
    assert "record_sha256" in json.loads((tmp_path / "r.json").read_text())
    back = read_record(tmp_path / "r.json")
    assert back.keys() == record.keys() and back["return_mean"] == 487.25 and back["nested"] == record["nested"]


def test_edited_record_names_the_file_and_what_to_delete(tmp_path: Path) -> None:
    path = tmp_path / "folder" / "meta.json"
    write_record(path, {"return_mean": 487.25})
    path.write_text(json.dumps(json.loads(path.read_text()) | {"return_mean": 500.0}))
    with pytest.raises(CacheError, match=f"{path} was changed after it was written.*delete {path}"):
        read_record(path)
    with pytest.raises(CacheError, match=f"delete {path.parent} to rebuild"):
        read_record(path, rebuild=path.parent)


def test_record_without_its_hash_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"return_mean": 1.0}))
    with pytest.raises(CacheError, match=f"{path} has no record_sha256.*delete {path} to rebuild"):
        read_record(path)


def test_a_lock_holder_removes_stale_staging_of_its_own_target_only(tmp_path: Path) -> None:
    folder, record = tmp_path / "cartpole-abc", tmp_path / "ref.json"
    stale = [tmp_path / ".cartpole-abc.k9k9k9k9.tmp", tmp_path / ".ref.json.k9k9k9k9.tmp"]
    # Another target's staging, whose names start like ours: not ours to judge.
    others = [tmp_path / ".cartpole-abcd.k9k9k9k9.tmp", tmp_path / ".cartpole-abc.json.k9k9k9k9.tmp"]
    stale[0].mkdir()
    (stale[0] / "model.zip").write_bytes(b"cut short by kill -9")
    for path in [stale[1], *others]:
        path.write_text("{")
    with locked(folder), locked(record):
        pass
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in others)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_json_and_records_follow_the_umask(tmp_path: Path, umask_022: None) -> None:
    atomic_write_json(tmp_path / "results.json", {"a": 1})
    write_record(tmp_path / "record.json", {"a": 1})
    assert mode(tmp_path / "results.json") == 0o644
    assert mode(tmp_path / "record.json") == 0o644


def test_staging_folder_follows_the_umask(tmp_path: Path, umask_022: None) -> None:
    with staging_dir(tmp_path / "expert") as tmp:
        assert mode(tmp) == 0o755
    assert mode(tmp_path / "expert") == 0o755


def test_dataset_files_follow_the_umask(tmp_path: Path, umask_022: None) -> None:
    folder = tmp_path / "testbed" / "cartpole-abc-v0"
    write_dataset(folder, random_episodes(1), ENV, key="abc")
    wrong = {str(p): oct(mode(p)) for p in [folder, *folder.rglob("*")] if mode(p) != (0o755 if p.is_dir() else 0o644)}
    assert not wrong, wrong
    assert [p.name for p in folder.parent.iterdir()] == [folder.name], "no staging folder is left behind"


def test_exclusive_create_writes_whole_or_refuses_and_leaves_nothing(tmp_path: Path) -> None:
    """A job's first results.json: never an empty file a reader could see, never a second creator's."""
    from testbed.cache import atomic_create_json

    path = tmp_path / "results.json"
    atomic_create_json(path, {"who": "first"})
    with pytest.raises(FileExistsError):
        atomic_create_json(path, {"who": "second"})
    assert json.loads(path.read_text()) == {"who": "first"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "no temp file left"
