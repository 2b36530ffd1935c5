"""Groups of environments stepped together by one actor.

An :class:`EnvGroup` steps N environments at once with a send/recv split, so an actor
can compute on one group while another group's environments step (the native ALE
vector env runs them in C++ threads). Episodes reset automatically; the result of a
step reports, per environment:

- ``obs``: the next observation; after an episode end, already the next episode's first;
- ``reward``, ``terminated``, ``truncated``: as Gymnasium defines them (raw rewards);
- ``life_lost``: a life was lost on this step without the episode ending (Atari);
- ``final_obs``: ``{i: observation}`` for environments whose episode was *truncated*:
  the real last observation, which the learner bootstraps from.

Two implementations with identical shapes and semantics (tested):
:class:`GymEnvGroup` (any Gymnasium env, stepped in a Python loop) and
:class:`AleVectorGroup` (ale-py's C++ ``AtariVectorEnv``: frame skip with max-pooling,
resize, grayscale and frame stacking in native threads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from impala_rl.envs.factory import AtariOptions, is_atari, make_env


@dataclass
class StepResult:
    obs: np.ndarray
    reward: np.ndarray  # float32 [N]
    terminated: np.ndarray  # bool [N]
    truncated: np.ndarray  # bool [N]
    life_lost: np.ndarray  # bool [N]
    final_obs: dict[int, np.ndarray] = field(default_factory=dict)


class GymEnvGroup:
    """N Gymnasium environments stepped one after the other (reset done here on episode end)."""

    def __init__(self, envs: list):
        self.envs = envs
        self.num_envs = len(envs)
        self._actions: Any = None

    def reset(self, seed: int) -> np.ndarray:
        return np.stack([np.asarray(env.reset(seed=seed + i)[0]) for i, env in enumerate(self.envs)])

    def send(self, actions: np.ndarray) -> None:
        self._actions = actions

    def recv(self) -> StepResult:
        n = self.num_envs
        obs_list, final_obs = [], {}
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        life_lost = np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            action = self._actions[i]
            obs, r, term, trunc, info = env.step(action.item() if action.ndim == 0 else action)
            reward[i], terminated[i], truncated[i] = r, term, trunc
            life_lost[i] = bool(info.get("life_lost", False)) and not (term or trunc)
            if term or trunc:
                if trunc and not term:
                    final_obs[i] = np.asarray(obs)
                obs, _ = env.reset()
            obs_list.append(np.asarray(obs))
        return StepResult(np.stack(obs_list), reward, terminated, truncated, life_lost, final_obs)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def ale_game_name(env_id: str) -> str:
    """'ALE/MontezumaRevenge-v5' -> 'montezuma_revenge' (the ROM name ale-py expects)."""
    name = env_id.split("/", 1)[1].rsplit("-v", 1)[0]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AleVectorGroup:
    """ale-py's native vector env configured as :func:`impala_rl.envs.make_env`'s pipeline.

    Same observations ([4, 84, 84] uint8, oldest frame first), same action set, raw
    rewards (no clipping), no FIRE on reset, truncation at ``max_episode_frames``.
    """

    def __init__(self, env_id: str, num_envs: int, options: AtariOptions, num_threads: int = 0):
        from ale_py.vector_env import AtariVectorEnv

        if not options.grayscale:
            raise ValueError("the native ALE vector env is used for grayscale pipelines only")
        self.num_envs = num_envs
        self.options = options
        self.env = AtariVectorEnv(
            ale_game_name(env_id), num_envs, num_threads=num_threads,
            max_num_frames_per_episode=options.max_episode_frames or 0,
            repeat_action_probability=options.repeat_action_probability,
            full_action_space=options.full_action_space, autoreset_mode="SameStep",
            img_height=options.screen_size, img_width=options.screen_size, grayscale=True,
            stack_num=options.frame_stack, frameskip=options.frame_skip, maxpool=True,
            noop_max=options.noop_max, episodic_life=False, reward_clipping=False, use_fire_reset=False)
        self.single_action_space = self.env.single_action_space
        self.single_observation_space = self.env.single_observation_space
        self._lives = np.zeros(num_envs, np.int64)

    def reset(self, seed: int) -> np.ndarray:
        obs, info = self.env.reset(seed=seed)
        self._lives = np.asarray(info["lives"]).copy()
        return obs

    def send(self, actions: np.ndarray) -> None:
        self.env.send(np.ascontiguousarray(actions, dtype=np.int64))

    def recv(self) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.recv()
        done = terminated | truncated
        lives = np.asarray(info["lives"])
        life_lost = (lives < self._lives) & ~done
        self._lives = lives.copy()
        final_obs = {}
        only_truncated = truncated & ~terminated
        if only_truncated.any():
            for i in np.flatnonzero(only_truncated):
                final_obs[int(i)] = np.asarray(info["final_obs"][i])
        return StepResult(obs, reward.astype(np.float32, copy=False), terminated.astype(bool, copy=False),
                          truncated.astype(bool, copy=False), life_lost, final_obs)

    def close(self) -> None:
        self.env.close()


def native_ale_available() -> bool:
    try:
        from ale_py.vector_env import AtariVectorEnv  # noqa: F401
    except ImportError:
        return False
    return True


def make_env_group(env_id: str, num_envs: int, seed: int, atari: AtariOptions | None = None,
                   native: str = "auto", **kwargs) -> GymEnvGroup | AleVectorGroup:
    """N environments as one group: the native ALE vector env for Atari when available
    (``native='auto'`` or ``'on'``), else Gymnasium envs made by :func:`make_env`."""
    atari = atari or AtariOptions()
    use_native = (is_atari(env_id) and native != "off" and not kwargs and atari.grayscale
                  and native_ale_available())
    if native == "on" and not use_native:
        raise ValueError(f"the native ALE vector env cannot run {env_id} with these options "
                         f"(Atari ids with grayscale observations only, ale-py >= 0.10)")
    if use_native:
        return AleVectorGroup(env_id, num_envs, atari)
    return GymEnvGroup([make_env(env_id, seed=seed + i, atari=atari, **kwargs) for i in range(num_envs)])

