"""What a backend is: how actors run and how their unrolls reach the learner.

A backend runs the same :class:`~impala_rl.runtime.actor.Actor` objects (serially, as
local processes, or as Ray actors) and hands the learner batches of B unrolls. The
learner hands it new weights with a version number after each update.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import torch

from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.types import Batch


MAX_FAILED_STARTS = 3  # an actor that dies this many times in a row before one unroll is fatal


class ActorFailure(RuntimeError):
    """The actors cannot go on (e.g. one keeps dying before its first unroll): the run must stop.

    The message says which actor and its last error; the trainer logs it and stops cleanly.
    """


class Backend(Protocol):
    def start(self) -> None:
        """Start the actors (the initial weights were given to the constructor)."""

    def get_batch(self) -> tuple[Batch, list[EpisodeStats]]:
        """Block until B unrolls are ready; return them ([T+1, B, ...]) and finished episodes.

        Raises :class:`ActorFailure` when the actors cannot produce them."""

    def publish(self, model: torch.nn.Module, version: int) -> None:
        """Make the model's current weights, tagged ``version``, the newest for actors."""

    def info(self) -> dict[str, float]:
        """Counters for the logs (e.g. actor restarts, time the learner waited)."""

    def actor_timings(self) -> dict[str, float]:
        """Seconds the actors spent so far, by stage (env, inference, write), summed over actors."""

    def close(self) -> None:
        """Stop every actor and free every resource; safe to call twice."""


def sum_timings(timings: Iterable[dict[str, float]]) -> dict[str, float]:
    """Add up per-actor cumulative stage timings (seconds by stage name)."""
    out: dict[str, float] = {}
    for t in timings:
        for k, v in t.items():
            out[k] = out.get(k, 0.0) + v
    return out
