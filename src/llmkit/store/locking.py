"""One writer at a time per store, and the cleanup of what killed writers left behind.

Every store write (import, rm, manifest saves, built-in assembly, fine-tune exports) runs inside
`store_lock`, a file lock at LLMKIT_HOME/models/.lock, and re-checks names under it, so two
processes importing the same name cannot both win. Slow work (copying gigabytes) happens outside
the lock in a staging folder; each staging folder holds an owner file with its process id, so the
next writer can tell a dead process's leftovers (removed, and reported) from a live one's (kept).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from llmkit.errors import LlmkitError
from llmkit.store.space import disk_full_error, is_disk_full

LOCK_FILE = ".lock"
OWNER_FILE = ".llmkit-owner"
# How long a writer waits for another one; writes under the lock are renames and small files.
LOCK_TIMEOUT = 300.0
# Staging folders without an owner file (older llmkit versions, or other tools' writers) are only
# removed once nothing in them has changed for this long.
UNOWNED_STALE_AFTER = 3600.0
# Leftover files inside model folders: interrupted assemblies and interrupted manifest writes.
LEFTOVER_SUFFIXES = (".partial", ".tmp")

_locks: dict[str, FileLock] = {}
_locks_guard = threading.Lock()
_depth = threading.local()  # per thread: how deeply each store lock is held


class StoreBusyError(LlmkitError):
    """Another process held the store's lock for longer than LOCK_TIMEOUT."""


@dataclass
class Reclaimed:
    entries: int = 0
    bytes: int = 0


def _lock_for(models_root: Path) -> FileLock:
    key = str(models_root.resolve())
    with _locks_guard:
        if key not in _locks:
            # Reentrant within a thread: a write may call another (export -> import).
            _locks[key] = FileLock(str(Path(key) / LOCK_FILE), timeout=LOCK_TIMEOUT)
        return _locks[key]


@contextmanager
def store_lock(models_root: Path) -> Iterator[Reclaimed | None]:
    """Hold the store's write lock; the outermost holder first cleans dead writers' leftovers.

    Yields what the cleanup reclaimed (None for a nested hold).
    """
    models_root.mkdir(parents=True, exist_ok=True)
    lock = _lock_for(models_root)
    try:
        lock.acquire()
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(error, models_root, 0, "the store's lock file") from error
        raise
    except Timeout as error:
        raise StoreBusyError(
            f"Another llmkit process has been writing to the store {models_root} for over "
            f"{LOCK_TIMEOUT:.0f} s; try again when it has finished."
        ) from error
    depths: dict[str, int] = _depth.__dict__.setdefault("by_lock", {})
    depth = depths.get(lock.lock_file, 0)
    depths[lock.lock_file] = depth + 1
    try:
        yield clean_stale_staging(models_root) if depth == 0 else None
    finally:
        depths[lock.lock_file] = depth
        lock.release()


def staging_directory(models_root: Path, label: str) -> Path:
    """A new hidden folder under models/ for work in progress, marked with this process as owner."""
    models_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{label}-", dir=models_root))
    try:
        (folder / OWNER_FILE).write_text(json.dumps(_this_process()))
    except OSError as error:
        shutil.rmtree(folder, ignore_errors=True)
        if is_disk_full(error):
            raise disk_full_error(error, models_root, 0, "a staging folder") from error
        raise
    return folder


def _process_start(pid: int) -> str | None:
    # The start time tells a live owner from a new process that happens to reuse its pid.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _this_process() -> dict[str, object]:
    return {"pid": os.getpid(), "start": _process_start(os.getpid()), "host": socket.gethostname()}


def _owner_alive(owner_file: Path) -> bool:
    try:
        owner = json.loads(owner_file.read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # an unreadable owner file was never finished: its writer died at once
    if owner.get("host") != socket.gethostname():
        return True  # a store shared with another machine: its processes cannot be checked here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = owner.get("start")
    return start is None or _process_start(pid) in (None, start)


def _size_and_newest(path: Path) -> tuple[int, float]:
    if not path.is_dir():
        stat = path.lstat()
        return stat.st_size, stat.st_mtime
    size, newest = 0, path.lstat().st_mtime
    for root, _, files in os.walk(path):
        for name in files:
            try:
                stat = (Path(root) / name).lstat()
            except OSError:
                continue
            size += stat.st_size
            newest = max(newest, stat.st_mtime)
    return size, newest


def _is_stale(entry: Path) -> bool:
    if entry.is_dir():
        owner = entry / OWNER_FILE
        if owner.exists():
            return not _owner_alive(owner)
    return time.time() - _size_and_newest(entry)[1] > UNOWNED_STALE_AFTER


def clean_stale_staging(models_root: Path) -> Reclaimed:
    """Remove dead writers' staging folders and leftover files; call with the store lock held."""
    reclaimed = Reclaimed()
    if not models_root.is_dir():
        return reclaimed
    candidates: list[Path] = []
    for entry in models_root.iterdir():
        if entry.name.startswith(".") and entry.name != LOCK_FILE and entry.is_dir():
            if _is_stale(entry):
                candidates.append(entry)
        elif entry.is_dir() and not entry.is_symlink():
            # Inside a model folder only locked writers create temporary files, and we hold the
            # lock: whatever is there now was left by a writer that died.
            candidates.extend(
                leftover
                for leftover in entry.iterdir()
                if leftover.is_file() and leftover.name.endswith(LEFTOVER_SUFFIXES)
            )
    for entry in candidates:
        try:
            size = _size_and_newest(entry)[0]
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        reclaimed.entries += 1
        reclaimed.bytes += size
    return reclaimed
