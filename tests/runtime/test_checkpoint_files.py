"""load_checkpoint turns every damaged or foreign file into CheckpointError, never another exception."""

import random

import pytest
import torch

from impala_rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

STATE = {"config": {"env": "CartPole-v1"}, "model": {"w": torch.ones(3)}, "optimizer": {}, "version": 1, "frames": 10}


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
        try:
            load_checkpoint(path)
        except CheckpointError:
            pass  # a loud refusal is the only acceptable failure; a load that happens to succeed is fine
