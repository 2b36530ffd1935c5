"""Atari smoke test: Pong through the serial backend and the learner, for both image
torsos, with and without the LSTM: 20 learner steps each, a smoke test, not a learning test
(a few hundred steps per combination would cost minutes of CI time)."""

import math

import pytest
import torch

from impala_rl.agents import make_agent
from impala_rl.config import TrainConfig
from impala_rl.runtime.backends.serial import SerialBackend
from impala_rl.runtime.builders import build_learner, probe_env

STEPS = 20
T, B = 5, 2

pytestmark = pytest.mark.timeout(300)




@pytest.mark.parametrize("use_lstm", [False, True], ids=["ff", "lstm"])
@pytest.mark.parametrize("torso", ["shallow", "deep"])
def test_pong_learner_steps(torso, use_lstm):
    cfg = TrainConfig(env="ALE/Pong-v5", backend="serial", num_actors=1, envs_per_actor=2, batch_size=B,
                      unroll_length=T, torso=torso, use_lstm=use_lstm, lstm_size=32, total_frames=10_000,
                      seed=0).validate()
    env_spec = probe_env(cfg)
    assert env_spec.obs_shape == (4, 84, 84)
    model = make_agent(cfg, env_spec).build_model()
    learner = build_learner(cfg, env_spec, model)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    backend = SerialBackend(cfg, env_spec, model)
    try:
        for step in range(STEPS):
            batch, _ = backend.get_batch()
            assert batch["obs"].dtype == torch.uint8
            assert batch["obs"].shape == (T + 1, B, 4, 84, 84)
            assert batch["obs"].max() > 0  # real frames, not empty buffers
            assert batch["action"].shape == (T + 1, B)
            assert 0 <= int(batch["action"].min()) and int(batch["action"].max()) < env_spec.action_dim
            if use_lstm:
                assert batch["core_h"].shape == batch["core_c"].shape == (B, 32)
            else:
                assert "core_h" not in batch
            metrics = learner.step(batch)
            for name in ("total_loss", "pg_loss", "baseline_loss", "entropy_loss", "grad_norm"):
                assert math.isfinite(metrics[name]), (name, metrics)
            # Fresh weights each step (serial backend): the behaviour policy is the learner's,
            # apart from row 0, which was acted on one update earlier.
            assert metrics["policy_lag_max"] == 0.0
            backend.publish(learner.model, learner.version)
    finally:
        backend.close()
    assert learner.version == STEPS
    assert learner.frames == STEPS * T * B * 4  # action repeat 4: frames, not agent steps
    assert any(not torch.equal(v, initial[k]) for k, v in model.state_dict().items())
