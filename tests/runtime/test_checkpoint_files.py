"""load_checkpoint turns every damaged or foreign file into CheckpointError, never another exception."""

import random
import re
from pathlib import PurePosixPath

import pytest
import torch

from impala_rl.checkpoint import REQUIRED_KEYS, CheckpointError, load_checkpoint, save_checkpoint

STATE = {"config": {"env": "CartPole-v1"}, "model": {"w": torch.ones(3)}, "optimizer": {}, "version": 1, "frames": 10}
NOT_TORCH = r"is not an impala-rl checkpoint \(not a torch file, or corrupt\)"


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", STATE)
    assert torch.equal(load_checkpoint(tmp_path)["model"]["w"], torch.ones(3))


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_and_damaged_archives_are_checkpoint_errors(tmp_path, seed):
    rng = random.Random(seed)
    save_checkpoint(tmp_path / "good.pt", STATE)
    good = (tmp_path / "good.pt").read_bytes()
    candidates = {
        "random": rng.randbytes(rng.randint(1, 8192)),
        "pickle-like": b"\x80\x02" + rng.randbytes(200),  # a legacy-pickle header followed by noise
        "truncated": good[: rng.randint(4, len(good) - 1)],
        "flipped": bytearray(good),
    }
    for _ in range(20):
        candidates["flipped"][rng.randrange(len(good))] ^= 1 << rng.randrange(8)
    for name, data in candidates.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(bytes(data))
        if name == "flipped":
            # Bit flips may all miss what the archive checks: a load may then succeed, but
            # what it returns must still be a checkpoint. A loud refusal is the only failure.
            try:
                state = load_checkpoint(path)
            except CheckpointError as e:
                assert str(path) in str(e), e
            else:
                assert set(REQUIRED_KEYS) <= set(state), sorted(state)
            continue
        # Not a torch archive, or one cut short (its zip directory lost): always refused.
        message = NOT_TORCH if name in ("random", "pickle-like") else f"{NOT_TORCH}|cannot be read as a checkpoint"
        with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))} ({message})"):
            load_checkpoint(path)


@pytest.mark.parametrize("what,content,message", [
    ("empty", b"", NOT_TORCH),
    ("text", b"config: {}\n", NOT_TORCH),
    ("a tensor", torch.ones(3), r"is a torch file but not an impala-rl run checkpoint \(missing: config, model, "
                                r"optimizer, version, frames\)"),
    ("a dict lacking keys", {"model": {}, "version": 1}, r"not an impala-rl run checkpoint \(missing: config, "
                                                          r"optimizer, frames\)"),
    ("a Python object", {**STATE, "config": PurePosixPath("run")}, r"is not a trusted impala-rl checkpoint: it holds "
                                                                   r"Python objects"),
])
def test_foreign_files_are_checkpoint_errors_that_say_why(tmp_path, what, content, message):
    path = tmp_path / "checkpoint.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)
