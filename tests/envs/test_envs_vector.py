"""Env groups: the native ALE vector env and the Gymnasium wrapper stack agree in shapes
and semantics (observations, raw rewards, truncation with the final observation, life loss)."""

from __future__ import annotations

import numpy as np
import pytest

from impala_rl.envs import AtariOptions, make_env
from impala_rl.envs.vector import AleVectorGroup, GymEnvGroup, ale_game_name, make_env_group

PONG = "ALE/Pong-v5"


def _groups(options: AtariOptions, n: int = 2):
    native = make_env_group(PONG, n, seed=0, atari=options, native="on")
    gym_group = make_env_group(PONG, n, seed=0, atari=options, native="off")
    assert isinstance(native, AleVectorGroup) and isinstance(gym_group, GymEnvGroup)
    return native, gym_group


def test_game_names():
    assert ale_game_name("ALE/Pong-v5") == "pong"
    assert ale_game_name("ALE/MontezumaRevenge-v5") == "montezuma_revenge"
    assert ale_game_name("ALE/SpaceInvaders-v5") == "space_invaders"


def test_same_shapes_dtypes_and_action_set():
    native, gym_group = _groups(AtariOptions())
    try:
        env = make_env(PONG)
        assert native.single_action_space.n == env.action_space.n == 6
        env.close()
        for group in (native, gym_group):
            obs = group.reset(seed=3)
            assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
            group.send(np.array([0, 1]))
            r = group.recv()
            assert r.obs.shape == (2, 4, 84, 84) and r.obs.dtype == np.uint8
            assert r.reward.shape == (2,) and r.reward.dtype == np.float32
            for flags in (r.terminated, r.truncated, r.life_lost):
                assert flags.shape == (2,) and flags.dtype == np.bool_
    finally:
        native.close()
        gym_group.close()


def test_first_observation_matches_the_wrapper_pipeline_closely():
    # Both start a game and take the same no-op-free frames: the screens should agree up
    # to resize details (no sticky actions, no random no-ops).
    options = AtariOptions(noop_max=0)
    native, gym_group = _groups(options, n=1)
    try:
        a, b = native.reset(seed=1), gym_group.reset(seed=1)
        for _ in range(30):
            native.send(np.array([0]))
            gym_group.send(np.array([0]))
            a, b = native.recv().obs, gym_group.recv().obs
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 4.0, diff.mean()  # same game state; interpolation may differ slightly
    finally:
        native.close()
        gym_group.close()


@pytest.mark.parametrize("native", ["on", "off"])
def test_truncation_reports_final_observation_and_resets(native):
    options = AtariOptions(max_episode_frames=200, noop_max=0)
    group = make_env_group(PONG, 2, seed=0, atari=options, native=native)
    try:
        group.reset(seed=0)
        for step in range(200):
            group.send(np.zeros(2, dtype=np.int64))
            r = group.recv()
            if r.truncated.any():
                break
        assert r.truncated.all() and not r.terminated.any()
        assert step + 1 == 200 // 4  # 4 emulator frames per agent step
        assert sorted(r.final_obs) == [0, 1]
        for i, final in r.final_obs.items():
            assert final.shape == (4, 84, 84) and final.dtype == np.uint8
            assert not np.array_equal(final, r.obs[i])  # obs is already the next episode's start
    finally:
        group.close()


@pytest.mark.parametrize("native", ["on", "off"])
def test_rewards_are_raw_and_life_loss_is_reported(native):
    options = AtariOptions(episodic_life=True)
    group = make_env_group("ALE/Breakout-v5", 1, seed=0, atari=options, native=native)
    try:
        group.reset(seed=0)
        lost, rewards = 0, []
        for _ in range(2000):
            group.send(np.array([1]))  # FIRE, then the ball drops: lives are lost
            r = group.recv()
            rewards.append(float(r.reward[0]))
            lost += int(r.life_lost[0])
            assert not (r.life_lost[0] and r.terminated[0])
            if r.terminated[0]:
                break
        assert lost >= 1
        assert set(rewards) <= {0.0, 1.0, 4.0, 7.0}  # raw Breakout rewards (not clipped)
    finally:
        group.close()


@pytest.mark.parametrize("native", ["on", "off"])
def test_pong_never_reports_a_lost_life_so_episodic_life_leaves_it_unchanged(native):
    # The Atari preset turns episodic_life on; for a game without lives the actor's terminal
    # flags (done | life_lost) must be exactly those without it.
    group = make_env_group("ALE/Pong-v5", 2, seed=0, atari=AtariOptions(episodic_life=True), native=native)
    rng = np.random.default_rng(0)
    try:
        group.reset(seed=0)
        points_lost = 0
        for _ in range(1500):
            group.send(rng.integers(0, 6, size=2))
            r = group.recv()
            assert not r.life_lost.any()
            points_lost += int((r.reward < 0).sum())
        assert points_lost >= 5  # random play concedes points, and none of them counts as a life
    finally:
        group.close()
