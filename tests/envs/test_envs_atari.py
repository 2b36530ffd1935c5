"""The Atari pipeline of make_env, checked on the real emulator (Pong and Breakout)."""

import gymnasium as gym
import numpy as np
import pytest

from impala_rl.config import TrainConfig
from impala_rl.envs import AtariOptions, describe, frames_per_step, is_atari, make_env

PONG = "ALE/Pong-v5"


def layers(env: gym.Env) -> list[gym.Env]:
    """The outermost wrapper, each wrapper below it, and the unwrapped env."""
    stack = [env]
    while isinstance(env, gym.Wrapper):
        env = env.env
        stack.append(env)
    return stack


def episode_frame(env: gym.Env) -> int:
    return env.unwrapped.ale.getEpisodeFrameNumber()


def test_pong_observations_are_stacked_uint8_frames():
    env = make_env(PONG, seed=0)
    first, _ = env.reset()
    assert first.shape == (4, 84, 84) and first.dtype == np.uint8
    second = env.step(0)[0]
    assert second.shape == (4, 84, 84) and second.dtype == np.uint8
    np.testing.assert_array_equal(second[:3], first[1:])  # oldest frame first, newest last
    assert env.observation_space.shape == (4, 84, 84)
    spec = describe(env)
    assert spec.is_image and spec.policy_type == "categorical" and spec.action_dim == 6


def test_minimal_action_set_by_default_full_on_request():
    assert make_env(PONG).action_space == gym.spaces.Discrete(6)
    full = make_env(PONG, atari=AtariOptions(full_action_space=True))
    assert full.action_space == gym.spaces.Discrete(18)


def test_one_step_is_frame_skip_emulator_frames():
    env = make_env(PONG, seed=0)
    env.reset()
    before = episode_frame(env)
    env.step(0)
    assert episode_frame(env) - before == 4 == frames_per_step(PONG) == TrainConfig(env=PONG).frames_per_step


def test_reset_applies_between_1_and_noop_max_noops():
    env = make_env(PONG, seed=1)
    for _ in range(5):
        env.reset()
        assert 1 <= episode_frame(env) <= 30
    no_noops = make_env(PONG, seed=1, atari=AtariOptions(noop_max=0))
    no_noops.reset()
    assert episode_frame(no_noops) == 0


def test_sticky_actions_off_by_default_and_configurable():
    def sticky(env: gym.Env) -> float:
        return env.unwrapped.ale.getFloat("repeat_action_probability")

    assert sticky(make_env(PONG)) == 0.0
    assert sticky(make_env(PONG, atari=AtariOptions(repeat_action_probability=0.25))) == 0.25


def test_pipeline_leaves_rewards_and_lives_alone():
    stack = layers(make_env(PONG))
    types = [type(layer) for layer in stack]
    assert gym.wrappers.AtariPreprocessing in types
    assert gym.wrappers.FrameStackObservation in types
    # Nothing transforms rewards (the learner clips them) and no life-loss terminal.
    assert not any(isinstance(layer, gym.RewardWrapper) for layer in stack)
    preprocessing = stack[types.index(gym.wrappers.AtariPreprocessing)]
    assert preprocessing.terminal_on_life_loss is False and preprocessing.scale_obs is False


def test_episode_is_truncated_at_max_episode_frames():
    env = make_env(PONG, seed=0, atari=AtariOptions(max_episode_frames=100))
    env.reset()
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(0)
        if terminated or truncated:
            break
    assert truncated and not terminated
    assert episode_frame(env) == 100


def test_same_seed_same_start():
    a, b = make_env(PONG, seed=7), make_env(PONG, seed=7)
    (obs_a, _), (obs_b, _) = a.reset(), b.reset()
    assert episode_frame(a) == episode_frame(b)
    np.testing.assert_array_equal(obs_a, obs_b)
    for action in (2, 3, 2, 0):
        np.testing.assert_array_equal(a.step(action)[0], b.step(action)[0])


def test_rgb_frames_are_stacked_channel_first():
    env = make_env(PONG, atari=AtariOptions(grayscale=False))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (12, 84, 84) and obs.dtype == np.uint8
    assert describe(env).obs_shape == (12, 84, 84)


def test_life_loss_is_reported_once_per_life_and_episode_goes_on():
    env = make_env("ALE/Breakout-v5", seed=0, atari=AtariOptions(episodic_life=True))
    env.action_space.seed(0)
    _, info = env.reset()
    assert info["life_lost"] is False
    lives = start_lives = info["lives"]
    losses = 0
    for _ in range(3_000):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert info["life_lost"] == (info["lives"] < lives)
        lives = info["lives"]
        if info["life_lost"]:
            losses += 1
            assert terminated == (lives == 0)  # only the last life ends the game
        if terminated or truncated:
            break
    assert terminated, "random Breakout play should lose all lives within the step bound"
    assert losses == start_lives == 5


def test_life_lost_key_only_when_asked():
    _, info = make_env("ALE/Breakout-v5", seed=0).reset()
    assert "life_lost" not in info


def test_atari_kwargs_owned_by_options_are_refused():
    with pytest.raises(ValueError, match="frameskip -> AtariOptions.frame_skip"):
        make_env(PONG, frameskip=4)


def test_legacy_atari_ids_point_to_the_ale_id():
    with pytest.raises(ValueError, match="legacy Atari id; use ALE/Pong-v5"):
        make_env("PongNoFrameskip-v4")


def test_is_atari_and_frames_per_step():
    assert is_atari(PONG) and not is_atari("CartPole-v1")
    assert frames_per_step("CartPole-v1", AtariOptions()) == 1
    assert frames_per_step(PONG, AtariOptions(frame_skip=2)) == 2


@pytest.mark.parametrize(
    "field, value",
    [("frame_skip", 0), ("noop_max", -1), ("repeat_action_probability", 1.5)],
)
def test_atari_options_are_validated(field, value):
    with pytest.raises(ValueError, match=f"AtariOptions.{field}"):
        AtariOptions(**{field: value})
