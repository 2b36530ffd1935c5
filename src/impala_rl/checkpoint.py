"""Checkpoints: written atomically (temp file + rename), loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and plain values: model and optimizer state, frames,
policy version, counters, and the resolved config as a dict. A crash mid-write leaves
the previous checkpoint intact; nothing half-written is ever at the final path.

A data source with a state of its own (Rainbow's replay) writes it beside the checkpoint,
just before it, as numpy arrays in ``replay.npz`` (:func:`save_arrays`), with the policy
version it belongs to, so that a resume can tell whether the two files go together.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
SOURCE_STATE_NAME = "replay.npz"  # a data source's own state (Rainbow's replay), written beside the checkpoint
REQUIRED_KEYS = ("config", "model", "optimizer", "version", "frames")


class CheckpointError(ValueError):
    """A file that is not a loadable impala-rl checkpoint; the message says which and why."""


def _write_atomically(path: str | os.PathLike, write) -> Path:
    """``write(file)`` into a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    return _write_atomically(path, lambda f: torch.save(state, f))


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Numpy arrays by name into one uncompressed ``.npz`` file, atomically."""
    return _write_atomically(path, lambda f: np.savez(f, **arrays))


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """:func:`save_arrays`' file back (no pickled objects are loaded)."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path} (expected a run directory holding {CHECKPOINT_NAME})")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(f"{path} is not an impala-rl checkpoint (not a torch file, or corrupt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):  # refused by weights_only: never retry unsafely
            raise CheckpointError(f"{path} is not a trusted impala-rl checkpoint: it holds Python objects beyond "
                                  f"tensors and plain values, so it was not loaded") from None
        raise CheckpointError(f"{path} is not an impala-rl checkpoint (not a torch file, or corrupt)") from None
    except Exception as e:  # a damaged archive can fail anywhere inside the unpickler
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({type(e).__name__}): it may be truncated or "
                              f"corrupt") from None
    missing = [k for k in REQUIRED_KEYS if not (isinstance(state, dict) and k in state)]
    if missing:
        raise CheckpointError(f"{path} is a torch file but not an impala-rl run checkpoint (missing: "
                              f"{', '.join(missing)})")
    return state
