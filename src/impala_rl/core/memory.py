"""MERLIN's external memory (Wayne et al. 2018, Methods, "Memory") as pure functions of tensors.

The memory is explicit state: every function takes the state tensors it needs and returns
new ones; nothing here holds a tensor between calls. Everything is batch-first, one row
``b`` per environment. Shapes and names:

* ``memory``: float ``[B, N, 2Z]``, ``N`` slots; row ``i`` is ``[z-half, retro-half]``,
  each of width ``Z`` (``W = 2Z`` below). The z-half holds the latent ``z_k`` written at
  some step ``k``; the retro-half accumulates the latents that came after it (below).
* ``usage``: float ``[B, N]``, how much each slot has been used: read or written
  (:func:`update_usage`).
* ``write_weights``: float ``[B, N]``, where ``z_t`` was written at step ``t`` (one-hot:
  :func:`fill_then_least_used_write_weights`, :func:`least_used_write_weights` or
  :func:`sequential_write_weights`).
* ``retro_weights``: float ``[B, N]``, the paper's retroactive weights ``w^ret_t``.
* ``step``: int64 ``[B]``, the number of writes since the episode began.
* read ``keys``: float ``[B, K, W]``, ``K`` read heads; ``sharpness``: float ``[B, K]``,
  positive (:func:`positive_sharpness`); read ``weights``: float ``[B, K, N]``.

One agent step ``t`` reads first (keys against the memory as it was after step ``t-1``),
then writes ``z_t`` and updates the usage with that step's read and write weights
(:func:`update` does the writing half; :meth:`MemoryState.reset` the episode boundary).

Retroactive update (the paper's, as we read it, with the discount ``gamma``; we also clear the retro
weight of the slot being written, so an overwritten slot starts a fresh trace)::

    w^ret_t = (1 - w_t) * (gamma * w^ret_{t-1} + (1 - gamma) * w_{t-1})
    M_t[:, :Z] = (1 - w_t) * M_{t-1}[:, :Z] + w_t z_t
    M_t[:, Z:] = (1 - w_t) * M_{t-1}[:, Z:] + w^ret_t z_t

(``w`` broadcast over the row width, ``w z`` the outer product.) With one-hot writes and a
slot ``i`` written at step ``k`` and not overwritten through step ``t``, its row is then
``[z_k, sum_{j=k+1}^{t} (1 - gamma) gamma^(j-k-1) z_j]``: the retro-half is the
``(1 - gamma)``-weighted discounted sum of the latents that followed ``z_k`` (their
exponentially weighted average as ``t`` grows, the weights summing to ``1 - gamma^(t-k)``).
The slot written at ``t`` has retro-half 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "MemoryState",
    "cosine_read",
    "cosine_similarity",
    "fill_then_least_used_write_weights",
    "least_used_write_weights",
    "positive_sharpness",
    "reset",
    "sequential_write_weights",
    "unit_rows",
    "update",
    "update_usage",
    "write",
]


def _shape(x: torch.Tensor) -> tuple:
    return tuple(x.shape)


def _check_rank(name: str, x: torch.Tensor, rank: int, expected: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name} has shape {_shape(x)}; expected {expected}")


def _check_slots(ref_name: str, ref: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Check that every tensor in ``tensors`` is ``[B, N]`` with ``(B, N) = ref.shape[:2]``."""
    expected = tuple(ref.shape[:2])
    for name, x in tensors.items():
        if _shape(x) != expected:
            raise ValueError(
                f"{name} has shape {_shape(x)} but {ref_name} has shape {_shape(ref)}; "
                f"expected {name} [B, N] = {expected}"
            )


def positive_sharpness(x: torch.Tensor) -> torch.Tensor:
    """``1 + softplus(x)``: a read sharpness (inverse temperature) of at least 1."""
    return 1.0 + F.softplus(x)


def unit_rows(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(|x|^2 + eps)`` along the last dimension (a zero row stays zero, with a finite gradient)."""
    return x / (x.square().sum(dim=-1, keepdim=True) + eps).sqrt()


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = 1e-6,
                      unit_memory: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity of every key with every slot: ``[B, K, W] x [B, N, W] -> [B, K, N]``.

    ``cos(k, m) = k . m / (sqrt(|k|^2 + eps) * sqrt(|m|^2 + eps))``: ``eps`` inside the
    square roots keeps the value (0) and its gradient finite for zero vectors, such as the
    slots of a memory that has just been reset. ``unit_memory``: ``unit_rows(memory, eps)``
    if the caller has it (several readers of one memory normalise it once).
    """
    if unit_memory is None:
        unit_memory = unit_rows(memory, eps)
    return torch.bmm(unit_rows(keys, eps), unit_memory.transpose(1, 2))


def cosine_read(
    memory: torch.Tensor, keys: torch.Tensor, sharpness: torch.Tensor, eps: float = 1e-6,
    unit_memory: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Content-based read: ``w = softmax_N(sharpness * cos(key, slot))``, ``read = w M``.

    Args:
      memory: float ``[B, N, W]``.
      keys: float ``[B, K, W]``, one key per read head.
      sharpness: float ``[B, K]``, positive (callers map a raw output through
        :func:`positive_sharpness`).
      eps, unit_memory: see :func:`cosine_similarity`.

    Returns:
      ``(read, weights)``: float ``[B, K, W]`` and ``[B, K, N]`` (each row of ``weights``
      sums to 1 over the slots; a memory of zeros is read with uniform weights).
    """
    _check_rank("memory", memory, 3, "[B, N, W]")
    _check_rank("keys", keys, 3, "[B, K, W]")
    batch, _, width = memory.shape
    if keys.shape[0] != batch or keys.shape[2] != width:
        raise ValueError(
            f"keys has shape {_shape(keys)} but memory has shape {_shape(memory)}; "
            f"expected keys [B, K, W] with B = {batch}, W = {width}"
        )
    if _shape(sharpness) != _shape(keys)[:2]:
        raise ValueError(
            f"sharpness has shape {_shape(sharpness)} but keys has shape {_shape(keys)}; "
            f"expected sharpness [B, K] = {_shape(keys)[:2]}"
        )
    similarity = cosine_similarity(keys, memory, eps, unit_memory)
    weights = torch.softmax(sharpness.unsqueeze(-1) * similarity, dim=-1)
    return torch.bmm(weights, memory), weights


def least_used_write_weights(usage: torch.Tensor) -> torch.Tensor:
    """One-hot ``[B, N]`` at ``argmin_i usage[b, i]`` (ties: the lowest index), dtype of ``usage``.

    Reads also add to the usage of slots never written (a soft read weights every slot),
    so this alone may overwrite a written slot while empty ones remain; see
    :func:`fill_then_least_used_write_weights`.
    """
    _check_rank("usage", usage, 2, "[B, N] with N >= 1")
    if usage.shape[1] == 0:
        raise ValueError(f"usage has shape {_shape(usage)}; expected [B, N] with N >= 1")
    index = usage.detach().argmin(dim=1)
    return F.one_hot(index, usage.shape[1]).to(usage.dtype)


def sequential_write_weights(
    step: torch.Tensor, num_slots: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One-hot ``[B, N]`` at ``step[b] % num_slots``: writes in order, wrapping round.

    Args:
      step: int ``[B]``, non-negative (:attr:`MemoryState.step`).
      num_slots: ``N >= 1``.
      dtype: the dtype of the result.
    """
    _check_rank("step", step, 1, "[B]")
    if num_slots < 1:
        raise ValueError(f"num_slots must be at least 1, got {num_slots}")
    if step.dtype.is_floating_point or step.dtype == torch.bool:
        raise ValueError(f"step has dtype {step.dtype}; expected an integer dtype")
    return F.one_hot(step.long() % num_slots, num_slots).to(dtype)


def fill_then_least_used_write_weights(usage: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Sequential writes while the memory fills, then the least used slot (MERLIN's rule, as we read it).

    Row ``b`` gets ``sequential_write_weights(step)[b]`` while ``step[b] < N`` (the slots
    are written 0, 1, ..., N-1 after a reset) and ``least_used_write_weights(usage)[b]``
    afterwards.

    Args:
      usage: float ``[B, N]``.
      step: int ``[B]``, the writes since the episode began (:attr:`MemoryState.step`).

    Returns:
      float ``[B, N]``, one-hot, in the dtype of ``usage``.
    """
    _check_rank("usage", usage, 2, "[B, N] with N >= 1")
    if _shape(step) != _shape(usage)[:1]:
        raise ValueError(
            f"step has shape {_shape(step)} but usage has shape {_shape(usage)}; "
            f"expected step [B] with B = {usage.shape[0]}"
        )
    num_slots = usage.shape[1]
    sequential = sequential_write_weights(step, num_slots, dtype=usage.dtype)
    least_used = least_used_write_weights(usage)
    filling = (step < num_slots).unsqueeze(1)
    return torch.where(filling, sequential, least_used)


def update_usage(
    usage: torch.Tensor,
    read_weights: torch.Tensor,
    write_weights: torch.Tensor,
    decay: float = 1.0,
) -> torch.Tensor:
    """The usage after one step: ``decay * usage + sum_k r_k + w``.

    ``r_k`` are this step's read weights (taken before the write) and ``w`` its write
    weights: a write counts as one use of the slot. The written slot keeps its usage
    (under least-used writes it was the least used, so that is little) rather than
    restarting at 1: a restart would put a fresh slot below every slot that has been
    read and so make it the next one overwritten. So with least-used writes and no
    reads, the slots are replaced in turn (oldest first); a read slot is kept longer.
    With ``decay < 1`` old uses fade.

    Args:
      usage: float ``[B, N]``.
      read_weights: float ``[B, K, N]``.
      write_weights: float ``[B, N]``.
      decay: in [0, 1].

    Returns:
      float ``[B, N]``, without gradient (usage only chooses where to write).
    """
    _check_rank("usage", usage, 2, "[B, N]")
    _check_slots("usage", usage, write_weights=write_weights)
    _check_rank("read_weights", read_weights, 3, "[B, K, N]")
    if read_weights.shape[0] != usage.shape[0] or read_weights.shape[2] != usage.shape[1]:
        raise ValueError(
            f"read_weights has shape {_shape(read_weights)} but usage has shape "
            f"{_shape(usage)}; expected read_weights [B, K, N] with (B, N) = {_shape(usage)}"
        )
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    with torch.no_grad():
        return decay * usage + read_weights.sum(dim=1) + write_weights


def write(
    memory: torch.Tensor,
    write_weights: torch.Tensor,
    z: torch.Tensor,
    prev_write_weights: torch.Tensor,
    retro_weights: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``z_t`` and update the retro-halves (the module docstring's definition).

    Args:
      memory: float ``[B, N, 2Z]``, the memory after step ``t-1``.
      write_weights: float ``[B, N]``, ``w_t`` (one-hot: the slot is replaced by ``[z_t, 0]``).
      z: float ``[B, Z]``, the latent ``z_t``.
      prev_write_weights: float ``[B, N]``, ``w_{t-1}`` (zeros at the first step of an episode).
      retro_weights: float ``[B, N]``, ``w^ret_{t-1}``.
      gamma: the retroactive discount in [0, 1].

    Returns:
      ``(memory, retro_weights)``: ``M_t`` ``[B, N, 2Z]`` and ``w^ret_t`` ``[B, N]``.
      Differentiable with respect to ``memory`` and ``z`` (detach ``z`` to stop gradients
      flowing through the memory); the weights carry no gradient here.
    """
    _check_rank("memory", memory, 3, "[B, N, 2Z]")
    batch, _, width = memory.shape
    if width % 2:
        raise ValueError(f"memory has shape {_shape(memory)}; expected [B, N, 2Z] (even width)")
    half = width // 2
    if _shape(z) != (batch, half):
        raise ValueError(
            f"z has shape {_shape(z)} but memory has shape {_shape(memory)}; "
            f"expected z [B, Z] = {(batch, half)}"
        )
    _check_slots(
        "memory",
        memory,
        write_weights=write_weights,
        prev_write_weights=prev_write_weights,
        retro_weights=retro_weights,
    )
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    w = write_weights.detach()
    keep = 1.0 - w
    new_retro = keep * (gamma * retro_weights + (1.0 - gamma) * prev_write_weights).detach()
    # Both halves at once: slot n gets keep_n M_n + [w_n z, retro_n z] (fewer, larger operations
    # than a pass per half; the same arithmetic per element).
    coefficients = torch.stack([w, new_retro], dim=-1)  # [B, N, 2]
    added = (coefficients.unsqueeze(-1) * z[:, None, None, :]).view(batch, -1, width)
    return keep.unsqueeze(-1) * memory + added, new_retro


def reset(*tensors: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Zero, in each of ``tensors``, the rows ``b`` whose episode starts (``first[b]`` true).

    Every tensor has a leading batch dimension ``B`` (``[B, ...]``, any dtype); the other
    rows are returned unchanged (``torch.where``, so a NaN in a reset row does not survive).

    Args:
      *tensors: the state tensors carried into the step whose flags are ``first``.
      first: bool ``[B]``.

    Returns:
      The tensors, in order, with the flagged rows zeroed.
    """
    _check_rank("first", first, 1, "[B]")
    if first.dtype != torch.bool:
        raise ValueError(f"first has dtype {first.dtype}; expected torch.bool")
    batch = first.shape[0]
    out = []
    for i, x in enumerate(tensors):
        if x.dim() < 1 or x.shape[0] != batch:
            raise ValueError(
                f"state tensor {i} has shape {_shape(x)} but first has shape {_shape(first)}; "
                f"expected [B, ...] with B = {batch}"
            )
        mask = first.view(batch, *([1] * (x.dim() - 1))).to(x.device)
        out.append(torch.where(mask, torch.zeros_like(x), x))
    return tuple(out)


class MemoryState(NamedTuple):
    """The memory's state for a batch of environments (shapes in the module docstring).

    Attributes:
      memory: float ``[B, N, 2Z]``.
      usage: float ``[B, N]``.
      write_weights: float ``[B, N]``, the last step's ``w_t`` (zeros before the first write).
      retro_weights: float ``[B, N]``, the last step's ``w^ret_t``.
      step: int64 ``[B]``, the writes since the episode began.
    """

    memory: torch.Tensor
    usage: torch.Tensor
    write_weights: torch.Tensor
    retro_weights: torch.Tensor
    step: torch.Tensor

    @classmethod
    def initial(
        cls,
        batch: int,
        slots: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "MemoryState":
        """All zeros: an empty memory of ``slots`` rows of ``width = 2Z`` per environment."""
        if batch < 0 or slots < 1:
            raise ValueError(f"need batch >= 0 and slots >= 1, got batch={batch}, slots={slots}")
        if width < 2 or width % 2:
            raise ValueError(f"width must be 2Z with Z >= 1, got {width}")
        zeros = torch.zeros(batch, slots, device=device, dtype=dtype)
        return cls(
            memory=torch.zeros(batch, slots, width, device=device, dtype=dtype),
            usage=zeros,
            write_weights=zeros.clone(),
            retro_weights=zeros.clone(),
            step=torch.zeros(batch, device=device, dtype=torch.int64),
        )

    def reset(self, first: torch.Tensor) -> "MemoryState":
        """The state with every field zeroed for the environments flagged in ``first`` (bool ``[B]``)."""
        return MemoryState(*reset(*self, first=first))

    def detach(self) -> "MemoryState":
        """The state without gradient history (e.g. between unrolls)."""
        return MemoryState(*(x.detach() for x in self))


def update(
    state: MemoryState,
    z: torch.Tensor,
    write_weights: torch.Tensor,
    read_weights: torch.Tensor,
    gamma: float,
    usage_decay: float = 1.0,
) -> MemoryState:
    """One step's write: :func:`write` ``z`` with ``write_weights``, :func:`update_usage`, step + 1.

    Args:
      state: the state after the step's reads (reset already applied for ``first``).
      z: float ``[B, Z]``.
      write_weights: float ``[B, N]``, e.g.
        ``fill_then_least_used_write_weights(state.usage, state.step)``.
      read_weights: float ``[B, K, N]``, this step's read weights (``K`` may be 0).
      gamma: the retroactive discount.
      usage_decay: the ``decay`` of :func:`update_usage`.
    """
    memory, retro = write(
        state.memory, write_weights, z, state.write_weights, state.retro_weights, gamma
    )
    usage = update_usage(state.usage, read_weights, write_weights, usage_decay)
    return MemoryState(memory, usage, write_weights.detach(), retro, state.step + 1)
