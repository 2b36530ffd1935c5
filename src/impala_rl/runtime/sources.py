"""The data-source seam: where the learner's batches come from.

The training loop asks a source for the next batch; the transport behind it (shared
memory slots, the Ray object store) is the backend's business. Today's source hands on
fresh unrolls in arrival order (IMPALA without replay). A replay buffer, or a mix of
fresh and replayed unrolls (the paper's Table 2), is another class with the same
``next_batch`` that keeps unrolls it has seen; the loop and the learner do not change.
"""

from __future__ import annotations

from typing import Protocol

from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.types import Batch


class BatchSource(Protocol):
    def next_batch(self) -> tuple[Batch, list[EpisodeStats]]:
        """The next [T+1, B] batch and the episodes that finished since the last call."""


class FreshUnrolls:
    """A FIFO of fresh unrolls: each batch is the next B unrolls the backend delivers."""

    def __init__(self, backend):
        self.backend = backend

    def next_batch(self) -> tuple[Batch, list[EpisodeStats]]:
        return self.backend.get_batch()
