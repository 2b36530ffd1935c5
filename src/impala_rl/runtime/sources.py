"""The data-source seam: where the learner's batches come from.

The training loop asks a source for the next batch and, after the update, gives it the
agent's per-unroll outputs back (:meth:`BatchSource.feedback`: a prioritised replay's new
priorities). The transport behind it (shared memory slots, the Ray object store) is the
backend's business; a source decides how many fresh unrolls it takes from the backend
(``backend.get_batch(count)``) and what else goes into a batch.

A batch carries its own bookkeeping: a replay source marks the unrolls it replayed
(``replayed``, bool ``[B]``) and where they came from (``replay_index``, int64 ``[B]``,
-1 for fresh ones); the learner counts environment frames from the fresh unrolls only
(:meth:`impala_rl.runtime.learner.Learner.fresh_frames`), so a source may replay at any
ratio without the frame count running ahead. A source that stores what arrives and
trains on replayed data only (after a warm-up) says how many agent steps of fresh unrolls
it took for the batch in ``fresh_steps`` (a 0-dim int64 tensor); ``backend.get_batch(0)``
takes none and returns the episodes finished since the last call. An agent may bring its
own source (:meth:`impala_rl.agents.AgentBase.make_source`: Rainbow's prioritised replay).
A source that keeps state worth a resume may also have ``state_dict()`` (numpy arrays by
name, or None for nothing to save) and ``load_state_dict(arrays)`` (ValueError when they do
not fit): the trainer writes the former beside each checkpoint (``replay.npz``) and hands it
to a resumed run's source (:class:`impala_rl.runtime.train.Trainer`).

Sources are chosen by name from :data:`SOURCES`; :func:`source_name` says which one a
config asks for.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from impala_rl.config import TrainConfig
from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.replay import MixedReplay, ReplayBuffer
from impala_rl.runtime.types import Batch


class BatchSource(Protocol):
    def next_batch(self) -> tuple[Batch, list[EpisodeStats]]:
        """The next [T+1, B] batch and the episodes that finished since the last call."""

    def feedback(self, batch: Batch, per_unroll: dict[str, torch.Tensor]) -> None:
        """After the learner's update on ``batch``: the agent's per-unroll outputs, [B, ...] in its order."""


class FreshUnrolls:
    """A FIFO of fresh unrolls: each batch is the next ``count`` unrolls the backend delivers."""

    def __init__(self, backend, count: int):
        self.backend = backend
        self.count = count

    def next_batch(self) -> tuple[Batch, list[EpisodeStats]]:
        return self.backend.get_batch(self.count)

    def feedback(self, batch: Batch, per_unroll: dict[str, torch.Tensor]) -> None:
        pass  # nothing kept


SourceFactory = Callable[[TrainConfig, object, "ReplayBuffer | None"], BatchSource]

SOURCES: dict[str, SourceFactory] = {
    "fresh": lambda cfg, backend, buffer: FreshUnrolls(backend, cfg.batch_size),
    "replay": lambda cfg, backend, buffer: MixedReplay(backend, buffer, cfg.fresh_batch_size,
                                                       cfg.replayed_per_batch),
}
"""Data sources by name: ``factory(cfg, backend, replay buffer or None) -> BatchSource``."""


def source_name(cfg: TrainConfig) -> str:
    """The source a config asks for: ``replay`` with ``--replay-proportion`` > 0, else ``fresh``."""
    return "replay" if cfg.replay_proportion > 0 else "fresh"


def make_source(cfg: TrainConfig, backend, buffer: ReplayBuffer | None = None, name: str | None = None,
                agent=None) -> BatchSource:
    """The source ``name`` over ``backend``; without a name, the one ``agent`` brings
    (:meth:`~impala_rl.agents.AgentBase.make_source`), else :func:`source_name`'s."""
    own = agent.make_source(backend) if agent is not None and name is None else None
    return own if own is not None else SOURCES[name or source_name(cfg)](cfg, backend, buffer)
