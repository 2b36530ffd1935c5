"""Batched A2C, sync step (--sync-step): lock-step environments, one forward pass, no policy lag."""

from __future__ import annotations

import pytest
import torch

from impala_rl.config import ConfigError, TrainConfig
from impala_rl.runtime.backends import make_backend
from impala_rl.runtime.builders import build_learner, probe_env


def cfg(**kw) -> TrainConfig:
    base = dict(env="CartPole-v1", torso="mlp", sync_step=True, backend="serial", num_actors=2, envs_per_actor=3,
                batch_size=6, unroll_length=5, total_frames=10_000, reward_clip=0.0, seed=4, optimizer="adam",
                learning_rate=1e-3)
    base.update(kw)
    return TrainConfig(**base).validate()


def train_steps(c: TrainConfig, steps: int):
    spec = probe_env(c)
    learner = build_learner(c, spec)
    backend = make_backend(c, spec, learner)
    lags, server_batches = [], []
    try:
        backend.start()
        for _ in range(steps):
            batch, _ = backend.get_batch()
            metrics = learner.step(batch)
            lags.append(metrics["policy_lag_max"])
            backend.publish(learner.model, learner.version)
        server = getattr(backend, "server", None)
        if server is not None:
            server_batches = list(server.batcher.batch_sizes)
    finally:
        backend.close()
    return learner, lags, server_batches


def test_serial_sync_step_has_no_lag_and_is_deterministic():
    a, lags, _ = train_steps(cfg(), 8)
    b, _, _ = train_steps(cfg(), 8)
    assert lags == [0.0] * 8
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_local_sync_step_runs_every_environment_in_one_forward_pass():
    _, lags, batches = train_steps(cfg(backend="local"), 6)
    assert lags == [0.0] * 6
    assert batches and all(size == 6 for size in batches), batches  # lock-step: all 2 x 3 envs every step


def test_local_sync_step_stays_in_lock_step_when_episodes_are_truncated():
    """Truncated episodes need V(x_final): computed by the actor's copy of the weights, not by an
    extra request to the server that would put one actor a forward pass behind the others."""
    import impala_test_envs  # noqa: F401  (registers the env in this process; actors import it by name)

    env = "impala_test_envs:ImpalaTest/ShortCartPole-v0"  # truncations at different steps in each actor
    _, lags, batches = train_steps(cfg(backend="local", env=env), 6)
    assert lags == [0.0] * 6
    assert batches and all(size == 6 for size in batches), batches


def test_sync_step_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="sync_step needs --backend serial or local"):
        cfg(backend="ray")
    with pytest.raises(ConfigError, match="sync mode needs batch_size == num_actors x envs_per_actor"):
        cfg(batch_size=4)


def test_serial_sync_step_steps_all_environments_as_one_actor():
    c = cfg()
    spec = probe_env(c)
    backend = make_backend(c, spec, build_learner(c, spec))
    try:
        assert [a.num_envs for a in backend.actors] == [6]  # one forward pass over all 2 x 3 environments
    finally:
        backend.close()
