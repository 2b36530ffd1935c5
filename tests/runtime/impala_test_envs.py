"""Tiny Gymnasium envs for the runtime tests.

Importing this module registers ``ImpalaTest/Raising-v0``, an env whose ``step`` raises,
and ``ImpalaTest/Counting-v0``, a :class:`CountingEnv` that terminates after 10 steps.
Actor processes are spawned (they re-import everything), so tests name it as
``impala_test_envs:ImpalaTest/Raising-v0``: ``check_env_id`` imports the module first,
in the learner and in every actor, with this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

RAISING_ID = "ImpalaTest/Raising-v0"
RAISING_MESSAGE = "step failed on purpose"


class CountingEnv(gym.Env):
    """obs = [steps taken in this episode] (float32 [1]); constant reward; 2 actions.

    Terminates after ``terminate_at`` steps when given (never otherwise); wrap it in
    ``gymnasium.wrappers.TimeLimit`` to truncate instead. ``info['life_lost']`` is True on
    step ``life_lost_at`` of each episode (like :class:`impala_rl.envs.LifeLossInfo`).
    """

    def __init__(self, reward: float = 1.0, terminate_at: int | None = None, life_lost_at: int | None = None):
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.reward = reward
        self.terminate_at = terminate_at
        self.life_lost_at = life_lost_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {"life_lost": False}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        info = {"life_lost": self.t == self.life_lost_at}
        return np.array([float(self.t)], np.float32), self.reward, terminated, False, info


class RaisingEnv(CountingEnv):
    """Resets fine (so the learner can probe its spaces) but raises on every step."""

    def step(self, action):
        raise RuntimeError(RAISING_MESSAGE)


if RAISING_ID not in gym.registry:
    gym.register(RAISING_ID, entry_point=RaisingEnv, disable_env_checker=True)
if "ImpalaTest/Counting-v0" not in gym.registry:
    gym.register("ImpalaTest/Counting-v0", entry_point=CountingEnv, kwargs={"terminate_at": 10},
                 disable_env_checker=True)
