"""Experience replay mixed with fresh unrolls (the IMPALA paper's Table 2, "with replay").

:class:`ReplayBuffer` holds whole unrolls exactly as the actors wrote them: every row
field (observations, actions, rewards, the behaviour policy's parameters ...) and every
per-unroll field (the recurrent state before row 0, the policy version that acted, the
task). A replayed unroll is therefore corrected by V-trace against the behaviour policy
it was collected with, and the learner's LSTM unroll starts from the state it had.

:class:`MixedReplay` is a data source (:mod:`impala_rl.runtime.sources`): each learner
batch of B unrolls is the backend's ``B - R`` fresh unrolls plus ``R = round(B x
replay_proportion)`` unrolls drawn uniformly (with replacement) from the buffer. Fresh
unrolls enter the buffer before the draw, so the first batches can replay what just
arrived; when the buffer is full the oldest unroll is overwritten (a FIFO of capacity
``replay_capacity`` unrolls). Each batch carries ``replayed`` (bool ``[B]``) so the
learner logs the policy lag of fresh and replayed unrolls apart.

Memory: ``capacity x bytes per unroll`` (``ReplayBuffer.nbytes``), allocated uninitialised
up front, so the operating system commits it only as the buffer fills; it never grows
beyond that. The buffer is not saved in checkpoints: a resumed run starts with an empty
one.
"""

from __future__ import annotations

import os

import torch

from impala_rl.config import ConfigError
from impala_rl.runtime.types import Batch, RolloutSpec


class ReplayBuffer:
    """A FIFO of ``capacity`` whole unrolls laid out as ``spec`` (see the module docstring)."""

    def __init__(self, spec: RolloutSpec, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1 unroll, got {capacity}")
        self.spec = spec
        self.capacity = capacity
        self.rows = spec.row_names
        self.storage = {name: torch.empty((capacity,) + shape, dtype=dtype)
                        for name, (shape, dtype) in spec.slot_fields().items()}
        rows = spec.unroll_length + 1
        self.storage.update({name: torch.empty((rows, capacity) + shape, dtype=dtype)  # time-major, as batches
                             for name, (shape, dtype) in spec.row_fields().items()})
        self.size = 0
        self.next = 0
        self.added = 0
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def nbytes(self) -> int:
        """Bytes the buffer holds when full."""
        return sum(t.element_size() * t.numel() for t in self.storage.values())

    def describe(self, replayed: int, batch_size: int) -> str:
        per_unroll = self.bytes_per_unroll(self.spec)
        return (f"replay: {self.capacity} unrolls x {per_unroll / 1e6:.3f} MB = {self.nbytes / 1e9:.2f} GB at most; "
                f"{replayed} of every {batch_size} unrolls replayed (the buffer is not checkpointed)")

    @staticmethod
    def bytes_per_unroll(spec: RolloutSpec) -> int:
        return spec.nbytes_per_slot()

    def add(self, batch: Batch) -> None:
        """Store the B unrolls of a [T+1, B] batch (overwriting the oldest when full)."""
        count = batch["version"].shape[0]
        idx = (self.next + torch.arange(count)) % self.capacity
        for name, t in self.storage.items():
            t.index_copy_(1 if name in self.rows else 0, idx, batch[name].to("cpu"))
        self.next = int((self.next + count) % self.capacity)
        self.size = min(self.capacity, self.size + count)
        self.added += count

    def sample(self, count: int) -> tuple[Batch, torch.Tensor]:
        """``count`` unrolls drawn uniformly, with replacement, from what the buffer holds, and
        their positions in the buffer (int64 ``[count]``)."""
        if self.size == 0:
            raise RuntimeError("sample from an empty replay buffer")
        idx = torch.randint(self.size, (count,), generator=self.generator)
        return self.gather(idx), idx

    def gather(self, idx: torch.Tensor) -> Batch:
        """The unrolls at buffer positions ``idx`` as a [T+1, len(idx)] batch."""
        return {name: t.index_select(1 if name in self.rows else 0, idx) for name, t in self.storage.items()}


class MixedReplay:
    """Each batch: ``fresh`` unrolls from ``backend`` plus ``replayed`` from a :class:`ReplayBuffer`."""

    def __init__(self, backend, buffer: ReplayBuffer, fresh: int, replayed: int):
        self.backend = backend
        self.buffer = buffer
        self.fresh = fresh
        self.replayed = replayed

    def next_batch(self):
        fresh, episodes = self.backend.get_batch(self.fresh)
        self.buffer.add(fresh)
        n_fresh = fresh["version"].shape[0]
        device = fresh["version"].device
        if self.replayed == 0:
            return fresh, episodes
        old, idx = self.buffer.sample(self.replayed)
        rows = self.buffer.rows
        batch = {name: torch.cat([fresh[name], old[name].to(fresh[name].device)], dim=1 if name in rows else 0)
                 for name in fresh}
        batch["replayed"] = torch.arange(n_fresh + self.replayed, device=device) >= n_fresh
        batch["replay_index"] = torch.cat([torch.full((n_fresh,), -1, dtype=torch.int64), idx]).to(device)
        return batch, episodes

    def feedback(self, batch: Batch, per_unroll: dict[str, torch.Tensor]) -> None:
        pass  # uniform replay: nothing to update (a prioritised buffer would take new priorities here)


def make_replay_buffer(cfg, spec: RolloutSpec) -> ReplayBuffer | None:
    """The run's buffer (None without replay); refused if it could not fit in the memory available."""
    if cfg.replay_proportion <= 0:
        return None
    per_unroll = ReplayBuffer.bytes_per_unroll(spec)
    need = per_unroll * cfg.replay_capacity
    available = _available_memory()
    if available is not None and need > 0.8 * available:
        raise ConfigError(f"a replay buffer of {cfg.replay_capacity} unrolls x {per_unroll / 1e6:.2f} MB = "
                          f"{need / 1e9:.2f} GB would not fit in the {available / 1e9:.1f} GB of memory available; "
                          f"lower --replay-capacity")
    return ReplayBuffer(spec, cfg.replay_capacity, seed=cfg.seed)


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
