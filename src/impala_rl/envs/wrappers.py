"""Small Gymnasium wrappers that :func:`impala_rl.envs.make_env` stacks on top of an env.

Each wrapper does one thing and keeps the wrapped env's ``action_space`` /
``observation_space`` honest, so that :func:`impala_rl.envs.describe` reads the right
shapes and bounds off the outermost wrapper.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "BinaryImageChannelFirst",
    "ClipActionToBounds",
    "FlattenBoxAction",
    "Float32Observation",
    "LifeLossInfo",
    "StackedFramesChannelFirst",
]


class LifeLossInfo(gym.Wrapper):
    """Report Atari life losses in ``info['life_lost']`` without ending the episode.

    ``info['life_lost']`` is present after every ``reset`` (``False``) and ``step``; it is
    ``True`` on exactly the step where the ALE lives counter (``info['lives']``, which
    ale-py puts in every info dict) goes down. The episode itself runs on until the game
    is over, so episode returns and lengths cover the whole game.

    The actor uses the flag as a terminal for learning only (discount 0 at that step),
    which is the paper's "end of episode when life lost" without resetting the emulator.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._lives = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._lives = int(info["lives"])
        info["life_lost"] = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = int(info["lives"])
        info["life_lost"] = lives < self._lives
        self._lives = lives
        return obs, reward, terminated, truncated, info


class ClipActionToBounds(gym.ActionWrapper):
    """Clip a continuous action into the ``Box`` bounds before the env sees it.

    The Gaussian policy samples an unbounded action; the env receives it clipped, while
    the learner keeps (and computes log-probabilities of) the unclipped sample.

    Unlike :class:`gymnasium.wrappers.ClipAction`, which widens ``action_space`` to
    ``(-inf, inf)`` since Gymnasium 1.0, this keeps the original bounds visible so that
    :func:`impala_rl.envs.describe` can report them. Infinite bounds make it a no-op.
    """

    def __init__(self, env: gym.Env):
        if not isinstance(env.action_space, spaces.Box):
            raise TypeError(f"ClipActionToBounds needs a Box action space, got {env.action_space}")
        super().__init__(env)

    def action(self, action: Any) -> np.ndarray:
        return np.clip(action, self.action_space.low, self.action_space.high)


class FlattenBoxAction(gym.ActionWrapper):
    """Accept a flat ``[prod(shape)]`` action for a ``Box`` action space of any rank.

    The policy head emits a vector; this reshapes it to what the env expects. The
    wrapper's ``action_space`` is the flattened ``Box`` with flattened bounds.
    """

    def __init__(self, env: gym.Env):
        inner = env.action_space
        if not isinstance(inner, spaces.Box):
            raise TypeError(f"FlattenBoxAction needs a Box action space, got {inner}")
        super().__init__(env)
        self._shape = inner.shape
        self.action_space = spaces.Box(inner.low.ravel(), inner.high.ravel(), dtype=inner.dtype)

    def action(self, action: Any) -> np.ndarray:
        return np.reshape(action, self._shape)


class Float32Observation(gym.ObservationWrapper):
    """Cast ``Box`` observations (e.g. float64 physics states, uint8 RAM) to float32.

    :class:`gymnasium.wrappers.DtypeObservation` does the same but builds its space from
    float64 bounds and so warns about lost precision on every construction.
    """

    def __init__(self, env: gym.Env):
        inner = env.observation_space
        if not isinstance(inner, spaces.Box):
            raise TypeError(f"Float32Observation needs a Box observation space, got {inner}")
        super().__init__(env)
        self.observation_space = spaces.Box(
            inner.low.astype(np.float32), inner.high.astype(np.float32), dtype=np.float32
        )

    def observation(self, observation: Any) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)


class StackedFramesChannelFirst(gym.ObservationWrapper):
    """Turn stacked colour frames ``[S, H, W, C]`` into one image ``[S * C, H, W]``.

    Only needed for RGB Atari (``AtariOptions(grayscale=False)``): grayscale frames come
    out of ``FrameStackObservation`` as ``[S, H, W]`` already. Channels are ordered frame
    by frame (frame 0's RGB, then frame 1's, ...).
    """

    def __init__(self, env: gym.Env):
        inner = env.observation_space
        if not (isinstance(inner, spaces.Box) and len(inner.shape) == 4):
            raise TypeError(f"StackedFramesChannelFirst needs a rank-4 Box, got {inner}")
        super().__init__(env)
        stack, height, width, channels = inner.shape
        self.observation_space = spaces.Box(
            low=self.observation(inner.low),
            high=self.observation(inner.high),
            shape=(stack * channels, height, width),
            dtype=inner.dtype,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        stack, height, width, channels = observation.shape
        chw = np.moveaxis(observation, -1, 1)  # [S, C, H, W]
        return np.ascontiguousarray(chw.reshape(stack * channels, height, width))


class BinaryImageChannelFirst(gym.ObservationWrapper):
    """Turn a bool image ``[H, W, C]`` (MinAtar's) into a float32 ``[C, H, W]`` of 0s and 1s.

    float32, not uint8: the image torsos scale uint8 images by 1/255 and take a float
    image to be in [0, 1] already, which 0/1 values are. MinAtar's images are small
    (10 x 10 x at most 10 channels: 4 KB as float32), so the 4x size costs little.
    """

    def __init__(self, env: gym.Env):
        inner = env.observation_space
        if not (isinstance(inner, spaces.Box) and len(inner.shape) == 3 and inner.dtype == np.bool_):
            raise TypeError(f"BinaryImageChannelFirst needs a rank-3 bool Box [H, W, C], got {inner}")
        super().__init__(env)
        height, width, channels = inner.shape
        self.observation_space = spaces.Box(0.0, 1.0, (channels, height, width), dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(np.asarray(observation), -1, 0), dtype=np.float32)
