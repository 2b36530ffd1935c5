"""make_env, check_env_id and describe on classic-control and small hand-made envs."""

import os
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from impala_rl.envs import EnvSpec, UnknownEnvError, check_env_id, describe, make_env


class RecorderEnv(gym.Env):
    """One-step-at-a-time env that records the actions it receives."""

    def __init__(self, observation_space=None, action_space=None, reward=7.5):
        self.observation_space = observation_space or spaces.Box(-1, 1, (3,), np.float64)
        self.action_space = action_space or spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.reward = reward
        self.actions = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        self.actions.append(np.array(action))
        return self.observation_space.sample(), self.reward, False, False, {}


@pytest.fixture
def register():
    """Register RecorderEnv variants under temporary ids; yields ``register(name, **kw)``."""
    added = []

    def _register(name, **env_kwargs):
        env_id = f"impala_test/{name}-v0"
        gym.register(env_id, entry_point=RecorderEnv, kwargs=env_kwargs, disable_env_checker=True)
        added.append(env_id)
        return env_id

    yield _register
    for env_id in added:
        del gym.registry[env_id]


# -- check_env_id ----------------------------------------------------------------------


@pytest.mark.parametrize("env_id,wrong", [
    ("CartPole-v1", "CartPole-v9"),
    ("ALE/Pong-v5", "ALE/Pong-v9"),
    ("Pendulum-v1", "Pendulum-v9"),
    ("MinAtar/Breakout-v1", "MinAtar/Breakout-v9"),
    ("CartPole-v1,Pendulum-v1", "CartPole-v1,Pendulum-v9"),  # a multi-task run: every id is checked
])
def test_known_ids_pass_and_an_unknown_version_of_them_does_not(env_id, wrong):
    assert check_env_id(env_id) is None
    # Accepted ids are registered (ALE and MinAtar ones by the check itself), so make_env can use them.
    assert all(part in gym.registry for part in env_id.split(","))
    # The check tells ids apart: the same game at a version that does not exist is refused,
    # naming the bad id and suggesting the known one first.
    bad, good = wrong.split(",")[-1], env_id.split(",")[-1]
    with pytest.raises(UnknownEnvError, match=f"unknown environment id '{re.escape(bad)}'; "
                                              f"did you mean: {re.escape(good)},"):
        check_env_id(wrong)


def test_unknown_id_suggests_close_match():
    with pytest.raises(UnknownEnvError) as err:
        check_env_id("ALE/Pongg-v5")
    message = str(err.value)
    assert message.startswith("unknown environment id 'ALE/Pongg-v5'; did you mean: ALE/Pong-v5")
    assert "any registered Gymnasium id is accepted, e.g. CartPole-v1, ALE/Pong-v5" in message
    assert "\n" not in message
    assert isinstance(err.value, ValueError)


def test_unknown_id_without_close_match_still_says_what_is_accepted():
    with pytest.raises(UnknownEnvError, match="any registered Gymnasium id is accepted"):
        check_env_id("zzzzzzzzzzzzzzzzzzzzzzzz")


def test_make_env_checks_the_id_first():
    with pytest.raises(UnknownEnvError, match="did you mean: CartPole-v1"):
        make_env("CartPol-v1")


# -- CartPole: categorical, float32, TimeLimit kept ---------------------------------------


def test_cartpole_spec():
    env = make_env("CartPole-v1")
    assert describe(env) == EnvSpec(
        obs_shape=(4,), obs_dtype=np.dtype(np.float32), policy_type="categorical", action_dim=2
    )
    assert env.spec.max_episode_steps == 500  # gym.make's TimeLimit is kept


def test_cartpole_truncates_at_max_episode_steps():
    env = make_env("CartPole-v1", seed=0, max_episode_steps=5)
    env.reset()
    outcomes = [env.step(t % 2)[2:4] for t in range(5)]  # alternate left/right: stays up
    assert outcomes[:4] == [(False, False)] * 4
    assert outcomes[4] == (False, True)


def test_same_seed_same_first_observation():
    first = [make_env("CartPole-v1", seed=s).reset()[0] for s in (3, 3, 4)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


# -- continuous actions -----------------------------------------------------------------


def test_pendulum_is_gaussian_with_bounds():
    spec = describe(make_env("Pendulum-v1"))
    assert spec.policy_type == "gaussian" and spec.action_dim == 1
    assert spec.action_low == (-2.0,) and spec.action_high == (2.0,)
    assert spec.obs_shape == (3,) and spec.obs_dtype == np.float32 and not spec.is_image


def test_pendulum_receives_actions_clipped_to_its_bounds(monkeypatch):
    env = make_env("Pendulum-v1", seed=0)
    env.reset()
    received = []
    inner_step = env.unwrapped.step
    monkeypatch.setattr(env.unwrapped, "step", lambda a: received.append(a) or inner_step(a))
    env.step(np.array([100.0], dtype=np.float32))
    env.step(np.array([-0.5], dtype=np.float32))
    np.testing.assert_array_equal(np.concatenate(received), [2.0, -0.5])


def test_box_actions_are_clipped_before_the_env(register):
    env = make_env(register("Clip"), seed=0)
    env.reset()
    env.step(np.array([5.0, -0.5], dtype=np.float32))
    np.testing.assert_array_equal(env.unwrapped.actions[-1], [1.0, -0.5])
    assert describe(env).action_low == (-1.0, -1.0)  # bounds stay visible after clipping


def test_multidimensional_box_actions_take_a_flat_vector(register):
    box = spaces.Box(np.array([[0, 1], [2, 3]]), np.array([[1, 2], [3, 4]]), dtype=np.float32)
    env = make_env(register("Flat", action_space=box), seed=0)
    spec = describe(env)
    assert spec.action_dim == 4 and spec.action_low == (0.0, 1.0, 2.0, 3.0)
    env.reset()
    env.step(np.array([9.0, 0.0, 2.5, 9.0], dtype=np.float32))
    np.testing.assert_array_equal(env.unwrapped.actions[-1], [[1.0, 1.0], [2.5, 4.0]])


# -- observations and rewards pass through as the env made them ----------------------------


def test_vector_observations_become_float32_rewards_stay_raw(register):
    env = make_env(register("Raw"), seed=0)
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and describe(env).obs_dtype == np.float32
    assert env.step(np.zeros(2, np.float32))[1] == 7.5


# -- unsupported spaces ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, env_kwargs, fragment",
    [
        (
            "DictObs",
            {"observation_space": spaces.Dict({"x": spaces.Box(0, 1, (2,))})},
            "unsupported observation space Dict",
        ),
        ("DiscreteObs", {"observation_space": spaces.Discrete(5)}, "observation space Discrete"),
        (
            "MatrixObs",
            {"observation_space": spaces.Box(0, 1, (3, 3), np.float32)},
            "unsupported observation space Box.* rank 1",
        ),
        (
            "MultiDiscreteAct",
            {"action_space": spaces.MultiDiscrete([2, 3])},
            "unsupported action space MultiDiscrete",
        ),
        ("ShiftedDiscrete", {"action_space": spaces.Discrete(3, start=1)}, "must start at 0"),
    ],
)
def test_unsupported_spaces_are_refused_by_name(register, name, env_kwargs, fragment):
    env_id = register(name, **env_kwargs)
    with pytest.raises(ValueError, match=fragment) as err:
        make_env(env_id)
    assert str(err.value).startswith(env_id)


def test_describe_refuses_float64_vectors_that_make_env_would_cast():
    raw = RecorderEnv()  # float64 observations, not through make_env
    with pytest.raises(ValueError, match="make_env casts vector observations to float32"):
        describe(raw)


# -- no import-time side effects ----------------------------------------------------------


def test_import_registers_nothing_and_needs_no_torch():
    code = (
        "import sys, impala_rl.envs, gymnasium as gym\n"
        "assert 'ale_py' not in sys.modules, 'ale_py imported at import time'\n"
        "assert 'torch' not in sys.modules, 'torch imported by envs'\n"
        "assert not any(k.startswith('ALE/') for k in gym.registry)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("env_id,family", [
    ("ALE/Pong-v5", "atari"),
    ("MinAtar/Breakout-v1", "minatar"),
    ("Pendulum-v1", "continuous"),
    ("CartPole-v1", "classic_control"),
    ("LunarLander-v3", "classic_control"),
])
def test_env_family(env_id, family):
    from impala_rl.config import PRESETS
    from impala_rl.envs import FAMILIES, env_family

    assert env_family(env_id) == family
    assert set(FAMILIES) == set(PRESETS)  # every family has a preset


def test_env_family_of_an_unknown_id_raises():
    from impala_rl.envs import UnknownEnvError, env_family

    with pytest.raises(UnknownEnvError):
        env_family("NoSuchEnv-v0")
