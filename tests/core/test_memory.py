"""MERLIN's external memory: hand-computed reads, write choices, usage and retroactive sums."""

import math

import pytest
import torch

from impala_rl.core.memory import (
    MemoryState,
    cosine_read,
    fill_then_least_used_write_weights,
    least_used_write_weights,
    positive_sharpness,
    reset,
    sequential_write_weights,
    unit_rows,
    update,
    update_usage,
    write,
)


def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def _write_sequence(zs, slots, gamma, write_fn=None):
    """Write ``zs [T, B, Z]`` one step at a time with :func:`update`; return the final state."""
    steps, batch, half = zs.shape
    state = MemoryState.initial(batch, slots, 2 * half, dtype=zs.dtype)
    no_reads = torch.zeros(batch, 0, slots, dtype=zs.dtype)
    for t in range(steps):
        if write_fn is None:
            weights = sequential_write_weights(state.step, slots, dtype=zs.dtype)
        else:
            weights = write_fn(state)
        state = update(state, zs[t], weights, no_reads, gamma)
    return state


# ---------------------------------------------------------------- reading


def test_positive_sharpness_is_one_plus_softplus():
    out = positive_sharpness(_t([0.0, -100.0, 3.0]))
    torch.testing.assert_close(out, _t([1.0 + math.log(2.0), 1.0, 1.0 + math.log1p(math.exp(3.0))]))


def test_cosine_read_hand_case():
    # Slots [1, 0] and [1, 1]; key [2, 0]: cosines 1 and 1/sqrt(2); sharpness 2.
    memory = _t([[[1.0, 0.0], [1.0, 1.0]]])
    keys = _t([[[2.0, 0.0]]])
    read, weights = cosine_read(memory, keys, _t([[2.0]]), eps=0.0)
    a, b = math.exp(2.0), math.exp(2.0 / math.sqrt(2.0))
    expected_w = _t([[[a / (a + b), b / (a + b)]]])
    torch.testing.assert_close(weights, expected_w)
    torch.testing.assert_close(read, _t([[[1.0, b / (a + b)]]]))


def test_unit_rows_hand_case_and_a_shared_normalisation_reads_the_same():
    torch.testing.assert_close(unit_rows(_t([[3.0, 4.0], [0.0, 0.0]]), eps=0.0 + 1e-30),
                               _t([[0.6, 0.8], [0.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 5, 6, generator=g, requires_grad=True)
    keys, sharpness = torch.randn(2, 3, 6, generator=g), 1.0 + torch.rand(2, 3, generator=g)
    read, weights = cosine_read(memory, keys, sharpness)
    shared_read, shared_weights = cosine_read(memory, keys, sharpness, unit_memory=unit_rows(memory))
    torch.testing.assert_close(shared_read, read)
    torch.testing.assert_close(shared_weights, weights)
    (grad,) = torch.autograd.grad(read.sum(), memory)
    (shared_grad,) = torch.autograd.grad(shared_read.sum(), memory)
    torch.testing.assert_close(shared_grad, grad)


def test_written_vector_is_read_back_by_an_equal_key():
    # Orthogonal latents, gamma 0: the retro-half is the next latent. Rows after 3 writes:
    # [e0, e1], [e1, e2], [e2, 0], and an empty fourth slot.
    zs = torch.eye(3).unsqueeze(1)  # [T=3, B=1, Z=3]
    state = _write_sequence(zs, slots=4, gamma=0.0)
    expected_memory = _t([[[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0], [0] * 6]])
    torch.testing.assert_close(state.memory, expected_memory)
    keys = state.memory[:, 1:2, :].clone()  # [B=1, K=1, W]
    read, weights = cosine_read(state.memory, keys, _t([[50.0]]))
    assert weights[0, 0, 1] > 0.999
    torch.testing.assert_close(read, keys, atol=1e-3, rtol=0)


def test_cosine_read_of_a_zero_memory_is_uniform_with_finite_gradients():
    memory = torch.zeros(2, 5, 4, requires_grad=True)
    keys = torch.randn(2, 3, 4, requires_grad=True)
    sharpness = positive_sharpness(torch.zeros(2, 3, requires_grad=True))
    read, weights = cosine_read(memory, keys, sharpness)
    torch.testing.assert_close(weights, torch.full((2, 3, 5), 0.2))
    assert torch.all(read == 0)
    (read.sum() + weights.square().sum()).backward()
    assert torch.isfinite(memory.grad).all() and torch.isfinite(keys.grad).all()
    # A zero key against a non-zero memory: cosine 0 everywhere, uniform weights, finite grads.
    memory = torch.randn(1, 3, 4, requires_grad=True)
    keys = torch.zeros(1, 1, 4, requires_grad=True)
    read, weights = cosine_read(memory, keys, _t([[5.0]]))
    torch.testing.assert_close(weights, torch.full((1, 1, 3), 1.0 / 3.0))
    read.sum().backward()
    assert torch.isfinite(keys.grad).all()


def test_cosine_read_shape_errors():
    memory = torch.zeros(2, 5, 4)
    with pytest.raises(ValueError, match=r"keys has shape \(2, 3, 6\).*W = 4"):
        cosine_read(memory, torch.zeros(2, 3, 6), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"keys has shape \(1, 3, 4\).*B = 2"):
        cosine_read(memory, torch.zeros(1, 3, 4), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"sharpness has shape \(2,\).*\[B, K\] = \(2, 3\)"):
        cosine_read(memory, torch.zeros(2, 3, 4), torch.ones(2))
    with pytest.raises(ValueError, match=r"memory has shape \(5, 4\); expected \[B, N, W\]"):
        cosine_read(torch.zeros(5, 4), torch.zeros(2, 3, 4), torch.ones(2, 3))


# ---------------------------------------------------------------- write weights and usage


def test_least_used_picks_the_minimum_and_the_lowest_index_on_ties():
    usage = _t([[3.0, 1.0, 2.0], [0.0, 0.0, 5.0], [2.0, 2.0, 2.0], [4.0, 0.5, 0.5]])
    out = least_used_write_weights(usage)
    expected = _t([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert out.dtype == usage.dtype
    with pytest.raises(ValueError, match=r"usage has shape \(3,\); expected \[B, N\]"):
        least_used_write_weights(torch.zeros(3))


def test_sequential_write_weights_wrap_around():
    out = sequential_write_weights(torch.tensor([0, 2, 3, 7]), 3)
    expected = _t([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected an integer dtype"):
        sequential_write_weights(_t([0.0]), 3)
    with pytest.raises(ValueError, match="num_slots must be at least 1"):
        sequential_write_weights(torch.tensor([0]), 0)


def test_fill_then_least_used_is_sequential_until_the_memory_is_full():
    # Row 0 is filling (step 1 < 3): slot 1, though slot 2 is less used. Rows 1 and 2 are
    # full (steps 3 and 10): the least used slot.
    usage = _t([[1.0, 0.5, 0.0], [2.0, 0.5, 1.0], [0.0, 0.0, 1.0]])
    out = fill_then_least_used_write_weights(usage, torch.tensor([1, 3, 10]))
    torch.testing.assert_close(out, _t([[0, 1, 0], [0, 1, 0], [1, 0, 0]]), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"step has shape \(2,\).*B = 3"):
        fill_then_least_used_write_weights(usage, torch.tensor([1, 3]))


def test_update_usage_hand_case():
    # decay 0.5: [2, 0.5, 3] -> [1, 0.25, 1.5]; reads add [0.5, 0.75, 0.75] -> [1.5, 1, 2.25];
    # slot 2 is written: one more use -> 3.25.
    usage = _t([[2.0, 0.5, 3.0]])
    reads = _t([[[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]])
    out = update_usage(usage, reads, _t([[0.0, 0.0, 1.0]]), decay=0.5)
    torch.testing.assert_close(out, _t([[1.5, 1.0, 3.25]]))
    with pytest.raises(ValueError, match=r"read_weights has shape \(1, 2, 4\)"):
        update_usage(usage, torch.zeros(1, 2, 4), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"write_weights has shape \(1, 4\)"):
        update_usage(usage, reads, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="decay must be in"):
        update_usage(usage, reads, torch.zeros(1, 3), decay=1.5)


def test_least_used_writes_fill_empty_slots_then_replace_the_least_read():
    slots = 3
    state = MemoryState.initial(1, slots, 2)
    no_reads = torch.zeros(1, 0, slots)
    chosen = []
    for t in range(3):
        w = least_used_write_weights(state.usage)
        chosen.append(int(w.argmax()))
        state = update(state, _t([[float(t + 1)]]), w, no_reads, gamma=0.9)
    assert chosen == [0, 1, 2]
    torch.testing.assert_close(state.usage, _t([[1.0, 1.0, 1.0]]))
    # Without reads a full memory is overwritten in turn, oldest first.
    for t in range(3, 7):
        w = least_used_write_weights(state.usage)
        chosen.append(int(w.argmax()))
        state = update(state, _t([[float(t + 1)]]), w, no_reads, gamma=0.9)
    assert chosen == [0, 1, 2, 0, 1, 2, 0]
    torch.testing.assert_close(state.usage, _t([[3.0, 2.0, 2.0]]))
    # A step that reads slot 1 (0.75) and slot 2 (0.25) and writes slot 1, the least used
    # (tie, lowest index). Then slot 2, read least, is the next to go, not the fresh slot 1.
    state = update(state, _t([[8.0]]), least_used_write_weights(state.usage),
                   _t([[[0.0, 0.75, 0.25]]]), gamma=0.9)
    torch.testing.assert_close(state.usage, _t([[3.0, 3.75, 2.25]]))
    torch.testing.assert_close(least_used_write_weights(state.usage), _t([[0.0, 0.0, 1.0]]))


# ---------------------------------------------------------------- writing and the retroactive half


def test_retroactive_half_hand_case():
    # gamma 0.5, sequential writes of z0..z3 = [1, 0], [0, 1], [2, 0], [0, 4] into 4 slots.
    # Slot k's retro-half = sum_{j=k+1}^{3} (1 - gamma) gamma^(j-k-1) z_j:
    #   slot 0: 0.5 z1 + 0.25 z2 + 0.125 z3 = [0.5, 1.0]
    #   slot 1: 0.5 z2 + 0.25 z3            = [1.0, 1.0]
    #   slot 2: 0.5 z3                      = [0.0, 2.0]
    #   slot 3: (just written)              = [0.0, 0.0]
    zs = _t([[[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 0.0]], [[0.0, 4.0]]])
    state = _write_sequence(zs, slots=4, gamma=0.5)
    expected = _t([[[1, 0, 0.5, 1], [0, 1, 1, 1], [2, 0, 0, 2], [0, 4, 0, 0]]])
    torch.testing.assert_close(state.memory, expected)
    torch.testing.assert_close(state.retro_weights, _t([[0.125, 0.25, 0.5, 0.0]]))
    torch.testing.assert_close(state.write_weights, _t([[0.0, 0.0, 0.0, 1.0]]))
    assert state.step.tolist() == [4]


def test_retroactive_half_matches_the_literal_sum_with_overwrites():
    # 3 slots, 8 sequential writes: every slot is overwritten; each row must hold the latent
    # of its last write k and sum_{j=k+1}^{T-1} (1 - gamma) gamma^(j-k-1) z_j after it.
    g = torch.Generator().manual_seed(0)
    steps, batch, half, slots, gamma = 8, 2, 3, 3, 0.7
    zs = torch.randn(steps, batch, half, generator=g, dtype=torch.float64)
    state = _write_sequence(zs, slots=slots, gamma=gamma)
    for b in range(batch):
        for i in range(slots):
            k = max(t for t in range(steps) if t % slots == i)
            retro = sum((1 - gamma) * gamma ** (j - k - 1) * zs[j, b] for j in range(k + 1, steps))
            retro = retro if torch.is_tensor(retro) else torch.zeros(half, dtype=torch.float64)
            torch.testing.assert_close(state.memory[b, i], torch.cat([zs[k, b], retro]))


def test_write_with_one_hot_weights_replaces_the_row_and_gradients_reach_z():
    memory = torch.arange(12.0).view(1, 3, 4)
    z = _t([[7.0, 8.0]]).requires_grad_()
    w = _t([[0.0, 1.0, 0.0]])
    prev = _t([[1.0, 0.0, 0.0]])
    retro = _t([[0.0, 0.0, 0.4]])
    new, new_retro = write(memory, w, z, prev, retro, gamma=0.5)
    # retro weights: (1 - w) * (0.5 * [0, 0, 0.4] + 0.5 * [1, 0, 0]) = [0.5, 0, 0.2]
    torch.testing.assert_close(new_retro, _t([[0.5, 0.0, 0.2]]))
    expected = _t([[[0, 1, 2 + 3.5, 3 + 4], [7, 8, 0, 0], [8, 9, 10 + 1.4, 11 + 1.6]]])
    torch.testing.assert_close(new, expected)
    new.sum().backward()
    # d/dz: 1 (z-half of slot 1) + 0.5 + 0.2 (retro-halves of slots 0 and 2) per component.
    torch.testing.assert_close(z.grad, _t([[1.7, 1.7]]))


def test_write_shape_errors():
    memory = torch.zeros(2, 3, 4)
    ok = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"expected \[B, N, 2Z\] \(even width\)"):
        write(torch.zeros(2, 3, 5), ok, torch.zeros(2, 2), ok, ok, 0.9)
    with pytest.raises(ValueError, match=r"z has shape \(2, 4\).*expected z \[B, Z\] = \(2, 2\)"):
        write(memory, ok, torch.zeros(2, 4), ok, ok, 0.9)
    with pytest.raises(ValueError, match=r"prev_write_weights has shape \(2, 4\)"):
        write(memory, ok, torch.zeros(2, 2), torch.zeros(2, 4), ok, 0.9)
    with pytest.raises(ValueError, match=r"retro_weights has shape \(3, 3\)"):
        write(memory, ok, torch.zeros(2, 2), ok, torch.zeros(3, 3), 0.9)
    with pytest.raises(ValueError, match="gamma must be in"):
        write(memory, ok, torch.zeros(2, 2), ok, ok, 1.2)


# ---------------------------------------------------------------- state and reset


def test_initial_state_shapes_and_dtypes():
    state = MemoryState.initial(2, 5, 6)
    assert state.memory.shape == (2, 5, 6)
    for x in (state.usage, state.write_weights, state.retro_weights):
        assert x.shape == (2, 5) and x.dtype == torch.float32
    assert state.step.shape == (2,) and state.step.dtype == torch.int64
    assert all(bool((x == 0).all()) for x in state)
    with pytest.raises(ValueError, match="width must be 2Z"):
        MemoryState.initial(2, 5, 7)


def test_reset_zeros_only_the_flagged_rows():
    zs = torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(1))
    state = _write_sequence(zs, slots=4, gamma=0.9)
    memory = state.memory.clone()
    memory[1, 0, 0] = float("nan")  # must not survive the reset of row 1
    state = state._replace(memory=memory)
    first = torch.tensor([False, True, False])
    out = state.reset(first)
    for before, after in zip(state, out):
        assert bool((after[1] == 0).all())
        assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
        assert after.dtype == before.dtype
    assert out.step.tolist() == [5, 0, 5]
    # The free function masks any tensors with a leading batch dimension.
    a, b = reset(torch.ones(3), torch.ones(3, 2, 2), first=first)
    assert a.tolist() == [1.0, 0.0, 1.0]
    assert b.sum().item() == 8.0


def test_reset_errors():
    first = torch.tensor([True, False])
    with pytest.raises(ValueError, match=r"state tensor 1 has shape \(3, 2\).*B = 2"):
        reset(torch.zeros(2), torch.zeros(3, 2), first=first)
    with pytest.raises(ValueError, match="expected torch.bool"):
        reset(torch.zeros(2), first=torch.tensor([1, 0]))


def test_after_reset_the_next_episode_starts_from_an_empty_memory():
    # Env 0 starts a new episode after 3 writes; its next writes must match a fresh run.
    zs = torch.randn(6, 2, 2, generator=torch.Generator().manual_seed(2))
    state = _write_sequence(zs[:3], slots=4, gamma=0.8)
    state = state.reset(torch.tensor([True, False]))
    no_reads = torch.zeros(2, 0, 4)
    for t in range(3, 6):
        w = sequential_write_weights(state.step, 4)
        state = update(state, zs[t], w, no_reads, gamma=0.8)
    fresh = _write_sequence(zs[3:, :1], slots=4, gamma=0.8)
    torch.testing.assert_close(state.memory[:1], fresh.memory)
    torch.testing.assert_close(state.retro_weights[:1], fresh.retro_weights)
    full = _write_sequence(zs[:, 1:], slots=4, gamma=0.8)
    torch.testing.assert_close(state.memory[1:], full.memory)
