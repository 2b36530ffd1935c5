"""The small wrappers of impala_rl.envs.wrappers, on fake envs (no emulator)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from impala_rl.envs import LifeLossInfo
from impala_rl.envs.wrappers import StackedFramesChannelFirst


class LivesEnv(gym.Env):
    """Reports a scripted lives counter in info, as ale-py does; ends when it runs out."""

    observation_space = spaces.Box(0, 1, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, lives_per_step):
        self.lives_per_step = lives_per_step

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {"lives": self.lives_per_step[0]}

    def step(self, action):
        self.t += 1
        lives = self.lives_per_step[self.t]
        done = self.t == len(self.lives_per_step) - 1
        return np.zeros(1, np.float32), 1.0, done, False, {"lives": lives}


def test_life_lost_marks_each_decrease_once_and_never_terminates_early():
    env = LifeLossInfo(LivesEnv([3, 3, 2, 2, 2, 1, 1, 0]))
    _, info = env.reset()
    assert info["life_lost"] is False
    flags, terminals = [], []
    for _ in range(7):
        _, reward, terminated, _, info = env.step(0)
        flags.append(info["life_lost"])
        terminals.append(terminated)
        assert reward == 1.0
    assert flags == [False, True, False, False, True, False, True]
    assert terminals == [False] * 6 + [True]


def test_life_lost_starts_fresh_after_reset():
    env = LifeLossInfo(LivesEnv([1, 0]))
    env.reset()
    assert env.step(0)[-1]["life_lost"] is True
    env.reset()
    assert env.step(0)[-1]["life_lost"] is True


def test_rgb_stack_is_channel_first_frame_by_frame():
    class Frames(gym.Env):
        observation_space = spaces.Box(0, 255, (2, 5, 6, 3), np.uint8)
        action_space = spaces.Discrete(1)

    env = StackedFramesChannelFirst(Frames())
    assert env.observation_space.shape == (6, 5, 6)
    frames = np.arange(2 * 5 * 6 * 3, dtype=np.uint8).reshape(2, 5, 6, 3)
    merged = env.observation(frames)
    for s in range(2):
        for c in range(3):
            np.testing.assert_array_equal(merged[3 * s + c], frames[s, :, :, c])
