"""Tiny Gymnasium envs for the runtime tests.

Importing this module registers ``ImpalaTest/Raising-v0``, an env whose ``step`` raises,
``ImpalaTest/Counting-v0``, a :class:`CountingEnv` that terminates after 10 steps,
``ImpalaTest/Endless-v0``, one that never ends (no termination, no time limit), two
:class:`TaskEchoEnv` tasks ``ImpalaTest/EchoA-v0`` (obs [0.5, 0.5], 2 actions) and
``ImpalaTest/EchoB-v0`` (obs [1, 1, 1], 3 actions), and ``ImpalaTest/CartPoleX1000-v1``,
CartPole with every reward multiplied by 1000.
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


class TaskEchoEnv(gym.Env):
    """obs = ``value`` repeated ``size`` times (float32), whatever happens: which task an
    unroll came from can be read off its observations. ``n`` actions; ends after 7 steps."""

    def __init__(self, value: float, size: int, n: int):
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.action_space = spaces.Discrete(n)
        self.obs = np.full(size, value, np.float32)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.obs.copy(), {}

    def step(self, action):
        assert self.action_space.contains(int(action)), f"action {action} is not one of this task's"
        self.t += 1
        return self.obs.copy(), float(action), self.t >= 7, False, {}


def scaled_cartpole(scale: float = 1000.0):
    return gym.wrappers.TransformReward(gym.make("CartPole-v1"), lambda r: scale * r)


ECHO_IDS = ("ImpalaTest/EchoA-v0", "ImpalaTest/EchoB-v0")
if ECHO_IDS[0] not in gym.registry:
    gym.register(ECHO_IDS[0], entry_point=TaskEchoEnv, kwargs={"value": 0.5, "size": 2, "n": 2},
                 disable_env_checker=True)
    gym.register(ECHO_IDS[1], entry_point=TaskEchoEnv, kwargs={"value": 1.0, "size": 3, "n": 3},
                 disable_env_checker=True)
if "ImpalaTest/ShortCartPole-v0" not in gym.registry:  # truncated at 12 steps unless it falls first
    gym.register("ImpalaTest/ShortCartPole-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                 max_episode_steps=12, disable_env_checker=True)
if "ImpalaTest/CartPoleX1000-v1" not in gym.registry:
    gym.register("ImpalaTest/CartPoleX1000-v1", entry_point=scaled_cartpole, disable_env_checker=True)
if RAISING_ID not in gym.registry:
    gym.register(RAISING_ID, entry_point=RaisingEnv, disable_env_checker=True)
if "ImpalaTest/Counting-v0" not in gym.registry:
    gym.register("ImpalaTest/Counting-v0", entry_point=CountingEnv, kwargs={"terminate_at": 10},
                 disable_env_checker=True)
if "ImpalaTest/Endless-v0" not in gym.registry:
    gym.register("ImpalaTest/Endless-v0", entry_point=CountingEnv, disable_env_checker=True)
