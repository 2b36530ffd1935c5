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
    "FlattenMultiDiscreteAction",
    "Float32Observation",
    "LifeLossInfo",
    "OneHotImageChannels",
    "OneHotObservation",
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


def _encoded_size(space: spaces.Space) -> int:
    """Length of :class:`OneHotObservation`'s encoding of ``space`` (TypeError if it has none)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    if isinstance(space, (spaces.MultiBinary, spaces.Box)):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Tuple):
        return sum(_encoded_size(part) for part in space.spaces)
    raise TypeError(
        f"OneHotObservation cannot encode {space} (accepted: Discrete, MultiDiscrete, MultiBinary, "
        "Box, and Tuples of them)"
    )


class OneHotObservation(gym.ObservationWrapper):
    """Encode a discrete (or mixed) observation as one flat float32 vector.

    - ``Discrete(n)``: a one-hot vector of length n (value ``start + i`` sets slot i);
    - ``MultiDiscrete(nvec)``: one one-hot block per component, in C order, concatenated
      (length ``sum(nvec)``); e.g. ``MultiDiscrete([3, 3])`` and ``[2, 0]`` give
      ``[0, 0, 1, 1, 0, 0]``;
    - ``MultiBinary`` and ``Box``: flattened and cast to float32 (``Box`` keeps its bounds);
    - ``Tuple``: its parts' encodings, concatenated in order.

    A value outside its space raises ValueError (it would otherwise set a neighbour's slot).
    """

    def __init__(self, env: gym.Env):
        inner = env.observation_space
        size = _encoded_size(inner)  # TypeError for a space it cannot encode
        super().__init__(env)
        low = np.zeros(size, np.float32)
        high = np.ones(size, np.float32)
        self._fill_bounds(inner, low, high, 0)
        self.observation_space = spaces.Box(low, high, (size,), dtype=np.float32)
        self._inner = inner

    @staticmethod
    def _fill_bounds(space: spaces.Space, low: np.ndarray, high: np.ndarray, at: int) -> int:
        if isinstance(space, spaces.Tuple):
            for part in space.spaces:
                at = OneHotObservation._fill_bounds(part, low, high, at)
            return at
        n = _encoded_size(space)
        if isinstance(space, spaces.Box):
            low[at:at + n] = np.asarray(space.low, np.float32).ravel()
            high[at:at + n] = np.asarray(space.high, np.float32).ravel()
        return at + n

    def observation(self, observation: Any) -> np.ndarray:
        out = np.zeros(self.observation_space.shape, np.float32)
        self._encode(self._inner, observation, out, 0)
        return out

    @staticmethod
    def _encode(space: spaces.Space, value: Any, out: np.ndarray, at: int) -> int:
        if isinstance(space, spaces.Discrete):
            i = int(value) - int(space.start)
            if not 0 <= i < space.n:
                raise ValueError(f"observation {value!r} is outside {space}")
            out[at + i] = 1.0
            return at + int(space.n)
        if isinstance(space, spaces.MultiDiscrete):
            nvec = space.nvec.ravel()
            i = (np.asarray(value) - space.start).ravel()
            if i.shape != nvec.shape or (i < 0).any() or (i >= nvec).any():
                raise ValueError(f"observation {value!r} is outside {space}")
            starts = np.concatenate(([0], np.cumsum(nvec)[:-1]))
            out[at + starts + i] = 1.0
            return at + int(nvec.sum())
        if isinstance(space, (spaces.MultiBinary, spaces.Box)):
            flat = np.asarray(value, np.float32).ravel()
            out[at:at + flat.size] = flat
            return at + flat.size
        for part_space, part in zip(space.spaces, value, strict=True):  # Tuple
            at = OneHotObservation._encode(part_space, part, out, at)
        return at


class OneHotImageChannels(gym.ObservationWrapper):
    """Turn an image of small integer codes into a float32 one-hot image ``[C, H, W]``.

    ``observation[key]`` (or the observation itself, ``key=None``) is an integer image
    ``[W, H, K]`` indexed ``[x, y, k]``, as MiniGrid's ``image`` is (K = 3 codes per cell:
    object, colour, state); code k takes values in ``range(channel_sizes[k])``. The result
    has ``C = sum(channel_sizes)`` channels, one per (k, value), each 1.0 where the cell has
    that value: ``out[offset_k + v, y, x] = 1`` for ``v = image[x, y, k]`` (rows are y, so
    MiniGrid's agent, at the bottom centre of its view, is in the last row). The rest of a
    dict observation (MiniGrid's ``direction`` and ``mission``) is dropped.

    float32 0/1, like :class:`BinaryImageChannelFirst`: the image torsos divide uint8 by 255.
    A code outside its range raises ValueError.
    """

    def __init__(self, env: gym.Env, channel_sizes: tuple[int, ...], key: str | None = "image"):
        inner = env.observation_space[key] if key is not None else env.observation_space
        if not (isinstance(inner, spaces.Box) and len(inner.shape) == 3
                and np.issubdtype(inner.dtype, np.integer) and inner.shape[2] == len(channel_sizes)):
            raise TypeError(f"OneHotImageChannels needs an integer image [W, H, {len(channel_sizes)}], got {inner}")
        super().__init__(env)
        self._key = key
        self._sizes = np.asarray(channel_sizes, np.int64)
        self._offsets = np.concatenate(([0], np.cumsum(self._sizes)[:-1]))
        width, height, _ = inner.shape
        self._rows, self._cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        self._rows, self._cols = self._rows[..., None], self._cols[..., None]  # [H, W, 1]
        self.observation_space = spaces.Box(0.0, 1.0, (int(self._sizes.sum()), height, width), dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        image = np.asarray(observation[self._key] if self._key is not None else observation)
        codes = image.transpose(1, 0, 2).astype(np.int64)  # [H, W, K], indexed [y, x, k]
        if (codes < 0).any() or (codes >= self._sizes).any():
            raise ValueError(f"image codes outside their ranges {tuple(self._sizes)}")
        out = np.zeros(self.observation_space.shape, np.float32)
        out[codes + self._offsets, self._rows, self._cols] = 1.0
        return out


class FlattenMultiDiscreteAction(gym.ActionWrapper):
    """Accept one ``Discrete(prod(nvec))`` action for a ``MultiDiscrete(nvec)`` action space.

    Action ``a`` is ``np.unravel_index(a, nvec)`` (C order: the last component varies
    fastest), e.g. for POPGym's Battleship ``MultiDiscrete([8, 8])`` action 10 is (1, 2).
    """

    def __init__(self, env: gym.Env):
        inner = env.action_space
        if not isinstance(inner, spaces.MultiDiscrete):
            raise TypeError(f"FlattenMultiDiscreteAction needs a MultiDiscrete action space, got {inner}")
        super().__init__(env)
        self._nvec = tuple(int(n) for n in inner.nvec.ravel())
        self._shape, self._start = inner.nvec.shape, inner.start
        self.action_space = spaces.Discrete(int(np.prod(self._nvec)))

    def action(self, action: Any) -> np.ndarray:
        parts = np.array(np.unravel_index(int(action), self._nvec), dtype=np.int64)
        return parts.reshape(self._shape) + self._start
