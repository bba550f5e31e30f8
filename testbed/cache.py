"""Content-hashed on-disk cache: hashes, file locks and atomic writes shared by every stage."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from filelock import FileLock

# Library versions that change what an expert or dataset is: part of every cache key.
KEY_LIBRARIES = ("stable-baselines3", "gymnasium", "torch", "numpy")
# The field of a cache record that holds the sha256 of the rest of the record.
RECORD_HASH = "record_sha256"
# Temp files and staging folders are `.<target name>.<8 random characters>.tmp` beside their target.
STAGING_RANDOM = 8

T = TypeVar("T")


class CacheError(RuntimeError):
    """A cached artifact is missing, corrupt or does not match its hash."""


def library_versions() -> dict[str, str]:
    return {name: version(name) for name in KEY_LIBRARIES}


def content_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys), as hex."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(folder: str | Path) -> str:
    """sha256 over the relative paths and contents of every file under `folder`."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


@contextmanager
def locked(target: str | Path, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock next to `target` so one process produces it while others wait.

    Producers stage `target` only while holding its lock, so staging found once we hold it was left by a killed
    process: it is removed here.
    """
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock", timeout=timeout):
        remove_stale_staging(target)
        yield


def remove_stale_staging(target: str | Path) -> None:
    """Delete the temp files and staging folders of `target`; call only while holding its lock."""
    target = Path(target)
    for stale in target.parent.glob(f".{target.name}.{'?' * STAGING_RANDOM}.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _new_beside(target: Path, create: Callable[[Path], T]) -> tuple[Path, T]:
    """Create a fresh `.<target name>.<random>.tmp` beside `target` with `create`, which fails if it exists.

    tempfile's mkstemp and mkdtemp would make it 0600 / 0700; a plain open() or mkdir() follows the umask, so a
    cache shared by a group stays readable to it.
    """
    while True:
        path = target.parent / f".{target.name}.{secrets.token_hex(STAGING_RANDOM // 2)}.tmp"
        try:
            return path, create(path)
        except FileExistsError:
            continue


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `write(file)` into a temp file beside it, then rename: readers never see half a file,
    and a full disk leaves no cut file. An OSError is raised again naming `path` (ENOSPC alone names no file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        tmp, fd = _new_beside(path, lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone after the rename; the cut file otherwise


def atomic_create_json(path: str | Path, obj: Any) -> None:
    """Create `path` holding `obj`, whole, or raise FileExistsError if it exists: the content is written to a
    temp file first and hard-linked into place (link is atomic and never replaces), so no reader ever sees an
    empty or half-written file and two creators never both win."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(STAGING_RANDOM // 2)}.tmp")
    atomic_write_json(tmp, obj)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """`atomic_write` of `obj` as indented JSON."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=_json_default).encode()))


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Write a cache record with the sha256 of its own content, so an edit in place is caught by `read_record`."""
    plain = json.loads(json.dumps(record, default=_json_default))  # hash exactly what a reader will load
    atomic_write_json(path, plain | {RECORD_HASH: content_hash(plain)})


def read_record(path: str | Path, rebuild: str | Path | None = None) -> dict[str, Any]:
    """A record written by `write_record`, checked against its hash; `rebuild` is what to delete to rebuild it.

    Raises CacheError naming the file when the hash is missing (an older version or a hand-made file) or differs.
    """
    record = read_json(path, rebuild)
    advice = f"delete {rebuild or path} to rebuild it."
    if not isinstance(record, dict) or RECORD_HASH not in record:
        raise CacheError(f"Cache record {path} has no {RECORD_HASH} (written by an older version or by hand); {advice}")
    stored = record.pop(RECORD_HASH)
    if content_hash(record) != stored:
        raise CacheError(
            f"Cache record {path} was changed after it was written (it no longer matches its {RECORD_HASH}); {advice}"
        )
    return record


def has_record(folder: str | Path, record: str) -> bool:
    """Whether cache `folder` is complete; False if it is absent, CacheError if it exists without its `record`.

    A folder without its record (an older version's, or one made by hand) would be retrained, then fail to replace.
    """
    folder = Path(folder)
    if (folder / record).exists():
        return True
    if folder.exists():
        raise CacheError(
            f"Cache folder {folder} has no {record} (left by an older version or by hand); "
            f"delete {folder} to rebuild it."
        )
    return False


def read_json(path: str | Path, rebuild: str | Path | None = None) -> Any:
    """Read JSON, naming the file when it is corrupt (and `rebuild`, what to delete to rebuild it, if not the file)."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CacheError(f"Corrupt JSON file {path}: {e}. Delete {rebuild or 'it'} to rebuild.") from e


def new_staging_dir(target: str | Path) -> Path:
    """An empty folder beside `target` to build it in; hold `target`'s lock until it is renamed or removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _new_beside(target, os.mkdir)[0]


@contextmanager
def staging_dir(final: str | Path) -> Iterator[Path]:
    """A temp folder beside `final` that is renamed onto it only if the block succeeds; hold `final`'s lock."""
    tmp = new_staging_dir(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays reach results through metrics.
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
