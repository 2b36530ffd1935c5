"""MinAtar: lazily registered ids, float32 channel-first 0/1 observations, env groups."""

import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from impala_rl.envs import (
    EnvSpec,
    UnknownEnvError,
    check_env_id,
    describe,
    frames_per_step,
    is_atari,
    is_minatar,
    make_env,
)
from impala_rl.envs import factory
from impala_rl.envs.vector import GymEnvGroup, make_env_group
from impala_rl.envs.wrappers import BinaryImageChannelFirst

BREAKOUT = "MinAtar/Breakout-v1"


def _subprocess(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_ids_are_registered_on_first_minatar_check_only():
    _subprocess(
        "import sys, gymnasium as gym\n"
        "from impala_rl.envs import check_env_id, make_env\n"
        "minatar_ids = lambda: [k for k in gym.registry if k.startswith('MinAtar/')]\n"
        "assert 'minatar' not in sys.modules and not minatar_ids(), 'registered at import'\n"
        "check_env_id('CartPole-v1')\n"
        "assert 'minatar' not in sys.modules, 'a non-MinAtar id imported minatar'\n"
        "check_env_id('MinAtar/Breakout-v1')\n"
        "ids = set(minatar_ids())\n"
        "for game in ('Asterix', 'Breakout', 'Freeway', 'Seaquest', 'SpaceInvaders'):\n"
        "    assert {f'MinAtar/{game}-v0', f'MinAtar/{game}-v1'} <= ids, ids\n"
    )


def test_make_env_registers_too_in_a_fresh_process():
    _subprocess(
        "from impala_rl.envs import make_env\n"
        "assert make_env('MinAtar/SpaceInvaders-v1').observation_space.shape == (6, 10, 10)\n"
    )


def test_is_minatar():
    assert is_minatar(BREAKOUT) and is_minatar("MinAtar/Seaquest-v0")
    assert is_minatar("some.module:MinAtar/Breakout-v1")
    for other in ("ALE/Breakout-v5", "CartPole-v1", "minatar/Breakout-v1", "Breakout-v1"):
        assert not is_minatar(other)
    assert not is_atari(BREAKOUT)
    assert frames_per_step(BREAKOUT) == 1  # no action repeat


def test_check_env_id_suggests_minatar_ids():
    check_env_id(BREAKOUT)
    with pytest.raises(UnknownEnvError, match="did you mean: MinAtar/Breakout-v1"):
        check_env_id("MinAtar/Brekout-v1")


def test_a_missing_minatar_package_is_named(monkeypatch):
    monkeypatch.setattr(factory, "_register_minatar", lambda: False)
    with pytest.raises(UnknownEnvError, match="minatar package is not installed: pip install minatar"):
        check_env_id(BREAKOUT)


def test_registration_leaves_ids_registered_by_the_user_alone():
    check_env_id(BREAKOUT)  # registered now (as if by the user's minatar.gym.register_envs())
    factory._register_minatar.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env_id(BREAKOUT)
    assert not [w for w in caught if "Overriding" in str(w.message)]


@pytest.mark.filterwarnings("ignore:.*is out of date:DeprecationWarning")  # the v0 ids
@pytest.mark.parametrize(
    "env_id, channels, actions",
    [
        ("MinAtar/Breakout-v1", 4, 3),
        ("MinAtar/SpaceInvaders-v1", 6, 4),
        ("MinAtar/Seaquest-v1", 10, 6),
        ("MinAtar/Breakout-v0", 4, 6),  # v0: the full action set
    ],
)
def test_spec_is_a_float32_channel_first_image(env_id, channels, actions):
    env = make_env(env_id, seed=0)
    assert describe(env) == EnvSpec(
        obs_shape=(channels, 10, 10),
        obs_dtype=np.dtype(np.float32),
        policy_type="categorical",
        action_dim=actions,
        is_image=True,
        obs_in_unit_interval=True,  # 0/1 channels
    )
    obs, _ = env.reset()
    assert obs.shape == (channels, 10, 10) and obs.dtype == np.float32
    assert obs.flags.c_contiguous
    assert set(np.unique(obs)) <= {0.0, 1.0} and obs.any()
    env.close()


def test_observation_is_the_game_state_moved_to_channels_first():
    env = make_env(BREAKOUT, seed=1)
    obs, _ = env.reset()
    for t in range(5):
        raw = env.unwrapped.game.state()  # [10, 10, C] bool
        assert raw.shape == (10, 10, 4) and raw.dtype == np.bool_
        for c in range(4):
            np.testing.assert_array_equal(obs[c], raw[:, :, c].astype(np.float32))
        obs = env.step(t % 3)[0]


def test_same_seed_same_episode():
    def rollout(seed):
        env = make_env(BREAKOUT, seed=seed)
        obs = [env.reset()[0]]
        for t in range(40):  # sticky actions draw from the seeded game RNG
            obs.append(env.step(t % 3)[0])
        return np.stack(obs)

    a, b, c = rollout(5), rollout(5), rollout(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_env_group_steps_and_resets_minatar():
    # The path actors take: make_env_group -> GymEnvGroup of make_env envs.
    group = make_env_group(BREAKOUT, 3, seed=0, native="auto")
    assert isinstance(group, GymEnvGroup)
    try:
        obs = group.reset(seed=0)
        assert obs.shape == (3, 4, 10, 10) and obs.dtype == np.float32
        rng = np.random.default_rng(0)
        ended = 0
        for _ in range(2000):  # random play loses the ball within a few dozen steps
            group.send(rng.integers(0, 3, size=3))
            r = group.recv()
            assert r.obs.shape == (3, 4, 10, 10) and r.obs.dtype == np.float32
            assert r.reward.dtype == np.float32 and not r.life_lost.any()
            ended += int(r.terminated.sum())
            if ended >= 3:
                break
        assert ended >= 3  # episodes end by termination and the group resets them
        assert not r.final_obs  # no TimeLimit: nothing is truncated
    finally:
        group.close()


def test_wrapper_refuses_what_is_not_a_bool_image():
    class Env(gym.Env):
        observation_space = spaces.Box(0, 255, (10, 10, 3), np.uint8)
        action_space = spaces.Discrete(2)

    with pytest.raises(TypeError, match="rank-3 bool Box"):
        BinaryImageChannelFirst(Env())
