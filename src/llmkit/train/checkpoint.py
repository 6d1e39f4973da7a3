"""Checkpoints of a training run, written so that a `kill -9` at any moment leaves a usable one.

Each checkpoint is written into a temporary folder and renamed into place, so the newest folder
named step-NNNNNN is always complete. It holds the trainable weights, the optimizer and scheduler
state and the random-number state; the data order is recomputed from the seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidParameterError

KEEP_LAST = 2
STATE_FILE = "state.pt"


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder now, so an unwritable --run-dir fails before the model loads."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise InvalidParameterError(
            f"Cannot write the run folder {run_dir} ({error.strerror or error}); "
            "choose another --run-dir."
        ) from error


def checkpoint_folder(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], torch: Any) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    torch.save(state, staging / STATE_FILE)
    target = checkpoint_folder(run_dir, step)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    for old in sorted(root.glob("step-*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = run_dir / "checkpoints"
    found = (
        sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists()) if root.exists() else []
    )
    return found[-1] if found else None


def load_checkpoint(run_dir: Path, fingerprint: str, torch: Any) -> dict[str, Any] | None:
    """The newest checkpoint's state, or None when there is none; refuses another run's."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        return None
    # weights_only: a checkpoint is plain tensors and numbers, and loading runs no pickled code.
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        raise InvalidParameterError(
            f"The checkpoint in {folder} belongs to a run with other settings or data; "
            "resume with the same options, or start afresh without --resume."
        )
    return state


def clear_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
