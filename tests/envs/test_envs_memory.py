"""Memory tasks: POPGym (popgym/<Task>-v0) and MiniGrid ids, registered on request, one-hot encoded."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from impala_rl.envs import (
    EnvSpec,
    UnknownEnvError,
    check_env_id,
    describe,
    env_family,
    frames_per_step,
    is_memory_task,
    make_env,
)
from impala_rl.envs.vector import GymEnvGroup, make_env_group
from impala_rl.envs.wrappers import FlattenMultiDiscreteAction, OneHotImageChannels, OneHotObservation

pytest.importorskip("popgym")
pytest.importorskip("minigrid")

# id -> (observation shape, actions, episode length of random play or None if it varies)
TASKS = {
    "popgym/RepeatPreviousEasy-v0": ((4,), 4, 51),
    "popgym/AutoencodeEasy-v0": ((6,), 4, 103),
    "popgym/ConcentrationEasy-v0": ((52 * 3,), 52, 104),
    "MiniGrid-MemoryS11-v0": ((20, 7, 7), 7, None),
}
OTHER_LEVELS = {  # made and stepped once each
    "popgym/RepeatPreviousMedium-v0": ((4,), 4),
    "popgym/RepeatPreviousHard-v0": ((4,), 4),
    "popgym/AutoencodeMedium-v0": ((6,), 4),
    "popgym/AutoencodeHard-v0": ((6,), 4),
    "popgym/ConcentrationMedium-v0": ((104 * 3,), 104),
    "popgym/ConcentrationHard-v0": ((52 * 14,), 52),
}


def _subprocess(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# -- ids, registration, family --------------------------------------------------------------


def test_packages_are_imported_only_for_their_ids():
    _subprocess(
        "import sys, gymnasium as gym\n"
        "from impala_rl.envs import check_env_id, env_family\n"
        "loaded = lambda: {'popgym', 'minigrid'} & set(sys.modules)\n"
        "assert not loaded() and not [k for k in gym.registry if k.startswith('popgym')], 'at import'\n"
        "check_env_id('CartPole-v1'); env_family('CartPole-v1')\n"
        "assert not loaded(), 'a classic-control id imported popgym or minigrid'\n"
        "check_env_id('popgym/RepeatPreviousEasy-v0')\n"
        "assert loaded() == {'popgym'}, loaded()\n"
        "check_env_id('MiniGrid-MemoryS11-v0')\n"
        "assert loaded() == {'popgym', 'minigrid'}, loaded()\n"
    )


def test_make_env_registers_too_in_a_fresh_process():
    _subprocess(
        "from impala_rl.envs import make_env\n"
        "assert make_env('popgym/AutoencodeEasy-v0').observation_space.shape == (6,)\n"
        "assert make_env('MiniGrid-MemoryS11-v0').observation_space.shape == (20, 7, 7)\n"
    )


@pytest.mark.parametrize("env_id", [*TASKS, *OTHER_LEVELS, "popgym-RepeatPreviousEasy-v0"])
def test_family_is_memory(env_id):
    assert env_family(env_id) == "memory"
    assert is_memory_task(env_id)
    assert frames_per_step(env_id) == 1


def test_other_ids_are_not_memory_tasks():
    for env_id in ("CartPole-v1", "MinAtar/Breakout-v1", "NoSuchEnv-v0"):
        assert not is_memory_task(env_id)
    assert env_family("CartPole-v1") == "classic_control"


def test_popgym_ids_map_to_popgym_classes():
    check_env_id("popgym/ConcentrationEasy-v0")
    ours, native = gym.registry["popgym/ConcentrationEasy-v0"], gym.registry["popgym-ConcentrationEasy-v0"]
    assert ours.entry_point == native.entry_point == "popgym.envs.concentration:ConcentrationEasy"


def test_an_unknown_popgym_id_gets_the_one_line_error_with_suggestions():
    with pytest.raises(UnknownEnvError) as err:
        check_env_id("popgym/RepeatPreviousEsay-v0")
    message = str(err.value)
    assert message.startswith("unknown environment id 'popgym/RepeatPreviousEsay-v0'; "
                              "did you mean: popgym/RepeatPreviousEasy-v0")
    assert "\n" not in message
    with pytest.raises(UnknownEnvError, match="did you mean: .*MiniGrid-MemoryS11-v0"):
        make_env("MiniGrid-MemoryS12-v0")
    with pytest.raises(UnknownEnvError):
        env_family("popgym/NoSuchTask-v0")


def test_a_missing_package_is_named(monkeypatch):
    from impala_rl.envs import factory

    monkeypatch.setattr(factory, "register_popgym", lambda: False)
    monkeypatch.setattr(factory, "register_minigrid", lambda: False)
    with pytest.raises(UnknownEnvError, match="popgym package is not installed: pip install popgym"):
        check_env_id("popgym/NotRegisteredYet-v0")
    with pytest.raises(UnknownEnvError, match="minigrid package is not installed: pip install minigrid"):
        check_env_id("MiniGrid-NotRegisteredYet-v0")


# -- make_env: spaces, spec, episodes -----------------------------------------------------------


@pytest.mark.parametrize("env_id", TASKS)
def test_spec_and_a_random_episode(env_id):
    shape, actions, length = TASKS[env_id]
    env = make_env(env_id, seed=0)
    spec = describe(env)
    assert spec == EnvSpec(obs_shape=shape, obs_dtype=np.dtype(np.float32), policy_type="categorical",
                           action_dim=actions, is_image=len(shape) == 3, obs_in_unit_interval=True)
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    steps, total, done = 0, 0.0, False
    while not done:
        assert obs.shape == spec.obs_shape and obs.dtype == spec.obs_dtype and obs.flags.c_contiguous
        assert set(np.unique(obs)) <= {0.0, 1.0}
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(actions)))
        total += float(reward)
        steps += 1
        done = terminated or truncated
    if length is not None:
        assert steps == length
    assert -1.0 - 1e-6 <= total <= 1.0 + 1e-6
    env.close()


@pytest.mark.parametrize("env_id", OTHER_LEVELS)
def test_other_levels_make_and_step(env_id):
    shape, actions = OTHER_LEVELS[env_id]
    env = make_env(env_id, seed=0)
    assert describe(env).obs_shape == shape and describe(env).action_dim == actions
    assert env.reset()[0].shape == shape and env.step(0)[0].shape == shape
    env.close()


def test_same_seed_same_episode():
    def rollout(env_id, seed):
        env = make_env(env_id, seed=seed)
        obs = [env.reset()[0]]
        obs += [env.step(t % 3)[0] for t in range(30)]
        return np.stack(obs)

    for env_id in ("popgym/RepeatPreviousEasy-v0", "MiniGrid-MemoryS11-v0"):
        a, b, c = rollout(env_id, 5), rollout(env_id, 5), rollout(env_id, 6)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("env_id", ["popgym/ConcentrationEasy-v0", "MiniGrid-MemoryS11-v0"])
def test_env_group_steps_and_resets(env_id):
    shape, actions, _ = TASKS[env_id]
    group = make_env_group(env_id, 3, seed=0)
    assert isinstance(group, GymEnvGroup)
    try:
        obs = group.reset(seed=0)
        assert obs.shape == (3, *shape) and obs.dtype == np.float32
        rng = np.random.default_rng(0)
        ended = 0
        for _ in range(700):  # Concentration ends at 104 steps, MiniGrid at 605 at the latest
            group.send(rng.integers(0, actions, size=3))
            r = group.recv()
            assert r.obs.shape == (3, *shape) and r.obs.dtype == np.float32
            ended += int(r.terminated.sum() + r.truncated.sum())
            if ended >= 3:
                break
        assert ended >= 3
    finally:
        group.close()


# -- the encodings, by hand ---------------------------------------------------------------


def test_repeat_previous_observation_is_the_suit_one_hot():
    env = make_env("popgym/RepeatPreviousEasy-v0", seed=3)
    obs, _ = env.reset()
    for t in range(10):
        suit = int(env.unwrapped.deck.show("player", ["suits_idx"])[0, -1])
        np.testing.assert_array_equal(obs, np.eye(4, dtype=np.float32)[suit])
        obs = env.step(t % 4)[0]


def test_autoencode_observation_is_mode_then_suit():
    env = make_env("popgym/AutoencodeEasy-v0", seed=0)
    env.reset()
    mode, suit = env.unwrapped.make_obs(env.unwrapped.deck["system"][-1])
    obs = env.observation((mode, suit))
    expected = np.zeros(6, np.float32)
    expected[mode] = expected[2 + suit] = 1.0
    np.testing.assert_array_equal(obs, expected)


def test_concentration_observation_one_hot_per_card():
    env = make_env("popgym/ConcentrationEasy-v0", seed=0)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs.reshape(52, 3), np.tile([0, 0, 1], (52, 1)))  # all face down (2)
    obs = env.step(7)[0]  # flip card 7: its colour shows
    colour = int(env.unwrapped.state[7])
    np.testing.assert_array_equal(obs.reshape(52, 3)[7], np.eye(3)[colour])
    np.testing.assert_array_equal(np.delete(obs.reshape(52, 3), 7, axis=0), np.tile([0, 0, 1], (51, 1)))


class _Fixed(gym.Env):
    def __init__(self, observation_space, value, action_space=None):
        self.observation_space, self.value = observation_space, value
        self.action_space = action_space or spaces.Discrete(2)
        self.actions = []

    def reset(self, *, seed=None, options=None):
        return self.value, {}

    def step(self, action):
        self.actions.append(action)
        return self.value, 0.0, False, False, {}


def test_one_hot_observation_hand_cases():
    space = spaces.Tuple((spaces.Discrete(3, start=1), spaces.MultiDiscrete([2, 3]),
                          spaces.Box(-2.0, 2.0, (2,), np.float64), spaces.MultiBinary(2)))
    env = OneHotObservation(_Fixed(space, (3, np.array([1, 0]), np.array([0.5, -1.5]), np.array([1, 0]))))
    assert env.observation_space == spaces.Box(
        np.array([0, 0, 0, 0, 0, 0, 0, 0, -2, -2, 0, 0], np.float32),
        np.array([1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 1, 1], np.float32), dtype=np.float32)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0, 0, 1, 0, 1, 1, 0, 0, 0.5, -1.5, 1, 0])
    assert obs.dtype == np.float32


def test_one_hot_observation_refuses_values_outside_the_space_and_other_spaces():
    with pytest.raises(ValueError, match="outside"):
        OneHotObservation(_Fixed(spaces.Discrete(3), 3)).reset()
    with pytest.raises(ValueError, match="outside"):
        OneHotObservation(_Fixed(spaces.MultiDiscrete([2, 2]), np.array([0, 2]))).reset()
    with pytest.raises(TypeError, match="cannot encode"):
        OneHotObservation(_Fixed(spaces.Dict({"a": spaces.Discrete(2)}), {"a": 0}))


def test_minigrid_image_one_hot_per_code_channel_first():
    image = np.zeros((7, 7, 3), np.uint8)  # [x, y, (object, colour, state)]
    image[..., 0] = 1  # empty
    image[3, 6] = (5, 1, 0)  # a green key under the agent (x=3, bottom row y=6)
    image[0, 2] = (2, 5, 2)  # a grey wall at x=0, y=2 (state 2 for the test)
    space = spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8), "direction": spaces.Discrete(4)})
    env = OneHotImageChannels(_Fixed(space, {"image": image, "direction": 1}), (11, 6, 3))
    assert env.observation_space == spaces.Box(0.0, 1.0, (20, 7, 7), np.float32)
    obs, _ = env.reset()
    assert obs.shape == (20, 7, 7) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs.sum(0), np.full((7, 7), 3.0))  # one value per code
    assert obs[5, 6, 3] == obs[11 + 1, 6, 3] == obs[17 + 0, 6, 3] == 1.0  # [channel, y, x]
    assert obs[2, 2, 0] == obs[11 + 5, 2, 0] == obs[17 + 2, 2, 0] == 1.0
    assert obs[1].sum() == 47 and obs[11].sum() == 47  # the other cells: empty, colour 0
    image[1, 1, 1] = 6
    with pytest.raises(ValueError, match="outside"):
        env.observation({"image": image})


def test_minigrid_observation_is_the_view_moved_to_channels_first():
    env = make_env("MiniGrid-MemoryS11-v0", seed=0)
    env.reset()
    raw = env.unwrapped.gen_obs()["image"]  # [x, y, 3]
    obs = env.observation({"image": raw})
    offsets = (0, 11, 17)
    for x in range(7):
        for y in range(7):
            for k in range(3):
                assert obs[offsets[k] + raw[x, y, k], y, x] == 1.0
    assert obs.sum() == 7 * 7 * 3


def test_flatten_multi_discrete_action():
    inner = _Fixed(spaces.Discrete(2), 0, action_space=spaces.MultiDiscrete([8, 8]))
    env = FlattenMultiDiscreteAction(inner)
    assert env.action_space == spaces.Discrete(64)
    env.step(10)
    np.testing.assert_array_equal(inner.actions[-1], [1, 2])
    battleship = make_env("popgym/BattleshipEasy-v0", seed=0)  # MultiDiscrete([8, 8]) actions
    assert describe(battleship).action_dim == 64
    battleship.step(63)


# -- the preset and the network -----------------------------------------------------------------


@pytest.mark.parametrize("env_id, torso", [("popgym/RepeatPreviousEasy-v0", "mlp"), ("MiniGrid-MemoryS11-v0", "minatar")])
def test_the_memory_preset_and_both_networks(env_id, torso):
    torch = pytest.importorskip("torch")
    from impala_rl.agents.impala import build_model, resolve_torso
    from impala_rl.config import TrainConfig

    cfg = TrainConfig.for_env(env_id)
    env = make_env(env_id, seed=0)
    spec = describe(env)
    assert cfg.use_lstm and resolve_torso(cfg, spec) == torso  # --torso auto: MinAtar's torso for a 7 x 7 view
    obs = torch.from_numpy(env.reset()[0])[None, None]  # [T=1, B=1, ...]
    for use_lstm in (True, False):  # the feed-forward baseline (--no-use-lstm) too
        model = build_model(TrainConfig.for_env(env_id, use_lstm=use_lstm), spec)
        out, _ = model(obs, torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, 1),
                       torch.ones(1, 1, dtype=torch.bool), model.initial_state(1))
        assert out.policy_params.shape == (1, 1, spec.action_dim)


@pytest.mark.parametrize("agent, options", [("impala", ""), ("merlin", "z_size=8,memory_slots=16,mbp_hidden=32,"
                                                                        "policy_hidden=32,decoder_hidden=32"),
                                            ("rainbow", "replay_capacity=2000,warmup=100")])
@pytest.mark.parametrize("env_id", ["popgym/RepeatPreviousEasy-v0", "popgym/ConcentrationEasy-v0", "MiniGrid-MemoryS11-v0"])
def test_every_agent_trains_on_the_memory_tasks(tmp_path, agent, options, env_id):
    # One-hot (RepeatPrevious), multi-discrete one-hot (Concentration) and MiniGrid's image view,
    # each through a short serial run of every agent with its preset: acting, storing and updates.
    pytest.importorskip("torch")
    from impala_rl.agents.base import agent_presets
    from impala_rl.config import TrainConfig
    from impala_rl.runtime.train import Trainer

    cfg = TrainConfig.for_env(env_id, presets=agent_presets(agent), agent=agent, backend="serial", num_actors=1,
                              envs_per_actor=2, batch_size=4, unroll_length=10, total_frames=600, learner_threads=1,
                              seed=0, quiet=True, log_interval=100.0, agent_options=options,
                              run_dir=str(tmp_path / "run")).validate()
    result = Trainer(cfg).run()
    assert result.stop_reason == "done" and result.frames >= 600 and result.version >= 1
