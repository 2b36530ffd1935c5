"""Rainbow's prioritised replay (agents/rainbow/replay.py): the sum tree and StreamReplay, timed.

    PYTHONPATH=src python benchmarks/replay_sampling.py [--repeats 2000]

Prints, each as the median over many calls (one thread, numpy only):

- ``SumTree`` at 1M values: one ``sample(32)`` plus one ``set(32)`` (a learner step's draw and
  priority update);
- ``StreamReplay`` for MinAtar-shaped rows (float32 ``[6, 10, 10]``, SpaceInvaders' channels, as
  :mod:`impala_rl.envs` makes them; no frame stack) at a capacity of 1M rows, and for Atari-shaped
  rows (uint8 ``[4, 84, 84]``, frame stack 4, one 84x84 frame stored per row) at 200k rows (1M
  would be about 7 GB): the cost of ``add_unroll`` per unroll of T = 20 while filling the ring
  (episodes end now and then, so frame stacks need side-store entries), of ``sample(32)``
  (stacks rebuilt for ``obs`` and ``next_obs``) and of ``set_priorities(32)`` once full, and the
  bytes per row.

Both replays are filled to capacity first (all of it is written, so the run needs about 2.5 GB
plus 1.4 GB of memory and takes about 15 s on an idle core).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from impala_rl.agents.rainbow.replay import StreamReplay, SumTree


def median_us(times: list[float]) -> float:
    return statistics.median(times) * 1e6


def bench_sum_tree(repeats: int) -> None:
    size = 1_000_000
    tree = SumTree(size)
    rng = np.random.default_rng(0)
    tree.set(np.arange(size), rng.random(size))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        idx = tree.sample(32, rng)
        tree.set(idx, rng.random(32))
        times.append(time.perf_counter() - start)
    print(f"SumTree, 1M values: sample(32) + set(32): {median_us(times):.1f} us per batch "
          f"(median of {repeats})")


def unroll_templates(obs_shape, obs_dtype, rng, length: int = 20) -> list[dict[str, np.ndarray]]:
    """Two unrolls of T = ``length`` rows: one inside an episode, one whose episode ends at row 8."""
    t1 = length + 1
    if np.dtype(obs_dtype) == np.uint8:
        pool = rng.integers(0, 256, size=(2 * t1,) + tuple(obs_shape), dtype=np.uint8)
    else:
        pool = (rng.random((2 * t1,) + tuple(obs_shape)) < 0.1).astype(obs_dtype)
    templates = []
    for k, ends in enumerate((False, True)):
        obs = pool[k * t1:(k + 1) * t1].copy()
        obs[0] = obs[-1] = pool[0]  # row 0 repeats the previous unroll's row T: every unroll continues its stream
        first = np.zeros(t1, dtype=bool)
        terminal = np.zeros(t1, dtype=bool)
        if ends:
            first[8] = terminal[8] = True
        templates.append({"obs": obs, "first": first, "terminal": terminal,
                          "action": rng.integers(0, 6, size=t1), "reward": rng.random(t1).astype(np.float32),
                          "bootstrap": np.zeros(t1, np.float32),
                          "q": rng.random((t1, 6)).astype(np.float32)})
    return templates


def bench_stream_replay(label: str, capacity: int, streams: int, obs_shape, obs_dtype, frame_stack: int,
                        repeats: int) -> None:
    records = {"q": ((6,), np.float32)}
    per_row = StreamReplay.bytes_per_row(obs_shape, obs_dtype, frame_stack, records)
    replay = StreamReplay(capacity, streams, obs_shape, obs_dtype, n_step=3, frame_stack=frame_stack,
                          record_fields=records, alpha=0.5, seed=0)
    rng = np.random.default_rng(1)
    templates = unroll_templates(obs_shape, obs_dtype, rng)
    unrolls = -(-capacity // 20) + streams  # enough to fill every ring
    add_times = []
    for k in range(unrolls):
        rows = templates[int(rng.random() < 0.2)]  # an episode ends in one unroll of five
        start = time.perf_counter()
        replay.add_unroll(k % streams, rows)
        add_times.append(time.perf_counter() - start)
    sample_times, update_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        batch = replay.sample(32, beta=0.4)
        sample_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        replay.set_priorities(batch["index"], rng.random(32))
        update_times.append(time.perf_counter() - start)
    print(f"StreamReplay {label}: obs {tuple(obs_shape)} {np.dtype(obs_dtype).name}, frame_stack {frame_stack}, "
          f"{capacity:,} rows in {streams} streams, n_step 3, records q [6] float32")
    print(f"  bytes per row {per_row} -> {capacity * per_row / 1e9:.2f} GB; allocated now "
          f"{replay.nbytes / 1e9:.2f} GB (side store: {replay.side_entries} full observations); "
          f"{len(replay):,} sampleable transitions")
    print(f"  add_unroll (T=20): {median_us(add_times):.1f} us per unroll (median of {len(add_times):,}, "
          f"filling the ring)")
    print(f"  sample(32): {median_us(sample_times):.1f} us; set_priorities(32): {median_us(update_times):.1f} us "
          f"(medians of {repeats})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2000, help="timed sample/set calls per structure")
    args = p.parse_args()
    bench_sum_tree(args.repeats)
    bench_stream_replay("MinAtar", 1_000_000, 32, (6, 10, 10), np.float32, 1, args.repeats)
    bench_stream_replay("Atari", 200_000, 16, (4, 84, 84), np.uint8, 4, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
