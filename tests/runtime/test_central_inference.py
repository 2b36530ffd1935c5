"""Central inference (--inference central): the server's batched forward equals the model's,
and a training run's actors are served by it."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from impala_rl.agents.impala import ImpalaAgent
from impala_rl.config import TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.models import ImpalaNet, NetConfig
from impala_rl.runtime.backends import local as local_backend
from impala_rl.runtime.inference import InferenceServer, RemoteForward
from impala_rl.runtime.train import Trainer
from impala_rl.runtime.types import RolloutSpec


def _spec(core_size: int) -> RolloutSpec:
    env_spec = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
    cfg = TrainConfig(unroll_length=5, use_lstm=core_size > 0, lstm_size=max(core_size, 1))
    return RolloutSpec.for_agent(5, env_spec, ImpalaAgent(cfg, env_spec))


@pytest.mark.parametrize("use_lstm", [False, True])
def test_remote_forward_matches_local_model_for_concurrent_actors(use_lstm):
    torch.manual_seed(0)
    model = ImpalaNet((4,), 2, config=NetConfig(torso="mlp", use_lstm=use_lstm, lstm_size=8)).eval()
    spec = _spec(8 if use_lstm else 0)
    server = InferenceServer(spec, model, torch.device("cpu"), min_batch=6, max_batch=12, timeout_s=0.01)
    ctx = mp.get_context("spawn")
    errors = []
    try:
        def actor(actor_id: int):
            forward = RemoteForward(server.channel(actor_id, 3, ctx))
            g = torch.Generator().manual_seed(actor_id)
            state = model.initial_state(3)
            for step in range(10):
                inputs = {"obs": torch.randn(1, 3, 4, generator=g),
                          "first": torch.tensor([[step == 0, False, step % 4 == 0]]),
                          "last_action": torch.randint(0, 2, (1, 3), generator=g),
                          "last_reward": torch.randn(1, 3, generator=g)}
                remote, remote_state = forward(core_state=state, **inputs)
                with torch.no_grad():
                    local, local_state = model(core_state=state, **inputs)
                if not torch.allclose(remote.policy_params, local.policy_params, atol=1e-5):
                    errors.append((actor_id, step, "policy"))
                if not torch.allclose(remote.values, local.values, atol=1e-5):
                    errors.append((actor_id, step, "values"))
                if use_lstm and not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(remote_state, local_state)):
                    errors.append((actor_id, step, "state"))
                state = local_state

        threads = [threading.Thread(target=actor, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    finally:
        server.close()
    assert errors == []
    assert sum(server.batcher.batch_sizes) == 4 * 10 * 3
    assert max(server.batcher.batch_sizes) > 3  # requests of different actors were batched together


def test_server_uses_published_weights():
    model = ImpalaNet((4,), 2, config=NetConfig(torso="mlp")).eval()
    server = InferenceServer(_spec(0), model, torch.device("cpu"), min_batch=1, max_batch=4, timeout_s=0.0)
    try:
        forward = RemoteForward(server.channel(0, 2, mp.get_context("spawn")))
        inputs = {"obs": torch.ones(1, 2, 4), "first": torch.zeros(1, 2, dtype=torch.bool),
                  "last_action": torch.zeros(1, 2, dtype=torch.long), "last_reward": torch.zeros(1, 2)}
        before, _ = forward(**inputs)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        unchanged, _ = forward(**inputs)
        assert torch.equal(before.policy_params, unchanged.policy_params)  # a private copy until publish
        server.update(model)
        after, _ = forward(**inputs)
        with torch.no_grad():
            expected, _ = model(**inputs)
        assert torch.allclose(after.policy_params, expected.policy_params, atol=1e-6)
        assert not torch.allclose(after.policy_params, before.policy_params)
    finally:
        server.close()


def test_train_with_central_inference(tmp_path, monkeypatch):
    """A run with --inference central (the config `impala train` builds): the actors' steps are
    served by the one inference server, which acts with the learner's newest weights."""
    servers = []

    class RecordingServer(InferenceServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            servers.append(self)

    monkeypatch.setattr(local_backend, "InferenceServer", RecordingServer)
    # A short run: with conftest.py's one torch thread set before any torch op in this process,
    # the in-process run is several-fold slower than `impala train`'s (measured: 20k frames 30 s, not 6 s).
    cfg = TrainConfig.for_env("CartPole-v1", inference="central", num_actors=2, total_frames=6_000, seed=0,
                              run_dir=str(tmp_path / "run"), quiet=True)
    trainer = Trainer(cfg)
    result = trainer.run()
    assert result.stop_reason == "done" and result.frames >= 6_000
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["frames"] == result.frames and summary["mean_return"] is not None
    [server] = servers
    # One row per environment step: every frame the learner trained on was acted by the server.
    assert sum(server.batcher.batch_sizes) >= result.frames
    assert max(server.batcher.batch_sizes) <= cfg.total_envs
    # Published after every update: the server ends with the learner's final weights, not its first.
    learned = trainer.learner.model.state_dict()
    assert all(torch.equal(v, learned[k]) for k, v in server.model.state_dict().items())
