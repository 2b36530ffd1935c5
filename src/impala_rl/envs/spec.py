"""What the model and the runtime need to know about an environment, read off its spaces.

:func:`describe` is the one place that decides which observation and action spaces
impala-rl supports; everything else asks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

__all__ = ["EnvSpec", "describe"]

PolicyType = Literal["categorical", "gaussian"]

_ACCEPTED_OBS = (
    "accepted: Box observations of rank 1 (vector, float32) or rank 3 "
    "(image [C, H, W], uint8 or float32)"
)
_ACCEPTED_ACTIONS = (
    "accepted: Discrete(n) (categorical policy) or a floating-point Box (Gaussian policy)"
)


@dataclass(frozen=True)
class EnvSpec:
    """Shapes and policy kind of an environment (not Gymnasium's registry ``EnvSpec``).

    Attributes:
        obs_shape: shape of one observation, e.g. ``(4, 84, 84)`` or ``(4,)``.
        obs_dtype: ``np.dtype(np.uint8)`` for images, ``np.dtype(np.float32)`` otherwise.
        policy_type: ``'categorical'`` for ``Discrete`` actions, ``'gaussian'`` for ``Box``.
        action_dim: number of actions (categorical) or length of the flat action vector
            (Gaussian).
        action_low, action_high: per-dimension bounds of a ``Box`` action (may be
            ``±inf``); ``None`` for ``Discrete``.
        is_image: ``True`` for rank-3 observations (channel-first ``[C, H, W]``).
        tasks: the Gymnasium ids of a multi-task run (:mod:`impala_rl.envs.tasks`), in
            task-id order; ``()`` for one environment.
        task_actions: each task's own number of actions (Discrete); the policy masks the
            others. ``()`` for one environment.
        obs_in_unit_interval: the observation space is a float ``Box`` bounded to [0, 1]
            everywhere (one-hot vectors and images, MinAtar's 0/1 channels): a model of the
            observation can use a Bernoulli likelihood.
    """

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    policy_type: PolicyType
    action_dim: int
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    is_image: bool = False
    tasks: tuple[str, ...] = ()
    task_actions: tuple[int, ...] = ()
    obs_in_unit_interval: bool = False

    @property
    def num_tasks(self) -> int:
        return max(1, len(self.tasks))

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one action: ``()`` for ``Discrete``, ``(A,)`` for ``Box``."""
        return () if self.policy_type == "categorical" else (self.action_dim,)

    @property
    def action_dtype(self) -> np.dtype:
        """``int64`` for ``Discrete``, ``float32`` for ``Box``."""
        return np.dtype(np.int64) if self.policy_type == "categorical" else np.dtype(np.float32)


def describe(env: Any) -> EnvSpec:
    """Read an :class:`EnvSpec` off ``env.observation_space`` and ``env.action_space``.

    Meant for envs built by :func:`impala_rl.envs.make_env`, which has already cast vector
    observations to float32 and flattened multi-dimensional ``Box`` actions.

    Raises:
        ValueError: for a space impala-rl cannot model, naming the space and what is
            accepted.
    """
    obs_space, action_space = env.observation_space, env.action_space

    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) not in (1, 3):
        raise ValueError(f"unsupported observation space {obs_space} ({_ACCEPTED_OBS})")
    is_image = len(obs_space.shape) == 3
    obs_dtype = np.dtype(obs_space.dtype)
    allowed_dtypes = (np.uint8, np.float32) if is_image else (np.float32,)
    if obs_dtype not in allowed_dtypes:
        raise ValueError(
            f"unsupported observation dtype {obs_dtype} in {obs_space} ({_ACCEPTED_OBS}; "
            "make_env casts vector observations to float32)"
        )

    unit = bool(np.issubdtype(obs_dtype, np.floating) and np.all(obs_space.low >= 0) and np.all(obs_space.high <= 1))
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(
                f"unsupported action space {action_space}: Discrete actions must start at 0"
            )
        return EnvSpec(
            obs_shape=tuple(obs_space.shape),
            obs_dtype=obs_dtype,
            policy_type="categorical",
            action_dim=int(action_space.n),
            is_image=is_image,
            obs_in_unit_interval=unit,
        )
    if isinstance(action_space, spaces.Box) and np.issubdtype(action_space.dtype, np.floating):
        return EnvSpec(
            obs_shape=tuple(obs_space.shape),
            obs_dtype=obs_dtype,
            policy_type="gaussian",
            action_dim=int(np.prod(action_space.shape)),
            action_low=tuple(float(x) for x in action_space.low.ravel()),
            action_high=tuple(float(x) for x in action_space.high.ravel()),
            is_image=is_image,
            obs_in_unit_interval=unit,
        )
    raise ValueError(f"unsupported action space {action_space} ({_ACCEPTED_ACTIONS})")
