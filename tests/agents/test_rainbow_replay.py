"""Rainbow's prioritised replay (agents/rainbow/replay.py): the sum tree's proportional
sampling, n-step windows cut by terminals and segments, overwriting, importance weights
and exact frame-stack reconstruction from per-row newest frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala_rl.agents.rainbow.replay import PRIORITY_EPS, StreamReplay, SumTree

# Upper 0.1% points of the chi-square distribution (scipy.stats.chi2.ppf(0.999, dof)).
CHI2_999 = {3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322}


def chi_square(counts: np.ndarray, weights: np.ndarray) -> float:
    expected = counts.sum() * weights / weights.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# ----------------------------------------------------------------------------- SumTree


def test_sum_tree_sets_gets_and_tracks_total_and_max_through_decreases():
    tree = SumTree(5)  # not a power of two: leaves at two depths
    tree.set([0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert tree.total == 15.0 and tree.max_value == 5.0
    assert tree.get([4, 0]).tolist() == [5.0, 1.0]
    tree.set([4], [0.5])  # the maximum decreases
    assert tree.total == 10.5 and tree.max_value == 4.0
    tree.set([3, 1, 3], [9.0, 0.0, 0.25])  # a repeated index: the last value wins
    assert tree.get([3, 1]).tolist() == [0.25, 0.0]
    assert tree.total == pytest.approx(1.0 + 3.0 + 0.25 + 0.5) and tree.max_value == 3.0
    tree.set(np.arange(5), 0.0)
    assert tree.total == 0.0 and tree.max_value == 0.0
    with pytest.raises(RuntimeError):
        tree.sample(4, np.random.default_rng(0))
    with pytest.raises(ValueError):
        tree.set([0], [float("nan")])
    with pytest.raises(ValueError):
        tree.set([0], [-1.0])
    with pytest.raises(IndexError):
        tree.set([5], [1.0])


@pytest.mark.parametrize("capacity", [1, 7, 8, 13])
def test_sum_tree_internal_sums_match_a_brute_force_after_random_updates(capacity):
    rng = np.random.default_rng(capacity)
    tree, values = SumTree(capacity), np.zeros(capacity)
    for _ in range(200):
        idx = rng.integers(0, capacity, size=rng.integers(1, 6))
        val = rng.random(idx.size) * (rng.random(idx.size) < 0.8)
        tree.set(idx, val)
        for i, v in zip(idx, val):
            values[i] = v
        assert np.array_equal(tree.get(np.arange(capacity)), values)
        assert tree.total == pytest.approx(values.sum(), rel=1e-12) and tree.max_value == values.max()
        if values.sum() > 0:
            assert (values[tree.sample(16, rng)] > 0).all()


def test_sum_tree_samples_in_proportion_to_values_and_never_a_zero():
    values = np.array([0.0, 1.0, 2.0, 0.0, 3.0, 0.5, 0.0, 4.0, 0.0, 1.5, 0.0])  # capacity 11
    tree = SumTree(values.size)
    tree.set(np.arange(values.size), values)
    rng = np.random.default_rng(0)
    drawn = np.concatenate([tree.sample(32, rng) for _ in range(1000)])
    counts = np.bincount(drawn, minlength=values.size)
    assert counts[values == 0].sum() == 0
    positive = values > 0
    assert chi_square(counts[positive], values[positive]) < CHI2_999[int(positive.sum()) - 1]
    assert np.allclose(counts / counts.sum(), values / values.sum(), atol=0.005)


def test_sum_tree_never_returns_a_zero_value_even_at_the_top_of_the_mass():
    tree = SumTree(6)
    tree.set([0, 2], [1e-300, 1.0])  # then zeros to the right of every positive leaf
    targets = np.array([0.0, 0.5, 1.0, 1.0 + 1e-300, 2.0, np.nextafter(1.0, 2.0)])
    assert set(tree.find(targets).tolist()) <= {0, 2}
    assert set(tree.sample(64, np.random.default_rng(1)).tolist()) <= {0, 2}


# ----------------------------------------------------------------------------- helpers


def toy_rows(obs, first, reward, terminal, bootstrap=None, action=None):
    """Rows for a scalar-observation stream: obs [T+1, 1] float32 holding step ids."""
    t1 = len(obs)
    return {
        "obs": np.asarray(obs, dtype=np.float32).reshape(t1, 1),
        "first": np.asarray(first, dtype=bool),
        "last_action": np.zeros(t1, dtype=np.int64),  # ignored
        "reward": np.asarray(reward, dtype=np.float32),
        "terminal": np.asarray(terminal, dtype=bool),
        "bootstrap": np.zeros(t1, np.float32) if bootstrap is None else np.asarray(bootstrap, np.float32),
        "action": np.asarray(obs, dtype=np.int64) * 10 if action is None else np.asarray(action, dtype=np.int64),
    }


def by_state(replay: StreamReplay, indices) -> dict[int, dict]:
    """window(indices) keyed by the state's observation (the toy stream's step id)."""
    out = replay.window(indices)
    return {int(out["obs"][i, 0]): {k: v[i] for k, v in out.items()} for i in range(len(indices))}


def chain_replay(**kwargs) -> StreamReplay:
    args = dict(capacity=64, num_streams=1, obs_shape=(1,), obs_dtype=np.float32, n_step=3)
    args.update(kwargs)
    return StreamReplay(**args)


# Two unrolls of T = 6 of one stream: an episode terminates into row 4 (row 4 is the next
# episode's reset), and one is truncated into row 8 with V(x_final) = 0.5.
UNROLL_1 = toy_rows(obs=[0, 1, 2, 3, 4, 5, 6], first=[1, 0, 0, 0, 1, 0, 0], reward=[0, 1, 2, 3, 4, 5, 6],
                    terminal=[0, 0, 0, 0, 1, 0, 0])
UNROLL_2 = toy_rows(obs=[6, 7, 8, 9, 10, 11, 12], first=[0, 0, 1, 0, 0, 0, 0], reward=[6, 7, 8, 9, 10, 11, 12],
                    terminal=[0, 0, 1, 0, 0, 0, 0], bootstrap=[0, 0, 0.5, 0, 0, 0, 0])


# ----------------------------------------------------------------------------- n-step windows


def test_n_step_windows_stop_at_a_termination_and_at_a_truncation():
    replay = chain_replay()
    done = replay.add_unroll(0, UNROLL_1)
    assert done.tolist() == [0, 1, 2, 3]  # one ring: global index = the step here
    done = replay.add_unroll(0, UNROLL_2)  # row 0 repeats row 6: appended from row 1
    assert done.tolist() == [4, 5, 6, 7, 8, 9]
    assert len(replay) == 10
    w = by_state(replay, np.arange(10))
    expect = {  # state: (rewards, terminals, bootstraps, next_obs)
        0: ([1, 2, 3], [0, 0, 0], [0, 0, 0], 3),
        1: ([2, 3, 4], [0, 0, 1], [0, 0, 0], 4),
        2: ([3, 4, 0], [0, 1, 1], [0, 0, 0], 4),
        3: ([4, 0, 0], [1, 1, 1], [0, 0, 0], 4),
        4: ([5, 6, 7], [0, 0, 0], [0, 0, 0], 7),
        5: ([6, 7, 8], [0, 0, 1], [0, 0, 0.5], 8),
        6: ([7, 8, 0], [0, 1, 1], [0, 0.5, 0], 8),
        7: ([8, 0, 0], [1, 1, 1], [0.5, 0, 0], 8),
        8: ([9, 10, 11], [0, 0, 0], [0, 0, 0], 11),
        9: ([10, 11, 12], [0, 0, 0], [0, 0, 0], 12),
    }
    for p, (rewards, terminals, bootstraps, nxt) in expect.items():
        assert w[p]["rewards"].tolist() == rewards, p
        assert w[p]["terminals"].tolist() == [bool(t) for t in terminals], p
        assert w[p]["bootstraps"].tolist() == bootstraps, p
        assert w[p]["next_obs"].tolist() == [nxt], p
        assert w[p]["action"].item() == 10 * p and w[p]["index"].item() == p
    out = replay.window([0])
    assert out["rewards"].dtype == torch.float32 and out["terminals"].dtype == torch.bool
    assert out["index"].dtype == torch.int64 and out["obs"].shape == (1, 1)


def test_a_transition_near_the_end_of_an_unroll_completes_when_the_next_unroll_arrives():
    replay = chain_replay()
    replay.add_unroll(0, UNROLL_1)
    with pytest.raises(ValueError, match="not sampleable"):
        replay.window([4])  # rows 5, 6 stored; row 7 not yet
    assert replay.priorities([4, 5, 6]).tolist() == [0, 0, 0]
    assert set(replay.sample(64, beta=0.4)["index"].tolist()) <= {0, 1, 2, 3}
    assert replay.add_unroll(0, UNROLL_2)[:2].tolist() == [4, 5]
    assert by_state(replay, [4])[4]["rewards"].tolist() == [5, 6, 7]


def test_a_unroll_that_does_not_continue_starts_a_segment_no_window_crosses():
    replay = chain_replay()
    replay.add_unroll(0, UNROLL_1)
    replay.add_unroll(0, UNROLL_2)
    # a gap: steps 13..19 were lost; the stream goes on at step 20 (mid-episode), stored at rows 13..16
    gap = toy_rows(obs=[20, 21, 22, 23], first=[0, 1, 0, 0], reward=[20, 21, 22, 23], terminal=[0, 1, 0, 0])
    assert replay.add_unroll(0, gap).tolist() == [13]  # state 20: its window ends at the terminal into 21
    assert by_state(replay, [13])[20]["rewards"].tolist() == [21, 0, 0]
    # the old segment's states 10 and 11 would need rows 13.. of the new segment: never complete
    assert replay.priorities([10, 11, 12, 14]).tolist() == [0, 0, 0, 0]
    done = replay.add_unroll(0, toy_rows(obs=[23, 24, 25], first=[0, 0, 0], reward=[23, 24, 25], terminal=[0, 0, 0]))
    assert done.tolist() == [14, 15]  # states 21 and 22
    w = by_state(replay, done)
    assert w[21]["rewards"].tolist() == [22, 23, 24] and w[22]["rewards"].tolist() == [23, 24, 25]
    assert replay.priorities([10, 11, 12]).tolist() == [0, 0, 0]
    for _ in range(20):
        batch = replay.sample(32, beta=0.5)
        states = batch["obs"][:, 0]
        assert not torch.isin(states, torch.tensor([10.0, 11.0, 12.0, 23.0, 24.0, 25.0])).any()
        # a window never mixes segments: rewards are the state's successors
        succ = batch["rewards"][:, 0]
        assert torch.equal(succ, states + 1)


def test_overwritten_transitions_leave_the_tree_and_are_never_sampled():
    replay = chain_replay(capacity=12, n_step=2)  # one ring of 12 rows
    step, rows_in = 0, []
    for _ in range(6):  # unrolls of T = 5: 31 rows written, the ring wraps twice
        obs = np.arange(step, step + 6)
        replay.add_unroll(0, toy_rows(obs=obs, first=obs == 0, reward=obs, terminal=np.zeros(6)))
        step += 5
        newest = step
        stored = set(range(max(0, newest - 11), newest + 1))
        complete = {p for p in stored if p + 2 <= newest}
        assert len(replay) == len(complete)
        for _ in range(10):
            got = set(replay.sample(16, beta=1.0)["obs"][:, 0].long().tolist())
            assert got <= complete
        rows_in.append(complete)
    assert min(rows_in[-1]) == 19 and len(replay) == 10
    live = replay.priorities(np.arange(12)) > 0
    assert live.sum() == 10  # the two newest states wait for their windows


def test_the_ring_refuses_streams_too_small_for_a_window_and_a_stack():
    with pytest.raises(ValueError, match="at least n_step \\+ frame_stack \\+ 1 = 8"):
        StreamReplay(capacity=4 * 7, num_streams=4, obs_shape=(4, 2, 2), obs_dtype=np.uint8, n_step=3, frame_stack=4)
    StreamReplay(capacity=4 * 8, num_streams=4, obs_shape=(4, 2, 2), obs_dtype=np.uint8, n_step=3, frame_stack=4)
    with pytest.raises(ValueError, match="multiple of frame_stack"):
        StreamReplay(capacity=64, num_streams=1, obs_shape=(3, 2, 2), obs_dtype=np.uint8, n_step=3, frame_stack=2)


def test_streams_are_kept_apart():
    replay = chain_replay(capacity=40, num_streams=2)  # rings of 20 rows: stream 1 starts at row 20
    assert replay.add_unroll(1, UNROLL_1).tolist() == [20, 21, 22, 23]
    assert replay.add_unroll(0, UNROLL_1).tolist() == [0, 1, 2, 3]
    # stream 0 continues with UNROLL_2; stream 1 gets something else: a new segment
    other = toy_rows(obs=[50, 51, 52, 53, 54], first=[1, 0, 0, 0, 0], reward=[0, 1, 2, 3, 4], terminal=[0] * 5)
    assert replay.add_unroll(1, other).tolist() == [27, 28]
    assert replay.add_unroll(0, UNROLL_2).tolist() == [4, 5, 6, 7, 8, 9]
    assert by_state(replay, [27])[50]["rewards"].tolist() == [1, 2, 3]


# ----------------------------------------------------------------------------- priorities


def test_importance_weights_hand_case():
    replay = chain_replay(alpha=0.5)
    replay.add_unroll(0, toy_rows(obs=[0, 1, 2, 3, 4, 5], first=[1, 0, 0, 0, 0, 0], reward=[0] * 6,
                                  terminal=[0] * 6))
    assert len(replay) == 3  # states 0, 1, 2
    assert replay.max_priority == 1.0
    replay.set_priorities([0, 1, 2], [1.0, 4.0, 16.0])  # p^0.5 = 1, 2, 4; P = 1/7, 2/7, 4/7
    assert replay.priorities([0, 1, 2]).tolist() == [1.0, 2.0, 4.0]
    assert replay.max_priority == pytest.approx(16.0)
    batch = replay.sample(32, beta=0.5)  # every stratum of 7/32 < 1: index 0 is always drawn
    # w_i = (N P_i)^-beta / max = (P_i / P_0)^-0.5: 1, 2^-0.5, 4^-0.5
    expect = {0: 1.0, 1: 2 ** -0.5, 2: 0.5}
    assert 0 in batch["index"].tolist()
    for i, w in zip(batch["index"].tolist(), batch["weight"].tolist()):
        assert w == pytest.approx(expect[i], rel=1e-6)
    assert batch["weight"].dtype == torch.float32
    # a priority of 0 is clipped to eps, so the transition stays sampleable; NaN is refused
    replay.set_priorities(torch.tensor([1]), torch.tensor([0.0]))
    assert replay.priorities([1]).item() == pytest.approx(PRIORITY_EPS ** 0.5)
    with pytest.raises(ValueError, match="finite"):
        replay.set_priorities([0], [float("nan")])
    # an index that is not sampleable (here: incomplete) is skipped
    replay.set_priorities([4], [3.0])
    assert replay.priorities([4]).item() == 0.0


def test_stream_replay_samples_in_proportion_to_priority_to_the_alpha():
    alpha = 0.6
    replay = chain_replay(capacity=32, n_step=1, alpha=alpha, seed=3)
    done = replay.add_unroll(0, toy_rows(obs=np.arange(7), first=[1] + [0] * 6, reward=[0] * 7, terminal=[0] * 7))
    priorities = np.array([0.5, 1.0, 2.0, 3.0, 5.0, 8.0])
    replay.set_priorities(done, priorities)
    counts = np.zeros(6)
    for _ in range(500):
        idx = replay.sample(32, beta=0.4)["index"].numpy()
        counts += np.bincount(idx, minlength=6)
    weights = priorities ** alpha
    assert chi_square(counts, weights) < CHI2_999[5]
    assert np.allclose(counts / counts.sum(), weights / weights.sum(), atol=0.005)


# ----------------------------------------------------------------------------- frame stacks


def synthetic_stream(num_steps: int, stack: int, pad: str, rng, channels: int = 1):
    """One environment's steps, stacked like FrameStackObservation (pad "reset": the reset
    frame repeated; "zero": zeros). Returns per step: stacked obs, first, terminal, reward."""
    frames, obs, first, terminal = [], [], [], []
    history = None
    for t in range(num_steps):
        new_episode = t == 0 or rng.random() < 0.15  # many short episodes, some shorter than the stack
        frame = rng.integers(0, 256, size=(channels, 3, 2), dtype=np.uint8)
        if new_episode:
            history = [frame if pad == "reset" else np.zeros_like(frame)] * (stack - 1) + [frame]
        else:
            history = history[1:] + [frame]
        obs.append(np.concatenate(history, axis=0))
        first.append(new_episode)
        terminal.append(new_episode and t > 0)
        frames.append(frame)
    return np.stack(obs), np.array(first), np.array(terminal), np.arange(num_steps, dtype=np.float32)


def unroll_of(obs, first, terminal, reward, start, length):
    sl = slice(start, start + length + 1)
    t1 = len(obs[sl])
    return {"obs": obs[sl], "first": first[sl], "terminal": terminal[sl], "reward": reward[sl],
            "bootstrap": np.zeros(t1, np.float32), "action": np.arange(start, start + t1, dtype=np.int64),
            "step": np.arange(start, start + t1, dtype=np.int64)}


@pytest.mark.parametrize("pad,channels,ring", [("reset", 1, 40), ("zero", 1, 40), ("reset", 3, 40), ("reset", 1, 8)])
def test_frame_stacks_are_rebuilt_exactly_across_unrolls_segments_and_wraps(pad, channels, ring):
    """ring 8 = n + F + 1, the least allowed: a transition can complete with its oldest frames gone already."""
    stack, n = 4, 3
    rng = np.random.default_rng(7)
    obs, first, terminal, reward = synthetic_stream(400, stack, pad, rng, channels)
    replay = StreamReplay(capacity=2 * ring, num_streams=2, obs_shape=obs.shape[1:], obs_dtype=np.uint8,
                          n_step=n, frame_stack=stack, record_fields={"step": ((), np.int64)})
    # stream 0 plays the steps in unrolls of T = 5, with a gap (a new segment mid-episode);
    # stream 1 plays them from step 3 with T = 7, so its rows wrap at other places
    plans = {0: [(s, 5) for s in range(0, 150, 5)] + [(s, 5) for s in range(163, 350, 5)],
             1: [(s, 7) for s in range(3, 380, 7)]}
    checked = set()
    for k in range(max(len(p) for p in plans.values())):
        for stream, plan in plans.items():
            if k >= len(plan):
                continue
            done = replay.add_unroll(stream, unroll_of(obs, first, terminal, reward, *plan[k]))
            if done.size:
                w = replay.window(done)
                steps = w["record_t:step"].numpy()
                assert np.array_equal(w["obs"].numpy(), obs[steps])
                assert np.array_equal(w["next_obs"].numpy(), obs[w["record_next:step"].numpy()])
        live = np.flatnonzero(replay.priorities(np.arange(replay.capacity)) > 0)
        assert live.size == len(replay)
        w = replay.window(live)  # every sampleable transition, after every round of unrolls
        steps = w["record_t:step"].numpy()
        assert np.array_equal(w["obs"].numpy(), obs[steps])
        assert np.array_equal(w["next_obs"].numpy(), obs[w["record_next:step"].numpy()])
        assert np.array_equal(w["rewards"][:, 0].numpy(), reward[steps + 1])
        checked.update(steps.tolist())
        assert replay.side_entries <= 2 * ring  # bounded: at most one per stored row
    assert len(checked) > (300 if ring == 40 else 50)
    # the side store holds the anchors still in the rings, no more
    anchors = 0
    for stream in range(2):
        newest = int(replay._written[stream]) - 1
        rows = np.arange(newest - ring + 1, newest + 1) % ring + ring * stream
        anchors += int((replay._side_slot[rows] >= 0).sum())
    assert replay.side_entries == anchors


def test_a_frame_stack_reaching_into_overwritten_rows_is_not_sampled():
    stack = 4
    obs, first, terminal, reward = synthetic_stream(60, stack, "reset", np.random.default_rng(1))
    first[:] = False
    first[0] = True  # one long episode: every stack needs three older rows
    terminal[:] = False
    replay = StreamReplay(capacity=20, num_streams=1, obs_shape=obs.shape[1:], obs_dtype=np.uint8, n_step=2,
                          frame_stack=stack, record_fields={"step": ((), np.int64)})
    for start in range(0, 50, 5):
        replay.add_unroll(0, unroll_of(obs, first, terminal, reward, start, 5))
    # rows hold steps 31..50; states 31..33 would need frames of steps 28..30 (overwritten)
    live = np.flatnonzero(replay.priorities(np.arange(20)) > 0)
    steps = sorted(replay.window(live)["record_t:step"].tolist())
    assert steps == list(range(34, 49))
    assert len(replay) == 15


def test_atari_rows_store_one_frame_not_the_stack():
    per_row = StreamReplay.bytes_per_row((4, 84, 84), np.uint8, frame_stack=4)
    assert 84 * 84 < per_row < 84 * 84 + 100
    assert StreamReplay.bytes_per_row((4, 84, 84), np.uint8, frame_stack=1) > 4 * 84 * 84
    with_q = StreamReplay.bytes_per_row((4, 84, 84), np.uint8, 4, {"q": ((18,), torch.float32)})
    assert with_q == per_row + 18 * 4
    replay = StreamReplay(capacity=1000, num_streams=4, obs_shape=(4, 84, 84), obs_dtype=np.uint8, n_step=3,
                          frame_stack=4, record_fields={"q": ((18,), torch.float32)})
    rows_part = replay.capacity * with_q
    assert rows_part <= replay.nbytes <= rows_part + 4 * 4 * 84 * 84 + 1000  # + one last obs per stream


# ----------------------------------------------------------------------------- saving (--resume)


def stacked_replay(seed: int, capacity: int = 80) -> StreamReplay:
    return StreamReplay(capacity=capacity, num_streams=2, obs_shape=(4, 3, 2), obs_dtype=np.uint8, n_step=3,
                        frame_stack=4, record_fields={"step": ((), np.int64)}, seed=seed)


def test_a_saved_replay_restored_continues_exactly_as_the_original(tmp_path):
    from impala_rl.checkpoint import load_arrays, save_arrays

    rng = np.random.default_rng(3)
    obs, first, terminal, reward = synthetic_stream(300, 4, "reset", rng)
    plan = [(s, 5) for s in range(0, 295, 5)]

    def feed(replay, part):
        for start, length in part:  # both streams, the second 2 steps behind; priorities by step
            for stream, offset in ((0, 0), (1, 2)):
                done = replay.add_unroll(stream, unroll_of(obs, first, terminal, reward, start + offset, length))
                replay.set_priorities(done, 1.0 + (start + offset) % 7)

    original = stacked_replay(seed=1)
    feed(original, plan[:30])  # past the rings' wrap (40 rows each) and with several episode anchors
    assert original.side_entries > 0 and len(original) > 0
    save_arrays(tmp_path / "replay.npz", original.state_dict())
    restored = stacked_replay(seed=99)  # another sampling seed: the generator's state comes back too
    restored.load_state_dict(load_arrays(tmp_path / "replay.npz"))
    for replay in (original, restored):
        feed(replay, plan[30:40])
    a, b = original.sample(16, beta=0.5), restored.sample(16, beta=0.5)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(original) == len(restored) and original.side_entries == restored.side_entries
    everything = np.arange(original.capacity)
    assert np.array_equal(original.priorities(everything), restored.priorities(everything))
    restored.add_unroll(0, unroll_of(obs, first, terminal, reward, 200, 5))  # its own arrays: the original keeps its
    assert not np.array_equal(original._frames, restored._frames)


def test_a_saved_replay_of_another_layout_is_refused_and_nothing_changes():
    rng = np.random.default_rng(4)
    obs, first, terminal, reward = synthetic_stream(60, 4, "reset", rng)
    source = stacked_replay(seed=1, capacity=120)  # rings of 60 rows, not 40
    source.add_unroll(0, unroll_of(obs, first, terminal, reward, 0, 20))
    target = stacked_replay(seed=1)
    before = {k: np.copy(v) for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match="the saved replay's frames is uint8\\[120, 1, 3, 2\\], this run's uint8\\[80,"):
        target.load_state_dict(source.state_dict())
    other = StreamReplay(capacity=80, num_streams=2, obs_shape=(4, 3, 2), obs_dtype=np.uint8, n_step=3,
                         frame_stack=4, record_fields={}, seed=1)
    with pytest.raises(ValueError, match="record:step"):
        target.load_state_dict(other.state_dict())
    assert all(np.array_equal(before[k], v) for k, v in target.state_dict().items())
