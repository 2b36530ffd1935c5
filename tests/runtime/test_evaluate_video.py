"""eval --video: real speed for Atari, and a path check that leaves nothing behind."""

import pytest

from impala_rl.config import TrainConfig
from impala_rl.runtime.evaluate import _render_fps, check_video_path


def test_atari_video_plays_at_real_speed_fifteen_agent_steps_a_second():
    cfg = TrainConfig(env="ALE/Pong-v5")
    assert _render_fps(cfg) / cfg.frames_per_step == 15.0  # 60 Hz emulator, 4 frames an agent step


def test_classic_control_video_uses_the_environments_own_rate():
    cfg = TrainConfig(env="CartPole-v1")
    assert _render_fps(cfg) / cfg.frames_per_step == 50  # CartPole's metadata render_fps


def test_the_video_path_check_leaves_no_empty_file(tmp_path):
    check_video_path(tmp_path / "sub" / "x.mp4")
    assert not (tmp_path / "sub" / "x.mp4").exists()
    existing = tmp_path / "keep.mp4"
    existing.write_bytes(b"old")
    check_video_path(existing)
    assert existing.read_bytes() == b"old"
    with pytest.raises(ValueError, match="ending in .mp4"):
        check_video_path(tmp_path / "x.avi")
