"""Several environments (tasks) in one run: task ids, named suites, one common space.

``--env A,B,C`` (or ``--suite NAME``) trains one agent on several Gymnasium ids. The
tasks must share one kind of observation and action space, reconciled explicitly:

- **observations**: the same rank and dtype; a dimension that differs between tasks
  (MinAtar's channel counts: Breakout 4 ... Seaquest 10; vector lengths) is padded with
  zeros at its end up to the largest. Image height and width must agree (nothing is
  resized).
- **actions**: all ``Discrete`` or all ``Box``. Discrete tasks with fewer actions than
  the largest (MinAtar's minimal sets: Breakout 3, Seaquest 6) keep their own action
  indices ``0..n-1``; the indices ``n..A-1`` are *masked out of the policy* for that task
  (their logits are set to -1e9, so they are never sampled and carry no gradient), never
  remapped to other actions. ``Box`` tasks must have the same action dimension and bounds.

Environment ``j`` of the run (counting over actors, ``actor * envs_per_actor + i``) plays
task ``j % K``, so every task gets a steady share of the experience (exactly ``1/K``
when the number of environments is a multiple of ``K``); an actor restart keeps its
tasks. The task id is stored with every unroll (slot field ``task``) and every episode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from impala_rl.envs.factory import AtariOptions
from impala_rl.envs.spec import EnvSpec
from impala_rl.envs.vector import StepResult, make_env_group

SUITES: dict[str, tuple[str, ...]] = {
    "minatar5": ("MinAtar/Asterix-v1", "MinAtar/Breakout-v1", "MinAtar/Freeway-v1", "MinAtar/Seaquest-v1",
                 "MinAtar/SpaceInvaders-v1"),
    "minatar3": ("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Seaquest-v1"),
    "atari5": ("ALE/Pong-v5", "ALE/Breakout-v5", "ALE/SpaceInvaders-v5", "ALE/Seaquest-v5", "ALE/BeamRider-v5"),
}
"""Named task suites for ``--suite``: the five MinAtar games, three of them, and five Atari
games of very different reward scales (use ``--full-action-space`` for one 18-action policy)."""

MASKED_LOGIT = -1e9
"""The logit of an action a task does not have: exp underflows to exactly 0 probability."""


def task_ids(env: str) -> tuple[str, ...]:
    """The Gymnasium ids in ``--env`` (comma-separated; one id is a single-task run)."""
    return tuple(part.strip() for part in env.split(",") if part.strip())


def task_label(env_id: str) -> str:
    """A short name for logs and CSV columns: 'MinAtar/Breakout-v1' -> 'Breakout'."""
    name = env_id.rpartition(":")[2].rpartition("/")[2]
    name = re.sub(r"-v\d+$", "", name)
    return re.sub(r"[^A-Za-z0-9_]+", "_", name)


def task_labels(ids: tuple[str, ...]) -> tuple[str, ...]:
    """Labels for each task, numbered where two would be equal (``CartPole``, ``CartPole_1``)."""
    labels, seen = [], {}
    for env_id in ids:
        label = task_label(env_id)
        n = seen.get(label, 0)
        seen[label] = n + 1
        labels.append(label if n == 0 else f"{label}_{n}")
    return tuple(labels)


def env_tasks(num_envs: int, first_env: int, num_tasks: int) -> list[int]:
    """The task of each of ``num_envs`` environments numbered from ``first_env`` in the run."""
    return [(first_env + i) % num_tasks for i in range(num_envs)]


def combine_specs(ids: tuple[str, ...], specs: list[EnvSpec]) -> EnvSpec:
    """One :class:`EnvSpec` for all tasks (see the module docstring), with ``tasks`` and
    ``task_actions`` filled in. Raises ValueError naming the tasks that cannot be reconciled."""
    first = specs[0]

    def refuse(what: str, values) -> ValueError:
        listed = "; ".join(f"{i}: {v}" for i, v in zip(ids, values))
        return ValueError(f"the tasks' {what} cannot be reconciled ({listed}); {ACCEPTED}")

    if len({s.policy_type for s in specs}) > 1:
        raise refuse("action spaces (Discrete vs Box)", [s.policy_type for s in specs])
    if len({len(s.obs_shape) for s in specs}) > 1 or len({s.obs_dtype for s in specs}) > 1:
        raise refuse("observation spaces (rank or dtype)", [f"{s.obs_shape} {s.obs_dtype}" for s in specs])
    if first.is_image and len({s.obs_shape[1:] for s in specs}) > 1:
        raise refuse("image sizes (only channel counts may differ)", [s.obs_shape for s in specs])
    if first.policy_type == "gaussian" and len({(s.action_dim, s.action_low, s.action_high) for s in specs}) > 1:
        raise refuse("Box action spaces (dimension and bounds must agree)",
                     [f"{s.action_dim} in [{s.action_low}, {s.action_high}]" for s in specs])
    obs_shape = tuple(int(max(s.obs_shape[d] for s in specs)) for d in range(len(first.obs_shape)))
    return replace(first, obs_shape=obs_shape, action_dim=max(s.action_dim for s in specs),
                   tasks=tuple(ids), task_actions=tuple(s.action_dim for s in specs),
                   obs_in_unit_interval=all(s.obs_in_unit_interval for s in specs))


ACCEPTED = ("accepted: tasks whose observations share rank, dtype and image size (channels and vector lengths are "
            "zero-padded) and whose actions are all Discrete (smaller sets are masked) or all the same Box")


def action_mask(spec: EnvSpec):
    """bool ``[K, A]``: which actions each task has, or None when every task has all of them."""
    import torch

    if not spec.task_actions or all(n == spec.action_dim for n in spec.task_actions):
        return None
    return torch.arange(spec.action_dim)[None, :] < torch.tensor(spec.task_actions)[:, None]


def pad_observations(obs: np.ndarray, obs_shape: tuple, dtype) -> np.ndarray:
    """``[n, *shape_k]`` -> ``[n, *obs_shape]``: zeros where a task's observation is smaller."""
    obs = np.asarray(obs)
    if obs.shape[1:] == tuple(obs_shape):
        return obs
    out = np.zeros((obs.shape[0],) + tuple(obs_shape), dtype=dtype)
    out[(slice(None),) + tuple(slice(0, d) for d in obs.shape[1:])] = obs
    return out


@dataclass
class _Part:
    task: int
    group: object
    rows: slice


class TaskEnvGroup:
    """Environment groups of several tasks stepped as one group (the ``EnvGroup`` interface).

    ``parts`` are ``(task, group)`` pairs; environments are ordered part by part.
    Observations are zero-padded to ``obs_shape``; ``task_ids`` (int64 ``[N]``) gives each
    environment's task.
    """

    def __init__(self, parts: list[tuple[int, object]], obs_shape: tuple, obs_dtype):
        self.parts, start = [], 0
        for task, group in parts:
            self.parts.append(_Part(task, group, slice(start, start + group.num_envs)))
            start += group.num_envs
        self.num_envs = start
        self.obs_shape, self.obs_dtype = tuple(obs_shape), obs_dtype
        self.task_ids = np.concatenate([np.full(p.group.num_envs, p.task, np.int64) for p in self.parts])

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return pad_observations(obs, self.obs_shape, self.obs_dtype)

    def reset(self, seed: int) -> np.ndarray:
        return np.concatenate([self._pad(p.group.reset(seed=seed + 1000 * k)) for k, p in enumerate(self.parts)])

    def send(self, actions: np.ndarray) -> None:
        for p in self.parts:
            p.group.send(actions[p.rows])

    def recv(self) -> StepResult:
        results = [p.group.recv() for p in self.parts]
        final_obs = {p.rows.start + i: self._pad(obs[None])[0]
                     for p, r in zip(self.parts, results) for i, obs in r.final_obs.items()}
        return StepResult(np.concatenate([self._pad(r.obs) for r in results]),
                          *(np.concatenate([getattr(r, f) for r in results])
                            for f in ("reward", "terminated", "truncated", "life_lost")),
                          final_obs=final_obs)

    def close(self) -> None:
        for p in self.parts:
            p.group.close()


def make_task_env_group(spec: EnvSpec, tasks: list[int], seed: int, atari: AtariOptions | None = None,
                        native: str = "auto") -> TaskEnvGroup:
    """Environments of several tasks (``tasks[i]``: the task of environment i) as one group,
    padded to ``spec.obs_shape``: one group per task (the native ALE vector env for Atari)."""
    parts = [(k, make_env_group(spec.tasks[k], tasks.count(k), seed + 7919 * k, atari=atari, native=native))
             for k in sorted(set(tasks))]
    return TaskEnvGroup(parts, spec.obs_shape, spec.obs_dtype)
