"""Checkpoints of a training run, written so that a `kill -9` at any moment leaves a usable one.

Each checkpoint is written into a staging folder and renamed into place, so the newest folder
named step-NNNNNN is always complete. Its state.pt holds the step, the scheduler and the
random-number state, and either the trainable weights and optimizer state themselves (one process
or DDP, where every process holds the same) or, under FSDP, a `shards` folder that torch's
distributed checkpoint (DCP) wrote with every process's slice. state.pt is written last, so a
folder without one was interrupted and is never read. The data order is recomputed from the seed.

Under FSDP every process writes into the same folder: across machines the run folder must be on
storage they share.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidParameterError

KEEP_LAST = 2
STATE_FILE = "state.pt"
SHARDS_FOLDER = "shards"


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


def save_checkpoint(
    run_dir: Path,
    step: int,
    state: dict[str, Any],
    torch: Any,
    *,
    shards: dict[str, Any] | None = None,
    distributed: Any = None,
) -> Path:
    """Write STATE (and, under FSDP, this process's SHARDS) as the checkpoint of STEP.

    Without shards only rank 0 calls this; with them every process does (`distributed` is the
    run's Distributed), and rank 0 writes state.pt once all the shards are on disk."""
    root = run_dir / "checkpoints"
    # One name every process agrees on without talking: the step's.
    staging = root / f".partial-{step:06d}"
    main = distributed is None or distributed.is_main
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    if shards is not None:
        import torch.distributed.checkpoint as dcp

        distributed.barrier()  # the staging folder exists before anyone writes into it
        dcp.save(shards, checkpoint_id=str(staging / SHARDS_FOLDER))
        distributed.barrier()  # every slice is written before state.pt marks the folder whole
    target = checkpoint_folder(run_dir, step)
    if main:
        torch.save({**state, "sharded": shards is not None}, staging / STATE_FILE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        for old in sorted(root.glob("step-*"))[:-KEEP_LAST]:
            shutil.rmtree(old, ignore_errors=True)
    if shards is not None:
        distributed.barrier()
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = run_dir / "checkpoints"
    found = (
        sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists()) if root.exists() else []
    )
    return found[-1] if found else None


def load_checkpoint(run_dir: Path, fingerprint: str, torch: Any) -> dict[str, Any] | None:
    """The newest checkpoint's state, or None when there is none; refuses another run's.

    A sharded checkpoint's state names its folder under "folder"; see load_shards."""
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
    state["folder"] = str(folder)
    return state


def load_shards(state: dict[str, Any], shards: dict[str, Any]) -> None:
    """Fill SHARDS (this process's state dicts, shaped as saved) from a sharded checkpoint in
    place; DCP reshards when the checkpoint was written by another number of processes."""
    import torch.distributed.checkpoint as dcp

    dcp.load(shards, checkpoint_id=str(Path(state["folder"]) / SHARDS_FOLDER))


def clear_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
