"""Checkpoints: written atomically (temp file + rename), loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and plain values: model and optimizer state, frames,
policy version, counters, and the resolved config as a dict. A crash mid-write leaves
the previous checkpoint intact; nothing half-written is ever at the final path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path} (expected a run directory holding {CHECKPOINT_NAME})")
    return torch.load(path, map_location=map_location, weights_only=True)
