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
- ``action[k]``: the action a_k taken at x_k (int64, or float32 [A] for a ``Box``).
- the agent's records at x_k (:meth:`impala_rl.agents.Agent.record_fields`); IMPALA's
  is ``policy_params[k]`` (float32 [P]): the behaviour policy mu at x_k, packed as in
  :mod:`impala_rl.core.distributions` (logits, or mean and log-std).

Per slot: ``task`` (int64), the task the unroll's environment plays (0 unless the run has
several, :mod:`impala_rl.envs.tasks`); ``stream`` (int64), the run's number of the environment
that played it (actor a's environment i is ``a * envs_per_actor + i``; the unrolls of one
stream arrive in order, each continuing the previous, which a replay that stitches them
into one row stream relies on); ``version`` (int64), the policy version that acted in rows 1..T (for the
policy-lag metric: learner version minus behaviour version; row 0's action was chosen
at the end of the previous unroll, possibly by the version before), and the agent's
recurrent state *before* row 0 (IMPALA's LSTM: ``core_h``, ``core_c``, float32 [L]), so
the learner's unroll starting from it reproduces the actor's outputs for the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch

Batch = Dict[str, torch.Tensor]

ENV_ROW_FIELDS = ("obs", "first", "last_action", "reward", "terminal", "bootstrap", "action")
"""The runtime's own row columns (above); an agent adds its own (:meth:`Agent.record_fields`)."""


@dataclass(frozen=True)
class RolloutSpec:
    """Shapes and dtypes of one rollout slot: the environment's columns plus the agent's.

    ``records`` are the agent's per-row extras (IMPALA: ``policy_params``) and ``states``
    its recurrent state stored per unroll (IMPALA with an LSTM: ``core_h``, ``core_c``),
    each as ``(name, shape, dtype)`` tuples, in order.
    """

    unroll_length: int
    obs_shape: tuple
    obs_dtype: torch.dtype
    action_shape: tuple
    action_dtype: torch.dtype
    records: tuple = ()
    states: tuple = ()

    @classmethod
    def for_agent(cls, unroll_length: int, env_spec, agent) -> "RolloutSpec":
        """The slot layout for ``agent`` acting in an environment described by ``env_spec``."""
        return cls(unroll_length=unroll_length, obs_shape=tuple(env_spec.obs_shape),
                   obs_dtype=numpy_to_torch_dtype(env_spec.obs_dtype), action_shape=tuple(env_spec.action_shape),
                   action_dtype=numpy_to_torch_dtype(env_spec.action_dtype),
                   records=tuple((n, tuple(s), d) for n, (s, d) in agent.record_fields().items()),
                   states=tuple((n, tuple(s), d) for n, (s, d) in agent.state_fields().items()))

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.states)

    @property
    def row_names(self) -> frozenset:
        return frozenset(self.row_fields())

    def row_fields(self) -> dict[str, tuple[tuple, torch.dtype]]:
        """name -> (shape of one row, dtype)."""
        out = {
            "obs": (tuple(self.obs_shape), self.obs_dtype),
            "first": ((), torch.bool),
            "last_action": (self.action_shape, self.action_dtype),
            "reward": ((), torch.float32),
            "terminal": ((), torch.bool),
            "bootstrap": ((), torch.float32),
            "action": (self.action_shape, self.action_dtype),
        }
        out.update({name: (shape, dtype) for name, shape, dtype in self.records})
        return out

    def slot_fields(self) -> dict[str, tuple[tuple, torch.dtype]]:
        """name -> (shape of one slot's per-unroll value, dtype)."""
        out = {"version": ((), torch.int64), "task": ((), torch.int64), "stream": ((), torch.int64)}
        out.update({name: (shape, dtype) for name, shape, dtype in self.states})
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

    def gather(self, buffers: Batch, indices: list[int] | torch.Tensor, pin_memory: bool = False) -> Batch:
        """:func:`gather_batch` with this layout's row fields."""
        return gather_batch(buffers, indices, self.row_names, pin_memory)

    def select(self, batch: Batch, idx: torch.Tensor) -> Batch:
        """:func:`select_unrolls` with this layout's row fields."""
        return select_unrolls(batch, idx, self.row_names)


def numpy_to_torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros((), dtype=dtype)).dtype


def gather_batch(buffers: Batch, indices: list[int] | torch.Tensor, row_names, pin_memory: bool = False) -> Batch:
    """Copy the given slots out of ``buffers`` into a time-major batch.

    Fields named in ``row_names`` become [T+1, B, ...]; the others (slot fields) [B, ...]. The copy lets the slots be
    recycled as soon as this returns. ``pin_memory`` (for a CUDA learner) puts the batch
    in page-locked memory so the learner's host-to-device copies run asynchronously.
    """
    idx = torch.as_tensor(indices, dtype=torch.long)
    out = {}
    for name, t in buffers.items():
        picked = t.index_select(0, idx)
        picked = picked.transpose(0, 1) if name in row_names else picked
        out[name] = picked.pin_memory() if pin_memory else picked.contiguous()
    return out


def select_unrolls(batch: Batch, idx: torch.Tensor, row_names) -> Batch:
    """The unrolls ``idx`` of a batch: row fields [T+1, B, ...] along dim 1, slot fields [B, ...] along dim 0."""
    return {k: v.index_select(1 if k in row_names else 0, idx) for k, v in batch.items()}
