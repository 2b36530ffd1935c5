"""Experience replay: whole unrolls kept as collected, uniform draws, bounded memory, mixed batches."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from impala_rl.config import ConfigError, TrainConfig
from impala_rl.runtime import replay
from impala_rl.runtime.replay import MixedReplay, ReplayBuffer, make_replay_buffer
from impala_rl.runtime.types import RolloutSpec

SPEC = RolloutSpec(unroll_length=4, obs_shape=(3,), obs_dtype=torch.float32, action_shape=(), action_dtype=torch.int64,
                   records=(("policy_params", (2,), torch.float32),),
                   states=(("core_h", (5,), torch.float32), ("core_c", (5,), torch.float32)))


class CountingBackend:
    """Hands out batches of ``size`` unrolls; unroll number n has every field filled with n."""

    def __init__(self, size: int):
        self.size = size
        self.count = 0

    def get_batch(self, count=None):
        assert count in (None, self.size)  # the source asks for its fresh share
        ids = torch.arange(self.count, self.count + self.size)
        self.count += self.size
        batch = {}
        for name, (shape, dtype) in SPEC.row_fields().items():
            batch[name] = ids.view(1, -1, *[1] * len(shape)).expand(SPEC.unroll_length + 1, -1, *shape).to(dtype)
        for name, (shape, dtype) in SPEC.slot_fields().items():
            batch[name] = ids.view(-1, *[1] * len(shape)).expand(-1, *shape).to(dtype)
        return {k: v.contiguous() for k, v in batch.items()}, []


def unroll_ids(batch) -> torch.Tensor:
    return batch["version"]


def test_each_batch_mixes_fresh_and_replayed_unrolls_in_the_asked_proportion():
    backend = CountingBackend(size=6)
    buffer = ReplayBuffer(SPEC, capacity=100, seed=0)
    source = MixedReplay(backend, buffer, fresh=6, replayed=2)
    for step in range(20):
        batch, _ = source.next_batch()
        assert batch["obs"].shape[:2] == (5, 8) and batch["version"].shape == (8,)
        assert batch["replayed"].tolist() == [False] * 6 + [True] * 2
        # the batch says where each replayed unroll sits in the buffer (-1: fresh)
        assert batch["replay_index"][:6].tolist() == [-1] * 6
        assert torch.equal(buffer.storage["version"][batch["replay_index"][6:]], batch["version"][6:])
        fresh = unroll_ids(batch)[:6]
        assert fresh.tolist() == list(range(6 * step, 6 * step + 6))  # the backend's batch, in order
        assert (unroll_ids(batch)[6:] < 6 * (step + 1)).all()  # replayed: something already seen


def test_a_replayed_unroll_is_exactly_the_unroll_that_was_collected_with_its_policy_and_state():
    backend = CountingBackend(size=4)
    buffer = ReplayBuffer(SPEC, capacity=50, seed=1)
    source = MixedReplay(backend, buffer, fresh=4, replayed=4)
    for _ in range(10):
        batch, _ = source.next_batch()
        for j in range(4, 8):
            n = float(batch["version"][j])
            for name, value in batch.items():
                if name in ("replayed", "replay_index"):
                    continue
                column = value[:, j] if name in SPEC.row_names else value[j]
                expected = torch.full_like(column, n) if column.dtype != torch.bool else torch.full_like(column, n > 0)
                assert torch.equal(column, expected), name  # obs, actions, policy_params, core_h/c, version ...


def test_memory_is_bounded_the_oldest_unroll_goes_first_and_draws_are_uniform():
    buffer = ReplayBuffer(SPEC, capacity=10, seed=2)
    nbytes = buffer.nbytes
    assert nbytes == 10 * ReplayBuffer.bytes_per_unroll(SPEC)
    backend = CountingBackend(size=3)
    for _ in range(200):
        buffer.add(backend.get_batch()[0])
    assert buffer.size == 10 and buffer.nbytes == nbytes and buffer.added == 600
    assert sorted(buffer.storage["version"].tolist()) == list(range(590, 600))  # the last 10, FIFO
    drawn, idx = buffer.sample(20_000)
    assert torch.equal(buffer.storage["version"][idx], drawn["version"])
    counts = torch.bincount(drawn["version"] - 590, minlength=10)
    assert ((counts > 1800) & (counts < 2200)).all(), counts  # 2000 each if uniform


def test_config_checks_the_proportion_and_the_memory(monkeypatch):
    with pytest.raises(ConfigError, match=r"replay_proportion must be in \[0, 1\)"):
        TrainConfig(env="CartPole-v1", replay_proportion=1.0).validate()
    with pytest.raises(ConfigError, match="leaves 2 fresh and 0 replayed"):
        TrainConfig(env="CartPole-v1", batch_size=2, replay_proportion=0.1).validate()
    cfg = TrainConfig(env="CartPole-v1", replay_proportion=0.5, replay_capacity=1000).validate()
    assert (cfg.fresh_batch_size, cfg.replayed_per_batch) == (16, 16)
    assert cfg.frames_per_batch == 16 * cfg.unroll_length  # only fresh unrolls are new frames
    monkeypatch.setattr(replay, "_available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match="would not fit in the .* GB of memory available"):
        make_replay_buffer(cfg, SPEC)
    monkeypatch.setattr(replay, "_available_memory", lambda: None)
    assert make_replay_buffer(cfg, SPEC).capacity == 1000


def test_replay_on_the_local_backend_logs_the_lag_of_fresh_and_replayed_unrolls(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1", "--use-lstm",
                           "--lstm-size", "16", "--replay-proportion", "0.5", "--replay-capacity", "200",
                           "--total-frames", "20000", "--run-dir", str(run_dir), "--quiet", "--log-interval", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replay: 200 unrolls x" in (run_dir / "train.log").read_text()
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["replay_fraction"]) == 0.5 for r in rows)
    last = rows[-1]
    assert float(last["policy_lag_replay"]) > float(last["policy_lag_fresh"]) + 5  # replayed unrolls are old
