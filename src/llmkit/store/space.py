"""Disk space: refuse a write that cannot fit before it starts, and turn ENOSPC into one sentence."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from llmkit.errors import LlmkitError

# Room kept free beyond the bytes a write needs: manifests, filesystem metadata, other programs.
HEADROOM = 1024 * 1024
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(LlmkitError):
    """Not enough free space for a store write; nothing was left half-written."""


def human_bytes(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"  # pragma: no cover - the loop always returns


def free_bytes(folder: Path) -> int:
    """Free space for this user on the filesystem holding folder (or its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskFullError unless `needed` bytes (plus headroom) fit on folder's filesystem."""
    free = free_bytes(folder)
    if needed + HEADROOM > free:
        raise DiskFullError(_sentence(folder, needed, free, what))


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in _FULL


def disk_full_error(error: OSError, folder: Path, needed: int, what: str) -> DiskFullError:
    """The one-sentence error for an ENOSPC met while writing (after cleaning up)."""
    return DiskFullError(_sentence(folder, needed, free_bytes(folder), what))


def _sentence(folder: Path, needed: int, free: int, what: str) -> str:
    return (
        f"Not enough disk space for {what}: it needs {human_bytes(needed + HEADROOM)} in {folder} "
        f"but only {human_bytes(free)} is free; free some space (or set LLMKIT_HOME to a larger "
        "disk) and try again."
    )
