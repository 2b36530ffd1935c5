"""The one training loop: source -> learner step -> publish weights -> hooks.

``impala train``, each peer learner of ``--num-learners N`` and ``impala bench`` all run
:func:`run_loop`; what differs between them is their hooks. A hook is called after every
update with a :class:`Step` and may return a stop reason (a string) to end the loop.
Logging, checkpointing, the non-finite-loss stop and the early stop at a target return
(``--stop-at-return``) are hooks here; evaluation
(``--eval-interval``, :func:`impala_rl.runtime.play.evaluation_hook`) and population based
training's exploit/explore (:func:`impala_rl.pbt.run.pbt_hook`) are hooks too.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from impala_rl.runtime.actor import EpisodeStats

log = logging.getLogger("impala_rl")

Hook = Callable[["Step"], Optional[str]]


@dataclass
class Step:
    """What one pass of the loop did."""

    frames: int  # environment frames the learner has consumed so far
    version: int  # the policy version after this update
    metrics: dict[str, float]  # the learner's metrics for this batch
    episodes: list[EpisodeStats]  # episodes that finished since the last step
    wait_s: float  # time waiting for the batch
    publish_s: float  # time publishing the weights


def run_loop(source, learner, publish: Callable, hooks: Iterable[Hook], total_frames: int) -> str:
    """Train until ``total_frames`` (returns ``'done'``) or a hook returns a stop reason."""
    hooks = list(hooks)
    while learner.frames < total_frames:
        t0 = time.perf_counter()
        batch, episodes = source.next_batch()
        t1 = time.perf_counter()
        metrics = learner.step(batch)
        t2 = time.perf_counter()
        publish(learner.model, learner.version)
        step = Step(learner.frames, learner.version, metrics, episodes, t1 - t0, time.perf_counter() - t2)
        for hook in hooks:
            reason = hook(step)
            if reason:
                return reason
    return "done"


def stop_on_nonfinite(learner, max_nonfinite: int) -> Hook:
    """Stop after ``max_nonfinite`` non-finite losses in a row (the weights stay the last good ones)."""
    def hook(step: Step) -> Optional[str]:
        if learner.nonfinite_in_a_row >= max_nonfinite:
            log.error("stopping: %d non-finite losses in a row (last good weights kept in the checkpoint); "
                      "try a lower --learning-rate or --grad-norm-clip", learner.nonfinite_in_a_row)
            return "nonfinite"
        return None
    return hook


def stop_at_return(targets: tuple[float, ...], windows: list[deque]) -> Hook:
    """Stop (``'target'``) once every task's window of recent returns (``windows[task]``, a
    bounded deque kept by the run's logger, which records the step's episodes first) is full
    and its mean reaches the task's target; a task with fewer episodes has not."""
    def hook(step: Step) -> Optional[str]:
        if all(len(w) == w.maxlen and sum(w) / len(w) >= t for w, t in zip(windows, targets)):
            log.info("target reached: the last-%d-episode mean return of every task is at least its target (%s) "
                     "at %d frames", windows[0].maxlen, ", ".join(f"{t:g}" for t in targets), step.frames)
            return "target"
        return None
    return hook


def every(seconds: float, action: Callable[[], None]) -> Hook:
    """Call ``action`` whenever ``seconds`` have passed since the last call (or the start)."""
    last = [time.time()]

    def hook(step: Step) -> None:
        if time.time() - last[0] >= seconds:
            action()
            last[0] = time.time()
    return hook
