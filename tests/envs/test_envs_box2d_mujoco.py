"""Box2D (LunarLander-v3) and MuJoCo (HalfCheetah-v5) through make_env, describe and env groups.

Both are dependencies (gymnasium[box2d,mujoco] in pyproject.toml): nothing here is skipped
when they are missing, so a broken install fails.
"""

import numpy as np
import pytest

from impala_rl.envs import EnvSpec, describe, make_env
from impala_rl.envs.vector import GymEnvGroup, make_env_group

# Box2D's SWIG bindings warn on import under Python >= 3.11; nothing to act on.
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    """MuJoCo appends its warnings (HalfCheetah's deprecated ``settotalmass``) to
    ./MUJOCO_LOG.TXT: keep that file out of the working tree."""
    monkeypatch.chdir(tmp_path)


def test_lunar_lander_is_categorical_over_4_actions():
    env = make_env("LunarLander-v3", seed=0)
    assert describe(env) == EnvSpec(
        obs_shape=(8,), obs_dtype=np.dtype(np.float32), policy_type="categorical", action_dim=4
    )
    assert env.spec.max_episode_steps == 1000  # TimeLimit kept: truncation bootstraps
    obs, _ = env.reset()
    obs, reward, *_ = env.step(2)
    assert obs.shape == (8,) and obs.dtype == np.float32 and np.isfinite(reward)
    env.close()


def test_lunar_lander_same_seed_same_start():
    first = [make_env("LunarLander-v3", seed=s).reset()[0] for s in (3, 3, 4)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


def test_continuous_lunar_lander_is_gaussian():
    spec = describe(make_env("LunarLander-v3", continuous=True))
    assert spec.policy_type == "gaussian" and spec.action_dim == 2
    assert spec.action_low == (-1.0, -1.0) and spec.action_high == (1.0, 1.0)


def test_half_cheetah_is_gaussian_with_6_bounded_actions():
    env = make_env("HalfCheetah-v5", seed=0)
    assert describe(env) == EnvSpec(
        obs_shape=(17,),
        obs_dtype=np.dtype(np.float32),  # MuJoCo's float64 cast by make_env
        policy_type="gaussian",
        action_dim=6,
        action_low=(-1.0,) * 6,
        action_high=(1.0,) * 6,
    )
    assert env.spec.max_episode_steps == 1000
    obs, _ = env.reset()
    assert obs.shape == (17,) and obs.dtype == np.float32
    received = []
    inner_step = env.unwrapped.step
    env.unwrapped.step = lambda a: received.append(np.array(a)) or inner_step(a)
    obs, reward, terminated, truncated, _ = env.step(np.array([3.0, -3.0, 0.5, 0, 0, 0], np.float32))
    np.testing.assert_array_equal(received[0], [1.0, -1.0, 0.5, 0, 0, 0])  # clipped to bounds
    assert obs.dtype == np.float32 and np.isfinite(reward) and not (terminated or truncated)
    env.close()


def test_half_cheetah_env_group_takes_action_vectors():
    group = make_env_group("HalfCheetah-v5", 2, seed=0)
    assert isinstance(group, GymEnvGroup)
    try:
        obs = group.reset(seed=0)
        assert obs.shape == (2, 17) and obs.dtype == np.float32
        for _ in range(3):
            group.send(np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32))
            r = group.recv()
        assert r.obs.shape == (2, 17) and r.obs.dtype == np.float32
        assert r.reward.shape == (2,) and np.isfinite(r.reward).all()
    finally:
        group.close()
