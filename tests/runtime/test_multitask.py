"""Multi-task runs: one common space, task ids in every unroll, per-task PopArt in the learner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import impala_test_envs
from impala_rl.config import TrainConfig
from impala_rl.envs import check_env_id
from impala_rl.envs.spec import EnvSpec
from impala_rl.envs.tasks import combine_specs, env_tasks, task_labels
from impala_rl.runtime.backends import make_backend
from impala_rl.runtime.builders import build_learner, probe_env

ECHO = ",".join(f"impala_test_envs:{i}" for i in impala_test_envs.ECHO_IDS)
MINATAR = "MinAtar/Breakout-v1,MinAtar/Seaquest-v1"


def echo_cfg(**kw) -> TrainConfig:
    base = dict(env=ECHO, torso="mlp", backend="serial", num_actors=2, envs_per_actor=3, batch_size=4,
                unroll_length=5, total_frames=100_000, reward_clip=0.0, seed=0, popart=True, popart_beta=0.1,
                optimizer="adam", learning_rate=1e-3)
    base.update(kw)
    check_env_id(base["env"])
    return TrainConfig(**base).validate()


# ----------------------------------------------------------------------------- the common space
def test_minatar_tasks_are_padded_to_the_most_channels_and_actions():
    spec = probe_env(TrainConfig(env=MINATAR))
    assert spec.obs_shape == (10, 10, 10) and spec.action_dim == 6  # Seaquest: 10 channels, 6 actions
    assert spec.tasks == tuple(MINATAR.split(",")) and spec.task_actions == (3, 6)


def test_spaces_that_cannot_be_reconciled_are_refused_naming_the_tasks():
    discrete = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
    box = EnvSpec((4,), np.dtype(np.float32), "gaussian", 1, (-1.0,), (1.0,))
    with pytest.raises(ValueError, match=r"Discrete vs Box.*CartPole-v1: categorical; Pendulum-v1: gaussian"):
        combine_specs(("CartPole-v1", "Pendulum-v1"), [discrete, box])
    image = EnvSpec((4, 84, 84), np.dtype(np.uint8), "categorical", 6, is_image=True)
    small = EnvSpec((4, 10, 10), np.dtype(np.uint8), "categorical", 6, is_image=True)
    with pytest.raises(ValueError, match="image sizes"):
        combine_specs(("a", "b"), [image, small])


def test_environments_are_spread_evenly_over_the_tasks():
    tasks = [t for actor in range(4) for t in env_tasks(5, actor * 5, 3)]
    assert np.bincount(tasks).tolist() == [7, 7, 6]
    assert task_labels(("ALE/Pong-v5", "CartPole-v1", "CartPole-v1")) == ("Pong", "CartPole", "CartPole_1")


# ----------------------------------------------------------------------------- actors
@pytest.mark.parametrize("backend", ["serial", "local"])
def test_every_unroll_carries_its_task_and_only_that_tasks_actions(backend):
    cfg = echo_cfg(backend=backend)
    spec = probe_env(cfg)
    assert spec.obs_shape == (3,) and spec.task_actions == (2, 3)
    learner = build_learner(cfg, spec)
    backend_ = make_backend(cfg, spec, learner)
    seen = set()
    try:
        backend_.start()
        for _ in range(6):
            batch, episodes = backend_.get_batch()
            assert_tasks_match_observations(batch)
            seen |= set(batch["task"].tolist())
            assert {e.task for e in episodes} <= {0, 1}
    finally:
        backend_.close()
    assert seen == {0, 1}


def assert_tasks_match_observations(batch):
    """EchoA's observation is [0.5, 0.5] (padded with a 0), EchoB's [1, 1, 1]; EchoA has 2 actions."""
    obs, task = batch["obs"], batch["task"]  # [T+1, B, 3], [B]
    expected = torch.where(task == 0, 0.5, 1.0)
    assert torch.equal(obs[..., 0], expected.expand_as(obs[..., 0]))
    assert torch.equal(obs[..., 2], (task == 1).float().expand_as(obs[..., 2]))  # the zero padding
    a_actions = batch["action"][:, task == 0]
    assert (a_actions < 2).all()  # never the action EchoA does not have
    masked = batch["policy_params"][:, task == 0, 2]
    assert (masked <= -1e8).all()  # the behaviour policy records the mask


# ----------------------------------------------------------------------------- PopArt in the learner
def echo_batch(cfg, spec, task_rewards: tuple[float, float]) -> dict:
    """A batch of real rollouts with the rewards of task k set to task_rewards[k] per step."""
    learner = build_learner(cfg, spec)
    backend = make_backend(cfg, spec, learner)
    try:
        backend.start()
        batch, _ = backend.get_batch()
    finally:
        backend.close()
    scale = torch.tensor(task_rewards)[batch["task"]]
    batch["reward"] = torch.ones_like(batch["reward"]) * scale
    return batch


def test_popart_preserves_the_outputs_inside_the_learner_after_real_updates():
    cfg = echo_cfg()
    spec = probe_env(cfg)
    learner = build_learner(cfg, spec)
    batch = echo_batch(cfg, spec, (1.0, 50.0))
    probe = {k: v.clone() for k, v in batch.items()}
    model, agent = learner.model, learner.agent
    checks = []

    def values():
        with torch.no_grad():
            out, _ = model(obs=probe["obs"], last_action=probe["last_action"], last_reward=probe["reward"],
                           first=probe["first"])
        return out.values

    original = agent.after_update

    def after_update(m, output):
        before, mu = values(), m.popart.mu.clone()
        extra = original(m, output)
        checks.append((before, values(), mu, m.popart.mu.clone()))
        return extra

    agent.after_update = after_update
    for _ in range(5):
        metrics = learner.step(batch)
    assert len(checks) == 5 and "popart_mu_EchoB" in metrics
    for before, after, mu_before, mu_after in checks:
        assert not torch.allclose(mu_before, mu_after)  # the statistics moved ...
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)  # ... and the outputs did not
    mu = model.popart.mu
    assert mu[1] > 10 * mu[0] > 0  # each task's statistics follow its own returns


def test_a_tasks_statistics_do_not_move_with_another_tasks_rewards():
    cfg = echo_cfg()
    spec = probe_env(cfg)
    small = echo_batch(cfg, spec, (1.0, 1.0))
    large = dict(small, reward=small["reward"] * torch.where(small["task"] == 0, 1000.0, 1.0))
    stats = []
    for batch in (small, large):
        learner = build_learner(cfg, spec)
        learner.step(batch)
        stats.append((learner.model.popart.mu.clone(), learner.model.popart.nu.clone()))
    (mu_small, nu_small), (mu_large, nu_large) = stats
    assert mu_large[0] > 100 * mu_small[0]  # task 0 saw rewards x1000
    assert mu_large[1] == mu_small[1] and nu_large[1] == nu_small[1]  # task 1: exactly unaffected


def test_checkpoints_carry_the_per_task_statistics(tmp_path):
    from impala_rl.runtime.rundirs import load_run
    from impala_rl.runtime.train import Trainer

    cfg = echo_cfg(total_frames=400, run_dir=str(tmp_path / "run"), quiet=True)
    result = Trainer(cfg).run()
    assert result.stop_reason == "done"
    saved_cfg, state = load_run(tmp_path / "run")
    assert state["model"]["popart.mu"].shape == (2,) and (state["model"]["popart.mu"] != 0).all()
    resumed = Trainer(dataclasses.replace(saved_cfg, total_frames=800), resume_state=state)
    assert torch.equal(resumed.learner.model.popart.mu, state["model"]["popart.mu"])
    assert torch.equal(resumed.learner.model.popart.nu, state["model"]["popart.nu"])
