"""Dynamic batching (the paper's "dyn. batch", Table 1; after scalable_agent's
``dynamic_batching.py``): concurrent callers' requests are grouped into one call of a
batched function.

Semantics:
- a request is a dict of tensors sharing their first dimension n (n >= 1); it is never
  split across batches, and ``n`` may not exceed ``max_batch``;
- a batch is run as soon as the waiting requests hold at least ``min_batch`` items
  (taking whole requests, oldest first, up to ``max_batch`` items);
- with fewer than ``min_batch`` items waiting, the batch runs anyway once the oldest
  request has waited ``timeout_s`` (a partial batch), so nobody starves;
- each caller gets exactly the rows of the result that belong to its request, in order;
- an exception raised by the function is delivered to every request of that batch;
- :meth:`DynamicBatcher.close` fails the requests still waiting with
  :class:`BatcherClosed` and makes later submissions raise it; a batch already running
  completes first.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, Dict

import torch

Tensors = Dict[str, torch.Tensor]


class BatcherClosed(RuntimeError):
    """The batcher was closed before this request ran."""


class DynamicBatcher:
    """Runs ``fn`` on batches formed from concurrent :meth:`submit` calls (in a thread).

    Args:
        fn: maps a dict of tensors [N, ...] to a dict of tensors [N, ...] (same N).
        min_batch: run as soon as this many items wait.
        max_batch: never run more items than this at once.
        timeout_s: longest time the oldest request waits for ``min_batch`` items.
    """

    def __init__(self, fn: Callable[[Tensors], Tensors], *, min_batch: int = 1, max_batch: int = 1024,
                 timeout_s: float = 0.005, name: str = "impala-dynamic-batcher"):
        if not 1 <= min_batch <= max_batch:
            raise ValueError(f"need 1 <= min_batch <= max_batch, got min_batch={min_batch}, max_batch={max_batch}")
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        self.fn = fn
        self.min_batch = min_batch
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._queue: deque[tuple[Tensors, int, Future, float]] = deque()
        self._waiting = 0  # items in the queue
        self._closed = False
        self.batch_sizes: list[int] = []  # size of every batch run (for tests and stats)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, inputs: Tensors) -> Future:
        sizes = {k: v.shape[0] for k, v in inputs.items()}
        n = next(iter(sizes.values()), 0)
        if not sizes or n < 1 or any(s != n for s in sizes.values()):
            raise ValueError(f"a request needs tensors sharing a first dimension >= 1, got sizes {sizes}")
        if n > self.max_batch:
            raise ValueError(f"request of {n} items exceeds max_batch={self.max_batch}")
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the dynamic batcher is closed")
            self._queue.append((inputs, n, future, time.monotonic()))
            self._waiting += n
            self._cond.notify_all()
        return future

    def __call__(self, inputs: Tensors) -> Tensors:
        return self.submit(inputs).result()

    def _take_batch(self) -> list[tuple[Tensors, int, Future, float]] | None:
        """Wait for a runnable batch (under the lock); None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._queue:
                    if self._waiting >= self.min_batch:
                        break
                    remaining = self._queue[0][3] + self.timeout_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()
            batch, total = [], 0
            while self._queue and total + self._queue[0][1] <= self.max_batch:
                request = self._queue.popleft()
                batch.append(request)
                total += request[1]
            self._waiting -= total
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            futures = [req[2] for req in batch]
            try:
                keys = batch[0][0].keys()
                inputs = {k: torch.cat([req[0][k] for req in batch]) for k in keys}
                self.batch_sizes.append(sum(req[1] for req in batch))
                outputs = self.fn(inputs)
                start = 0
                for inp, n, future, _ in batch:
                    future.set_result({k: v[start:start + n] for k, v in outputs.items()})
                    start += n
            except BaseException as e:  # deliver to every caller of this batch
                for future in futures:
                    if not future.done():
                        future.set_exception(e)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._waiting = 0
            self._cond.notify_all()
        for _, _, future, _ in pending:
            future.set_exception(BatcherClosed("the dynamic batcher was closed before this request ran"))
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
