"""Prioritised replay of n-step transitions for the Rainbow agent, stored as per-stream row streams.

Rainbow's actors send whole unrolls (the contract of :mod:`impala_rl.runtime.types`: T+1
rows, row 0 a copy of the previous unroll's row T). :class:`StreamReplay` keeps those rows
as they come, one ring segment per environment stream, and samples n-step transitions
from them with probability proportional to ``priority ** alpha`` (Schaul et al., 2016),
drawn from a :class:`SumTree`.

Conventions (``p`` a row of a stream, ``n`` the n-step horizon):

- A *transition* is named by the global row index of its state ``x_p``: it is ``(x_p,
  a_p)`` followed by the window of rows ``p+1 .. p+n``. Window step ``j`` (0-based) holds
  row ``p+1+j``'s ``reward`` (of the transition into ``x_{p+1+j}``), ``terminal`` (that
  transition cut the bootstrap chain) and ``bootstrap`` (``V_mu`` of the real final
  observation on a truncation, else 0), exactly as the rows carry them.
- A transition is *complete* once rows ``p+1 .. p+n`` are stored in its segment, or a
  terminal came at some row ``p+j``, ``j <= n``, and rows up to ``p+j`` are stored. Its
  window then has ``steps = j`` (first terminal) or ``n`` real entries; the entries after
  the first terminal belong to the next episode (or to no row at all) and are given as
  reward 0, bootstrap 0, terminal True, so :func:`impala_rl.core.qlearning.n_step_returns`
  (which ignores them) and any "cut after the first terminal" rule read them alike.
  ``next_obs`` is the stacked ``x_{p+steps}``: ``x_{p+n}``, or after a terminal the next
  episode's first observation, which a zero discount makes irrelevant.
- Only complete transitions whose rows (the window, and every frame of the stacked
  ``x_p``) are still stored are in the tree; ``len(replay)`` counts them. Everything else
  has priority 0 and is never sampled.

Streams and segments. ``capacity`` rows are split into ``num_streams`` rings of ``L =
capacity // num_streams`` rows, one per environment stream (the remainder rows are not
used). An unroll whose row 0 is the stream's last stored row (same observation, same
``first`` flag) continues it: rows 1..T are appended. Otherwise (the stream's first
unroll, or a gap: an actor restarted, unrolls were dropped) rows 0..T start a new
*segment*; no window ever crosses a segment start, and the transitions at the end of the
old segment that were waiting for rows never complete. When a ring is full the oldest
rows are overwritten; the transitions at those rows leave the tree, and so do the (at
most ``frame_stack - 1``) transitions whose stacked observation needed an overwritten
frame.

Frame stacks. With ``frame_stack = F > 1`` an observation ``[F * c, ...]`` is ``F``
frames of ``c`` channels, oldest first (``FrameStackObservation``'s ``[4, 84, 84]``:
``c = 1``; RGB as :class:`impala_rl.envs.wrappers.StackedFramesChannelFirst` lays it out:
``c = 3``). Each row stores only its newest frame, ``obs[-c:]``. The rows where an
episode starts (``first``) or a segment starts are *anchors*: their full stacked
observation goes to a side store, which supplies the frames older than the anchor, i.e.
whatever the environment put there (FrameStackObservation repeats the reset frame; other
vector envs pad with zeros; at a segment start the real earlier frames). The stacked
``x_p`` is therefore rebuilt exactly: its newest frames from rows ``p, p-1, ...`` back to
its anchor, the older ones from the anchor's stored stack. A side-store entry is freed
when its row is overwritten, so the side store holds at most one full observation per
anchor row in the rings (episodes are usually much longer than F, making it small).

Memory: ``capacity x bytes_per_row(...)`` (:meth:`StreamReplay.bytes_per_row`, including
the sum tree), allocated with ``np.zeros`` at construction (the operating system commits
pages as they are first written), plus the side store and one full observation per
stream; :attr:`StreamReplay.nbytes` states what is allocated now.

Saving: :meth:`StreamReplay.state_dict` gives every array and counter (and the sampling
generator's state) as numpy arrays, and :meth:`StreamReplay.load_state_dict` takes them
back into a replay of the same layout, which then continues exactly as the saved one would
have (the source writes them beside each checkpoint, so ``--resume`` restores the replay).

Storage and indexing are numpy; :meth:`StreamReplay.sample` and
:meth:`StreamReplay.window` return torch tensors (sharing memory with fresh numpy
arrays, never with the storage), and the methods that take arrays accept numpy arrays or
CPU torch tensors.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np
import torch

from impala_rl.core.qlearning import importance_weights

__all__ = ["SumTree", "StreamReplay", "PRIORITY_EPS"]

PRIORITY_EPS = 1e-6
"""Priorities are clipped below to this, so that no complete transition becomes unsampleable."""

_ROW_FIELDS = ("obs", "first", "action", "reward", "terminal", "bootstrap")
"""The row columns :meth:`StreamReplay.add_unroll` reads (plus the record fields); others are ignored."""


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _np_dtype(dtype) -> np.dtype:
    """A numpy dtype from a numpy or torch dtype."""
    if isinstance(dtype, torch.dtype):
        return torch.empty((), dtype=dtype).numpy().dtype
    return np.dtype(dtype)


class SumTree:
    """A binary sum tree over ``capacity`` non-negative float64 values, with their maximum.

    Layout: one array of ``2 * capacity`` nodes; node 1 is the root, node ``i``'s children
    are ``2i`` and ``2i + 1``, and value ``k`` is the leaf at node ``capacity + k``. For a
    capacity that is not a power of two the leaves sit at two depths (and in a rotated
    order), which neither sums nor proportional sampling care about. A parallel array holds
    the maximum of each subtree, so :attr:`max_value` stays exact when values decrease.

    Internal nodes are always recomputed from their children (never adjusted by a
    difference), so sums do not drift however many updates are made.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._sum = np.zeros(2 * self.capacity, dtype=np.float64)
        self._max = np.zeros(2 * self.capacity, dtype=np.float64)
        # the deepest leaf is at node 2 * capacity - 1, floor(log2(2 capacity - 1)) levels below the root
        self._depth = int(2 * self.capacity - 1).bit_length() - 1
        self._shifts = np.arange(1, self._depth + 1, dtype=np.int64)[:, None]

    BYTES_PER_VALUE = 32
    """Bytes per value: two float64 arrays of 2 nodes per value."""

    @property
    def nbytes(self) -> int:
        return self._sum.nbytes + self._max.nbytes

    @property
    def total(self) -> float:
        """The sum of all values."""
        return float(self._sum[1])

    @property
    def max_value(self) -> float:
        """The largest value (0.0 when all are 0)."""
        return float(self._max[1])

    def _indices(self, indices) -> np.ndarray:
        idx = _numpy(indices).astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"SumTree indices must be in [0, {self.capacity}), got {idx.min()}..{idx.max()}")
        return idx

    def get(self, indices) -> np.ndarray:
        """The values at ``indices`` (float64, the shape of ``indices`` flattened)."""
        return self._sum[self._indices(indices) + self.capacity]

    def set(self, indices, values) -> None:
        """Set ``values[i]`` at ``indices[i]``; where an index repeats, its last value wins.

        ``values`` is broadcast to ``indices``' length. Cost O(k log capacity) for k indices,
        vectorised over them. Raises ValueError for a negative or non-finite value.
        """
        idx = self._indices(indices)
        vals = _numpy(values).astype(np.float64, copy=False)
        vals = np.broadcast_to(vals.reshape(-1) if vals.ndim else vals, idx.shape)
        if idx.size == 0:
            return
        bad = ~(np.isfinite(vals) & (vals >= 0))
        if bad.any():
            raise ValueError(f"SumTree values must be finite and >= 0, got {vals[bad][:5]}")
        # last occurrence of each index: first occurrence in the reversed array
        uniq, first_in_reversed = np.unique(idx[::-1], return_index=True)
        nodes = uniq + self.capacity
        self._sum[nodes] = self._max[nodes] = vals[::-1][first_in_reversed]
        # Recompute the ancestors bottom-up, all levels' nodes computed at once: row r holds
        # the r+1-th ancestors, clamped at the root. Leaves at two depths can reach a node
        # in two rounds (the root is recomputed while clamped); the later round sees both
        # children final, and a node recomputed twice in a round gets the same value twice.
        parents = np.maximum(nodes >> self._shifts, 1)
        lefts = parents << 1
        rights = lefts | 1
        total, top = self._sum, self._max
        for p, left, right in zip(parents, lefts, rights):
            total[p] = total[left] + total[right]
            top[p] = np.maximum(top[left], top[right])

    def find(self, targets: np.ndarray) -> np.ndarray:
        """For each target mass ``u`` in [0, total), the index whose cumulative interval holds it.

        A descent never enters a zero subtree, so a zero value is never returned, even
        when rounding puts ``u`` at or past the total.
        """
        u = np.array(targets, dtype=np.float64, copy=True).reshape(-1)
        node = np.ones(u.shape, dtype=np.int64)
        children = self._sum.reshape(-1, 2)  # row i: nodes 2i and 2i + 1
        # Nodes above the last level are all inner (leaves start at level depth - 1).
        for level in range(self._depth):
            last = level == self._depth - 1  # the last level can hold leaves already: they stay
            inner = node < self.capacity if last else None
            pair = children[np.where(inner, node, 1) if last else node]
            left_sum = pair[:, 0]
            go_right = (u >= left_sum) & (pair[:, 1] > 0)
            if last:
                go_right &= inner
                node = np.where(inner, 2 * node + go_right, node)
            else:
                node = 2 * node + go_right
            np.subtract(u, left_sum, out=u, where=go_right)
        return node - self.capacity

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` indices drawn proportionally to their values, stratified (int64 ``[n]``).

        ``[0, total)`` is split into ``n`` equal segments and one point is drawn uniformly
        in each, so a batch covers the distribution more evenly than ``n`` independent
        draws while each draw is still marginally proportional to the values. An index
        whose value is 0 is never returned. Raises RuntimeError when the total is 0.
        """
        total = float(self._sum[1])
        if not total > 0:
            raise RuntimeError("sample from a SumTree whose values are all 0")
        if n < 0:
            raise ValueError(f"sample size must be >= 0, got {n}")
        u = (np.arange(n, dtype=np.float64) + rng.random(n)) * (total / n) if n else np.zeros(0)
        return self.find(u)


class StreamReplay:
    """Prioritised n-step replay over per-stream row streams (see the module docstring).

    Args:
      capacity: rows in all, split into ``num_streams`` rings of ``capacity // num_streams``.
      num_streams: environment streams (the ``stream`` argument of :meth:`add_unroll`).
      obs_shape, obs_dtype: one observation (stacked, as the environment gives it).
      n_step: the horizon ``n`` of a transition's window.
      frame_stack: frames per observation (``obs_shape[0]`` must be a multiple of it);
        ``1`` stores whole observations.
      record_fields: the agent's per-row records, ``name -> (shape, dtype)`` (numpy or
        torch dtypes), returned at rows ``p`` and ``p + steps`` of each transition.
      alpha: priority exponent; the tree holds ``max(priority, PRIORITY_EPS) ** alpha``.
      seed: the sampling generator's seed.
      action_shape, action_dtype: one action (default: a discrete int64 action).

    Raises:
      ValueError: a ring would hold fewer than ``n_step + frame_stack + 1`` rows, or the
        shapes or arguments are inconsistent.

    Not thread-safe: one thread adds, samples and sets priorities. An index whose rows are
    overwritten between :meth:`sample` and :meth:`set_priorities` is skipped then (if a new
    transition has completed at the same row in between, it takes the stale priority).
    """

    def __init__(self, capacity: int, num_streams: int, obs_shape, obs_dtype, n_step: int, frame_stack: int = 1,
                 record_fields: Mapping[str, tuple] | None = None, alpha: float = 0.5, seed: int = 0,
                 action_shape: tuple = (), action_dtype=np.int64):
        if num_streams < 1:
            raise ValueError(f"num_streams must be >= 1, got {num_streams}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        if n_step > 127 or frame_stack > 127:
            raise ValueError(f"n_step and frame_stack must be <= 127 (stored as int8), got {n_step}, {frame_stack}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        obs_shape = tuple(int(s) for s in obs_shape)
        if frame_stack > 1 and (len(obs_shape) == 0 or obs_shape[0] % frame_stack):
            raise ValueError(f"obs_shape {obs_shape} is not {frame_stack} stacked frames: its first dimension "
                             f"must be a multiple of frame_stack={frame_stack}")
        rows_per_stream = capacity // num_streams
        need = n_step + frame_stack + 1
        if rows_per_stream < need:
            raise ValueError(f"capacity {capacity} gives each of the {num_streams} streams {rows_per_stream} rows; "
                             f"each needs at least n_step + frame_stack + 1 = {need}: raise capacity to at least "
                             f"{need * num_streams}")
        self.num_streams = int(num_streams)
        self.rows_per_stream = int(rows_per_stream)
        self.capacity = self.num_streams * self.rows_per_stream
        self.obs_shape = obs_shape
        self.obs_dtype = _np_dtype(obs_dtype)
        self.n_step = int(n_step)
        self.frame_stack = int(frame_stack)
        self.alpha = float(alpha)
        self.action_shape = tuple(action_shape)
        self.action_dtype = _np_dtype(action_dtype)
        self.record_fields = {name: (tuple(shape), _np_dtype(dtype))
                              for name, (shape, dtype) in (record_fields or {}).items()}
        self.frame_shape = self._frame_shape(obs_shape, frame_stack)
        self.rng = np.random.default_rng(seed)

        cap = self.capacity
        self._frames = np.zeros((cap,) + self.frame_shape, dtype=self.obs_dtype)
        self._action = np.zeros((cap,) + self.action_shape, dtype=self.action_dtype)
        self._reward = np.zeros(cap, dtype=np.float32)
        self._terminal = np.zeros(cap, dtype=bool)
        self._bootstrap = np.zeros(cap, dtype=np.float32)
        self._records = {name: np.zeros((cap,) + shape, dtype=dtype)
                         for name, (shape, dtype) in self.record_fields.items()}
        self._anchor_dist = np.zeros(cap, dtype=np.int8)  # rows back to the anchor, at most F - 1
        self._side_slot = np.full(cap, -1, dtype=np.int32)  # an anchor's entry in the side store
        self._steps = np.zeros(cap, dtype=np.int8)  # a complete transition's window length
        self._valid = np.zeros(cap, dtype=bool)  # complete, and all its rows still stored
        self._tree = SumTree(cap)
        # side store: full stacked observations of anchor rows, [slots, F, *frame_shape]
        self._side = np.zeros((0, self.frame_stack) + self.frame_shape, dtype=self.obs_dtype)
        self._side_free: list[int] = []
        # per stream: rows ever written (a row's absolute number a sits at a % L), where the
        # current segment started, and the last row's observation and first flag
        self._written = np.zeros(self.num_streams, dtype=np.int64)
        self._segment_start = np.zeros(self.num_streams, dtype=np.int64)
        self._last_obs = np.zeros((self.num_streams,) + obs_shape, dtype=self.obs_dtype)
        self._last_first = np.zeros(self.num_streams, dtype=bool)
        self._count = 0

    # ----------------------------------------------------------------------------- sizes

    @staticmethod
    def _frame_shape(obs_shape: tuple, frame_stack: int) -> tuple:
        if frame_stack == 1:
            return tuple(obs_shape)
        return (obs_shape[0] // frame_stack,) + tuple(obs_shape[1:])

    @staticmethod
    def bytes_per_row(obs_shape, obs_dtype, frame_stack: int = 1, record_fields: Mapping[str, tuple] | None = None,
                      action_shape: tuple = (), action_dtype=np.int64) -> int:
        """Bytes one row costs: its newest frame, action, reward, terminal, bootstrap, records,
        bookkeeping and its share of the sum tree (not the side store; see the module docstring)."""
        frame = int(np.prod(StreamReplay._frame_shape(tuple(obs_shape), frame_stack), dtype=np.int64))
        size = frame * _np_dtype(obs_dtype).itemsize
        size += int(np.prod(action_shape, dtype=np.int64)) * _np_dtype(action_dtype).itemsize
        size += 4 + 1 + 4  # reward float32, terminal bool, bootstrap float32
        for shape, dtype in (record_fields or {}).values():
            size += int(np.prod(shape, dtype=np.int64)) * _np_dtype(dtype).itemsize
        size += 1 + 4 + 1 + 1  # anchor distance int8, side slot int32, steps int8, valid bool
        return size + SumTree.BYTES_PER_VALUE

    @property
    def nbytes(self) -> int:
        """Bytes allocated now (rows, tree, side store and per-stream state)."""
        arrays = [self._frames, self._action, self._reward, self._terminal, self._bootstrap, self._anchor_dist,
                  self._side_slot, self._steps, self._valid, self._side, self._written, self._segment_start,
                  self._last_obs, self._last_first, *self._records.values()]
        return sum(a.nbytes for a in arrays) + self._tree.nbytes

    def __len__(self) -> int:
        """Complete transitions that can be sampled."""
        return self._count

    @property
    def side_entries(self) -> int:
        """Full observations held in the side store now."""
        return len(self._side) - len(self._side_free)

    @property
    def max_priority(self) -> float:
        """The largest priority among the sampleable transitions (1.0 when there are none):
        what :meth:`add_unroll` gives newly complete transitions."""
        top = self._tree.max_value
        if top <= 0 or self.alpha == 0:
            return 1.0
        return top ** (1.0 / self.alpha)

    # ----------------------------------------------------------------------------- adding

    def _global(self, stream, absolute):
        return stream * self.rows_per_stream + absolute % self.rows_per_stream

    def _check_rows(self, rows: Mapping) -> dict[str, np.ndarray]:
        missing = [k for k in (*_ROW_FIELDS, *self.record_fields) if k not in rows]
        if missing:
            raise ValueError(f"add_unroll: rows lack {missing}")
        out = {k: _numpy(rows[k]) for k in (*_ROW_FIELDS, *self.record_fields)}
        length = out["obs"].shape[0] if out["obs"].ndim else 0
        if length < 1:
            raise ValueError("add_unroll: an unroll needs at least one row")
        expect = {"obs": self.obs_shape, "first": (), "action": self.action_shape, "reward": (), "terminal": (),
                  "bootstrap": ()}
        expect.update({k: shape for k, (shape, _) in self.record_fields.items()})
        for k, shape in expect.items():
            if out[k].shape != (length,) + shape:
                raise ValueError(f"add_unroll: {k} has shape {out[k].shape}, expected {(length,) + shape} "
                                 f"(rows are [T+1, ...])")
        if out["obs"].dtype != self.obs_dtype:
            raise ValueError(f"add_unroll: obs has dtype {out['obs'].dtype}, the replay stores {self.obs_dtype}")
        return out

    def _continues(self, stream: int, obs0: np.ndarray, first0: bool) -> bool:
        return bool(self._written[stream] > 0 and self._last_first[stream] == first0
                    and np.array_equal(self._last_obs[stream], obs0))

    def add_unroll(self, stream: int, rows: Mapping) -> np.ndarray:
        """Append one unroll of stream ``stream`` (row fields ``[T+1, ...]``, numpy or torch).

        Reads ``obs``, ``first``, ``action``, ``reward``, ``terminal``, ``bootstrap`` and the
        record fields (other keys are ignored). If row 0 is the stream's last stored row, rows
        1..T are appended; otherwise rows 0..T start a new segment. Rows overwritten in the
        ring take their transitions out of the tree.

        Returns the global indices (int64) of the transitions that became complete, in
        order; they enter the tree at :attr:`max_priority` (as it was before this unroll)
        until :meth:`set_priorities` gives them their own.
        """
        if not 0 <= stream < self.num_streams:
            raise ValueError(f"stream must be in [0, {self.num_streams}), got {stream}")
        data = self._check_rows(rows)
        L, F, n = self.rows_per_stream, self.frame_stack, self.n_step
        first = data["first"].astype(bool, copy=False)
        continues = self._continues(stream, data["obs"][0], bool(first[0]))
        start = 1 if continues else 0
        m = len(first) - start
        if m > L:
            raise ValueError(f"add_unroll: {m} new rows do not fit in a stream's ring of {L} rows")
        w = int(self._written[stream])
        if m == 0:
            return np.zeros(0, dtype=np.int64)
        oldest = w + m - L  # absolute number of the oldest row stored once this unroll is in
        base = stream * L

        # 1. Rows about to be overwritten, and rows whose stacks reach back into them, leave the tree.
        lo = max(0, w - L)
        lost = np.zeros(0, dtype=np.int64)
        if oldest > lo:
            a = np.arange(lo, min(w, oldest + F - 1), dtype=np.int64)
            g = base + a % L
            lost = (a < oldest) | (a - self._anchor_dist[g] < oldest)
            lost = g[lost & self._valid[g]]
            self._valid[lost] = False
            self._count -= int(lost.size)
            gone = base + np.arange(lo, oldest, dtype=np.int64) % L
            slots = self._side_slot[gone]
            self._side_free.extend(int(s) for s in slots[slots >= 0])
            self._side_slot[gone] = -1

        # 2. Write the rows.
        new = slice(start, None)
        g_new = base + (w + np.arange(m, dtype=np.int64)) % L
        obs = data["obs"][new]
        self._frames[g_new] = obs if F == 1 else obs[:, -self.frame_shape[0]:]
        self._action[g_new] = data["action"][new]
        self._reward[g_new] = data["reward"][new]
        self._terminal[g_new] = data["terminal"][new]
        self._bootstrap[g_new] = data["bootstrap"][new]
        for name, arr in self._records.items():
            arr[g_new] = data[name][new]
        anchor = first[new].copy()
        if not continues:
            anchor[0] = True
            self._segment_start[stream] = w
        steps = np.arange(m, dtype=np.int64)
        last_anchor = np.maximum.accumulate(np.where(anchor, steps, -1))
        carried = int(self._anchor_dist[base + (w - 1) % L]) + 1 + steps if continues else steps  # no anchor yet
        dist = np.where(last_anchor >= 0, steps - last_anchor, carried)
        self._anchor_dist[g_new] = np.minimum(dist, F - 1)
        self._side_slot[g_new] = -1  # (step 1 freed the overwritten rows' side-store entries)
        if F > 1:
            for k in np.flatnonzero(anchor):
                slot = self._side_alloc()
                self._side[slot] = obs[k].reshape((F,) + self.frame_shape)
                self._side_slot[g_new[k]] = slot
        self._written[stream] = w + m
        self._last_obs[stream] = data["obs"][-1]
        self._last_first[stream] = first[-1]

        # 3. Transitions that became complete: states from max(segment start, w - n) to the
        #    newest row but one, with a window reaching the new rows.
        newest = w + m - 1
        a = np.arange(max(int(self._segment_start[stream]), w - n, oldest), newest, dtype=np.int64)
        if a.size == 0:
            self._tree.set(lost, 0.0)
            return np.zeros(0, dtype=np.int64)
        window = a[:, None] + np.arange(1, n + 1, dtype=np.int64)  # [K, n] absolute rows p+1 .. p+n
        stored = window <= newest
        term = self._terminal[base + window % L] & stored
        ended = term.any(axis=1)
        complete = (a + n <= newest) | ended
        before = window <= w - 1
        complete_before = (a + n <= w - 1) | (term & before).any(axis=1)
        g_a = base + a % L
        fresh = complete & ~complete_before & (a - self._anchor_dist[g_a] >= oldest)
        g_done = g_a[fresh]
        self._steps[g_done] = np.where(ended[fresh], term[fresh].argmax(axis=1) + 1, n)
        self._valid[g_done] = True
        self._count += int(g_done.size)
        # one tree update: the lost transitions out, then the new ones in (a new transition can
        # sit where a lost one was: the later value wins)
        initial = self.max_priority ** self.alpha
        self._tree.set(np.concatenate([lost, g_done]),
                       np.concatenate([np.zeros(lost.size), np.full(g_done.size, initial)]))
        return g_done

    def _side_alloc(self) -> int:
        if not self._side_free:
            old = len(self._side)
            grown = max(16, 2 * old)
            side = np.zeros((grown,) + self._side.shape[1:], dtype=self._side.dtype)
            side[:old] = self._side
            self._side = side
            self._side_free.extend(range(grown - 1, old - 1, -1))
        return self._side_free.pop()

    # ----------------------------------------------------------------------------- saving

    _STATE = ("_frames", "_action", "_reward", "_terminal", "_bootstrap", "_anchor_dist", "_side_slot", "_steps",
              "_valid", "_side", "_written", "_segment_start", "_last_obs", "_last_first")
    _GROWS = ("side", "side_free")  # their lengths depend on the history, not on the layout

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything the replay holds, as numpy arrays (not copies): the rows, records, tree,
        side store, per-stream state, the count and the sampling generator's state."""
        state = {name[1:]: getattr(self, name) for name in self._STATE}
        state.update({f"record:{name}": values for name, values in self._records.items()})
        state.update(tree_sum=self._tree._sum, tree_max=self._tree._max, count=np.asarray(self._count),
                     side_free=np.asarray(self._side_free, dtype=np.int64),
                     rng=np.asarray(json.dumps(self.rng.bit_generator.state)))
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back :meth:`state_dict`'s arrays (copied). Raises ValueError, changing nothing, when
        they come from a replay of another layout (capacity, streams, observation, records)."""
        mine = self.state_dict()
        if set(state) != set(mine):
            raise ValueError(f"the saved replay holds {sorted(set(state) ^ set(mine))} where this one does not, "
                             f"or the reverse")
        for key, ours in mine.items():
            theirs = np.asarray(state[key])
            shape, other = (ours.shape[1:], theirs.shape[1:]) if key in self._GROWS else (ours.shape, theirs.shape)
            if other != shape or (key != "rng" and theirs.dtype != ours.dtype):
                raise ValueError(f"the saved replay's {key} is {theirs.dtype}{list(theirs.shape)}, this run's "
                                 f"{ours.dtype}{list(ours.shape)}")
        for name in self._STATE:
            setattr(self, name, np.array(state[name[1:]]))
        self._records = {name: np.array(state[f"record:{name}"]) for name in self._records}
        self._tree._sum, self._tree._max = np.array(state["tree_sum"]), np.array(state["tree_max"])
        self._side_free = [int(i) for i in state["side_free"]]
        self._count = int(state["count"])
        self.rng.bit_generator.state = json.loads(str(state["rng"]))

    # ----------------------------------------------------------------------------- priorities

    def set_priorities(self, indices, priorities) -> None:
        """Give the transitions at ``indices`` these priorities (the tree holds
        ``max(priority, PRIORITY_EPS) ** alpha``; a repeated index keeps its last value).

        Indices that are no longer sampleable (their rows were overwritten since they were
        sampled) are skipped. Raises ValueError for a NaN, infinite or negative priority.
        """
        idx = _numpy(indices).astype(np.int64, copy=False).reshape(-1)
        pri = _numpy(priorities).astype(np.float64, copy=False)
        pri = np.broadcast_to(pri.reshape(-1) if pri.ndim else pri, idx.shape)
        if not np.all(np.isfinite(pri)) or np.any(pri < 0):
            raise ValueError(f"priorities must be finite and >= 0, got {pri[~(np.isfinite(pri) & (pri >= 0))][:5]}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"indices must be in [0, {self.capacity})")
        keep = self._valid[idx]
        self._tree.set(idx[keep], np.maximum(pri[keep], PRIORITY_EPS) ** self.alpha)

    def priorities(self, indices) -> np.ndarray:
        """The tree's values ``priority ** alpha`` at ``indices`` (0 where not sampleable)."""
        return self._tree.get(indices)

    # ----------------------------------------------------------------------------- reading

    def _stacked(self, g: np.ndarray) -> np.ndarray:
        """The stacked observations at global rows ``g`` ([B, *obs_shape])."""
        if self.frame_stack == 1:
            return self._frames[g]
        L, F = self.rows_per_stream, self.frame_stack
        base, pos = (g // L) * L, g % L
        dist = self._anchor_dist[g].astype(np.int64)
        out = np.empty((g.size, F) + self.frame_shape, dtype=self.obs_dtype)
        for age in range(F):
            out[:, F - 1 - age] = self._frames[base + (pos - age) % L]
            older = age > dist  # before the anchor: from the anchor's stored stack
            if older.any():
                slot = self._side_slot[base[older] + (pos[older] - dist[older]) % L]
                out[older, F - 1 - age] = self._side[slot, F - 1 - (age - dist[older])]
        return out.reshape((g.size,) + self.obs_shape)

    def window(self, indices) -> dict[str, torch.Tensor]:
        """The transitions at ``indices`` (global rows, e.g. from :meth:`add_unroll`), without sampling.

        Returns torch tensors, ``B = len(indices)``:

        - ``index`` int64 [B]; ``obs`` [B, *obs_shape] (stacked ``x_p``); ``action`` [B, ...];
        - ``rewards``, ``bootstraps`` float32 [B, n] and ``terminals`` bool [B, n]: window step
          ``j`` is row ``p+1+j``'s reward, bootstrap and terminal; after the first terminal,
          0, 0 and True;
        - ``next_obs`` [B, *obs_shape]: stacked ``x_{p+n}`` (``x_{p+j}`` when a terminal came
          first at row ``p+j``);
        - ``record_t:<name>`` and ``record_next:<name>``: the records at ``x_p`` and at the row
          of ``next_obs``.

        Raises ValueError if an index is not a sampleable transition.
        """
        g = _numpy(indices).astype(np.int64, copy=False).reshape(-1)
        if g.size and (g.min() < 0 or g.max() >= self.capacity):
            raise IndexError(f"indices must be in [0, {self.capacity})")
        if not self._valid[g].all():
            raise ValueError(f"not sampleable transitions (incomplete or overwritten): {g[~self._valid[g]][:10]}")
        L, n = self.rows_per_stream, self.n_step
        base, pos = (g // L) * L, g % L
        steps = self._steps[g].astype(np.int64)
        j = np.arange(n, dtype=np.int64)
        rows = base[:, None] + (pos[:, None] + 1 + j) % L  # [B, n] rows p+1 .. p+n
        real = j < steps[:, None]
        next_g = base + (pos + steps) % L
        out = {
            "index": g.copy(),
            "obs": self._stacked(g),
            "action": self._action[g],
            "rewards": np.where(real, self._reward[rows], np.float32(0)),
            "terminals": np.where(real, self._terminal[rows], True),
            "bootstraps": np.where(real, self._bootstrap[rows], np.float32(0)),
            "next_obs": self._stacked(next_g),
        }
        for name, arr in self._records.items():
            out[f"record_t:{name}"] = arr[g]
            out[f"record_next:{name}"] = arr[next_g]
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}

    def sample(self, batch_size: int, beta: float) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn with probability ``P(i) = p_i^alpha / sum_k p_k^alpha``
        (stratified, :meth:`SumTree.sample`): :meth:`window` of them plus ``weight`` float32
        [B], the importance weights ``(N P(i))^-beta`` divided by their maximum over the batch,
        ``N = len(self)``. Raises RuntimeError when nothing is sampleable."""
        if self._count == 0:
            raise RuntimeError("sample from a StreamReplay without complete transitions")
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        g = self._tree.sample(batch_size, self.rng)
        out = self.window(g)
        prob = torch.from_numpy(self._tree.get(g) / self._tree.total)
        out["weight"] = importance_weights(prob, self._count, beta).float()
        return out
