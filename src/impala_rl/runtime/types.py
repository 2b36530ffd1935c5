"""The unroll contract, stated once: what a rollout slot holds and what each row means.

An unroll of length T holds T+1 rows, k = 0..T. Row 0 is a copy of the previous unroll's
row T (unrolls overlap by one step), so the learner sees T full transitions plus the
observation it bootstraps from. Row k holds:

- ``obs[k]``: the observation x_k (uint8 images stay uint8 until the network).
- ``first[k]`` (bool): x_k is the first observation of an episode. The LSTM state is
  reset to zero before step k, and the network's last-action / last-reward inputs are 0.
- ``last_action[k]``: the action that led to x_k (0 / zeros when ``first[k]``).
- ``reward[k]`` (float32, raw, unclipped): the reward of the transition into x_k, i.e.
  r_{k-1} for the transition (x_{k-1}, a_{k-1}). When that transition ended the episode,
  x_k is already the next episode's reset observation and reward[k] is still the final
  reward of the episode that ended.
- ``terminal[k]`` (bool): the transition into x_k cut the bootstrap chain: the episode
  terminated, was truncated, or (with episodic_life) a life was lost. Learner discount
  for transition k-1 is ``discount * (1 - terminal[k])``.
- ``bootstrap[k]`` (float32): on a truncation (time limit, not termination), the
  behaviour network's value of the real final observation, V_mu(x_final); 0 otherwise.
  The learner's reward for transition k-1 is ``clip(reward[k]) + discount * bootstrap[k]``,
  so a truncated episode bootstraps from the value of where it stopped while a
  terminated one does not. (Gymnasium's reset on truncation replaces x_final by the next
  episode's first observation, so the value must be taken by the actor at that moment.)
- ``action[k]``: the action a_k sampled at x_k (int64, or float32 [A] for Gaussian).
- ``policy_params[k]`` (float32 [P]): the behaviour policy mu at x_k, packed as in
  :mod:`impala_rl.core.distributions` (logits, or mean and log-std).

Per slot: ``version`` (int64), the policy version that acted in rows 1..T (for the
policy-lag metric: learner version minus behaviour version; row 0's action was chosen
at the end of the previous unroll, possibly by the version before), and ``core_h``, ``core_c``
(float32 [L]), the LSTM state *before* row 0, so the learner's unroll starting from it
reproduces the actor's outputs for the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch

Batch = Dict[str, torch.Tensor]

ROW_FIELDS = ("obs", "first", "last_action", "reward", "terminal", "bootstrap", "action", "policy_params")


@dataclass(frozen=True)
class RolloutSpec:
    """Shapes and dtypes of one rollout slot."""

    unroll_length: int
    obs_shape: tuple
    obs_dtype: torch.dtype
    policy_type: str  # 'categorical' | 'gaussian'
    action_dim: int
    num_policy_params: int
    core_size: int  # LSTM hidden size; 0 without LSTM

    @property
    def action_shape(self) -> tuple:
        return () if self.policy_type == "categorical" else (self.action_dim,)

    @property
    def action_dtype(self) -> torch.dtype:
        return torch.int64 if self.policy_type == "categorical" else torch.float32

    def row_fields(self) -> dict[str, tuple[tuple, torch.dtype]]:
        """name -> (shape of one row, dtype)."""
        return {
            "obs": (tuple(self.obs_shape), self.obs_dtype),
            "first": ((), torch.bool),
            "last_action": (self.action_shape, self.action_dtype),
            "reward": ((), torch.float32),
            "terminal": ((), torch.bool),
            "bootstrap": ((), torch.float32),
            "action": (self.action_shape, self.action_dtype),
            "policy_params": ((self.num_policy_params,), torch.float32),
        }

    def slot_fields(self) -> dict[str, tuple[tuple, torch.dtype]]:
        """name -> (shape of one slot's per-unroll value, dtype)."""
        out = {"version": ((), torch.int64)}
        if self.core_size:
            out["core_h"] = ((self.core_size,), torch.float32)
            out["core_c"] = ((self.core_size,), torch.float32)
        return out

    def allocate(self, num_slots: int, shared: bool = False) -> Batch:
        """Buffers for ``num_slots`` unrolls: row fields [N, T+1, ...], slot fields [N, ...]."""
        rows = self.unroll_length + 1
        buffers = {name: torch.zeros((num_slots, rows) + shape, dtype=dtype)
                   for name, (shape, dtype) in self.row_fields().items()}
        buffers.update({name: torch.zeros((num_slots,) + shape, dtype=dtype)
                        for name, (shape, dtype) in self.slot_fields().items()})
        if shared:
            for t in buffers.values():
                t.share_memory_()
        return buffers

    def nbytes_per_slot(self) -> int:
        return sum(t.element_size() * t.numel() for t in self.allocate(1).values())


def numpy_to_torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros((), dtype=dtype)).dtype


def gather_batch(buffers: Batch, indices: list[int] | torch.Tensor, pin_memory: bool = False) -> Batch:
    """Copy the given slots out of ``buffers`` into a time-major batch.

    Row fields become [T+1, B, ...]; slot fields [B, ...]. The copy lets the slots be
    recycled as soon as this returns. ``pin_memory`` (for a CUDA learner) puts the batch
    in page-locked memory so the learner's host-to-device copies run asynchronously.
    """
    idx = torch.as_tensor(indices, dtype=torch.long)
    out = {}
    for name, t in buffers.items():
        picked = t.index_select(0, idx)
        picked = picked.transpose(0, 1) if name in ROW_FIELDS else picked
        out[name] = picked.pin_memory() if pin_memory else picked.contiguous()
    return out


def select_unrolls(batch: Batch, idx: torch.Tensor) -> Batch:
    """The unrolls ``idx`` of a batch: row fields [T+1, B, ...] along dim 1, slot fields [B, ...] along dim 0."""
    return {k: v.index_select(1 if k in ROW_FIELDS else 0, idx) for k, v in batch.items()}
