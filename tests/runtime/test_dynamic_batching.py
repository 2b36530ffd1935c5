"""Dynamic batching: ordering, partial batches on timeout, min/max batch, shutdown."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from impala_rl.runtime.dynamic_batching import BatcherClosed, DynamicBatcher


def _double(inputs):
    return {"y": inputs["x"] * 2, "n": torch.full((inputs["x"].shape[0],), inputs["x"].shape[0])}


def test_each_caller_gets_its_own_rows_in_order():
    with DynamicBatcher(_double, min_batch=8, max_batch=64, timeout_s=0.05) as batcher:
        results = {}

        def call(i):
            x = torch.arange(i * 10, i * 10 + 3, dtype=torch.float32)  # 3 distinct rows per caller
            results[i] = (x, batcher({"x": x})["y"])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 12
        for x, y in results.values():
            assert torch.equal(y, x * 2)
        assert sum(batcher.batch_sizes) == 36
        assert max(batcher.batch_sizes) > 3  # requests really were grouped


def test_partial_batch_runs_after_timeout():
    with DynamicBatcher(_double, min_batch=100, max_batch=200, timeout_s=0.1) as batcher:
        t0 = time.monotonic()
        out = batcher({"x": torch.ones(5)})
        waited = time.monotonic() - t0
        assert torch.equal(out["y"], torch.full((5,), 2.0))
        assert batcher.batch_sizes == [5]
        assert waited >= 0.09  # it did wait for more items before giving up


def test_runs_without_waiting_once_min_batch_is_reached():
    with DynamicBatcher(_double, min_batch=4, max_batch=8, timeout_s=30.0) as batcher:
        t0 = time.monotonic()
        batcher({"x": torch.ones(4)})
        assert time.monotonic() - t0 < 5.0  # nowhere near the 30 s timeout


def test_max_batch_is_never_exceeded_and_requests_are_not_split():
    gate = threading.Event()

    def slow(inputs):
        gate.wait(5)
        return _double(inputs)

    with DynamicBatcher(slow, min_batch=1, max_batch=10, timeout_s=0.0) as batcher:
        first = batcher.submit({"x": torch.ones(1)})  # occupies the worker until the gate opens
        time.sleep(0.05)
        futures = [batcher.submit({"x": torch.ones(4)}) for _ in range(5)]  # 20 items wait
        gate.set()
        first.result(5)
        for f in futures:
            assert f.result(5)["y"].shape == (4,)
        assert batcher.batch_sizes[0] == 1
        assert all(size <= 10 for size in batcher.batch_sizes)
        assert batcher.batch_sizes[1:] == [8, 8, 4]  # whole requests of 4, at most 10 items


def test_oversized_or_malformed_requests_are_rejected():
    with DynamicBatcher(_double, max_batch=4) as batcher:
        with pytest.raises(ValueError, match="exceeds max_batch=4"):
            batcher.submit({"x": torch.ones(5)})
        with pytest.raises(ValueError, match="sharing a first dimension"):
            batcher.submit({"x": torch.ones(2), "z": torch.ones(3)})
    with pytest.raises(ValueError, match="min_batch"):
        DynamicBatcher(_double, min_batch=5, max_batch=4)


def test_errors_reach_every_caller_of_the_batch():
    def boom(inputs):
        raise RuntimeError("model exploded")

    with DynamicBatcher(boom, min_batch=2, max_batch=4, timeout_s=1.0) as batcher:
        futures = [batcher.submit({"x": torch.ones(1)}) for _ in range(2)]
        for f in futures:
            with pytest.raises(RuntimeError, match="model exploded"):
                f.result(5)


def test_close_with_requests_in_flight():
    gate = threading.Event()

    def slow(inputs):
        gate.wait(5)
        return _double(inputs)

    batcher = DynamicBatcher(slow, min_batch=1, max_batch=1, timeout_s=0.0)
    running = batcher.submit({"x": torch.ones(1)})
    time.sleep(0.05)  # the worker is now inside slow()
    waiting = [batcher.submit({"x": torch.ones(1)}) for _ in range(3)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    gate.set()
    closer.join(5)
    assert not closer.is_alive()
    assert torch.equal(running.result(5)["y"], torch.full((1,), 2.0))  # the running batch completed
    for f in waiting:
        with pytest.raises(BatcherClosed):
            f.result(5)
    with pytest.raises(BatcherClosed):
        batcher.submit({"x": torch.ones(1)})
    assert not batcher._thread.is_alive()
