"""The learner's step: skipped updates on non-finite losses or gradients, the learning-rate
schedule, and the trainer stopping on repeated non-finite losses."""

import contextlib
import json
import math

import pytest
import torch

from impala_rl.checkpoint import load_checkpoint
from impala_rl.config import TrainConfig
from impala_rl.agents import make_agent
from impala_rl.agents.impala import agent as impala_agent_module
from impala_rl.runtime import learner as learner_module
from impala_rl.runtime.backends.serial import SerialBackend
from impala_rl.runtime.builders import build_learner, probe_env
from impala_rl.runtime.learner import Learner, make_optimizer
from impala_rl.runtime.types import select_unrolls
from impala_rl.runtime.train import Trainer




def make_cfg(tmp_path=None, **kw) -> TrainConfig:
    base = dict(env="CartPole-v1", torso="mlp", backend="serial", num_actors=1, envs_per_actor=2, batch_size=2,
                unroll_length=5, total_frames=1000, learning_rate=1e-3, reward_clip=0.0, quiet=True,
                log_interval=100.0, run_dir=str(tmp_path / "run") if tmp_path else "")
    base.update(kw)
    return TrainConfig(**base).validate()


@pytest.fixture
def setup():
    cfg = make_cfg()
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    learner = build_learner(cfg, env_spec, model)
    backend = SerialBackend(cfg, env_spec, model)
    yield cfg, learner, backend
    backend.close()


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nan_reward_skips_the_update(setup):
    cfg, learner, backend = setup
    batch, _ = backend.get_batch()
    before = weights(learner.model)
    batch["reward"][2, 1] = float("nan")
    metrics = learner.step(batch)
    assert_same_weights(weights(learner.model), before)
    assert learner.version == 0
    assert learner.nonfinite_in_a_row == 1 and learner.nonfinite_total == 1
    assert metrics["nonfinite_total"] == 1.0
    assert math.isnan(metrics["total_loss"])
    assert "grad_norm" not in metrics
    assert learner.frames == cfg.frames_per_batch  # the frames were consumed all the same

    metrics = learner.step(batch)  # again: the count goes on
    assert learner.nonfinite_in_a_row == 2 and learner.nonfinite_total == 2

    good, _ = backend.get_batch()
    metrics = learner.step(good)
    assert learner.version == 1
    assert learner.nonfinite_in_a_row == 0 and learner.nonfinite_total == 2
    assert math.isfinite(metrics["total_loss"]) and math.isfinite(metrics["grad_norm"])
    assert any(not torch.equal(v, before[k]) for k, v in weights(learner.model).items())


def test_nonfinite_gradient_skips_the_update(setup, monkeypatch):
    _, learner, backend = setup
    batch, _ = backend.get_batch()
    learner.step(batch)  # one real update, so the optimiser has state to protect
    before = weights(learner.model)
    square_avg = [s["square_avg"].clone() for s in learner.optimizer.state.values()]
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: torch.tensor(float("inf")))
    learner.step(batch)
    assert_same_weights(weights(learner.model), before)
    for s, old in zip(learner.optimizer.state.values(), square_avg):
        assert torch.equal(s["square_avg"], old)
    assert learner.version == 1
    assert learner.nonfinite_in_a_row == 1
    assert all(p.grad is None for p in learner.model.parameters())  # no stale gradient left behind


def test_learning_rate_anneals_linearly_to_zero():
    cfg = make_cfg(total_frames=1000, learning_rate=0.01)
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    assert learner.learning_rate() == pytest.approx(0.01)
    learner.frames = 250
    assert learner.learning_rate() == pytest.approx(0.0075)
    learner.frames = 2000  # past the end: clamped at 0, never negative
    assert learner.learning_rate() == 0.0
    flat = build_learner(make_cfg(learning_rate=0.01, lr_anneal=False), env_spec)
    flat.frames = 900
    assert flat.learning_rate() == 0.01


def test_step_uses_the_scheduled_learning_rate(setup):
    cfg, learner, backend = setup
    batch, _ = backend.get_batch()
    metrics = learner.step(batch)
    expected = cfg.learning_rate * (1 - learner.frames / cfg.total_frames)
    assert metrics["learning_rate"] == pytest.approx(expected)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_trainer_stops_after_max_nonfinite_losses_and_keeps_good_weights(tmp_path, monkeypatch):
    good_steps, max_nonfinite = 3, 4
    calls = {"n": 0}
    original = impala_agent_module.loss_inputs

    def poisoned(batch, cfg):
        calls["n"] += 1
        out = original(batch, cfg)
        if calls["n"] > good_steps:
            out["rewards"] = out["rewards"] * float("nan")
        return out

    monkeypatch.setattr(impala_agent_module, "loss_inputs", poisoned)
    cfg = make_cfg(tmp_path, max_nonfinite=max_nonfinite)
    trainer = Trainer(cfg)
    after_good = {}
    original_update = Learner.update

    def update(self, batch):
        result = original_update(self, batch)
        if self.version == good_steps and not after_good:
            after_good.update(weights(self.model))
        return result

    monkeypatch.setattr(Learner, "update", update)
    result = trainer.run()

    assert result.stop_reason == "nonfinite"
    assert result.version == good_steps
    assert calls["n"] == good_steps + max_nonfinite  # stopped right at the limit
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "nonfinite"
    assert summary["nonfinite_total"] == max_nonfinite
    assert summary["learner_steps"] == good_steps
    state = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert_same_weights(state["model"], after_good)
    assert state["version"] == good_steps


@pytest.mark.parametrize("optimizer,cls", [("rmsprop", torch.optim.RMSprop), ("adam", torch.optim.Adam),
                                           ("rmsprop_tf", learner_module.RMSpropTF)])
def test_optimizer_choice(optimizer, cls):
    cfg = make_cfg(optimizer=optimizer)
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    assert type(learner.optimizer) is cls


def test_adam_is_fused_and_steps_as_the_reference_adam():
    """The learner's Adam runs the fused kernel and moves the weights as torch's per-tensor Adam."""
    cfg = make_cfg(optimizer="adam", learning_rate=1e-2, adam_epsilon=1e-3)
    model = make_agent(cfg, probe_env(cfg)).build_model()
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    reference = [p.detach().clone().requires_grad_() for p in params]
    ours = make_optimizer(cfg, params)
    theirs = torch.optim.Adam(reference, lr=1e-2, eps=1e-3, foreach=False)
    assert ours.defaults["fused"] is True
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(params, reference):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
    assert max((p - q).abs().max().item() for p, q in zip(params, reference)) < 1e-6
    assert min((p - p0).abs().max().item() for p, p0 in zip(params, start)) > 1e-3  # every tensor moved


def _fixed_inputs(T=3, B=4, D=4):
    g = torch.Generator().manual_seed(0)
    return dict(obs=torch.randn(T, B, D, generator=g), last_action=torch.zeros(T, B, dtype=torch.long),
                last_reward=torch.zeros(T, B), first=torch.zeros(T, B, dtype=torch.bool))


@contextlib.contextmanager
def learner_and_backend(**overrides):
    """(cfg, model, learner, serial backend) for make_cfg(**overrides); the backend is closed after."""
    cfg = make_cfg(**overrides)
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    learner = build_learner(cfg, env_spec, model)
    backend = SerialBackend(cfg, env_spec, model)
    try:
        yield cfg, model, learner, backend
    finally:
        backend.close()


def test_popart_statistics_follow_the_targets_and_preserve_the_values():
    with learner_and_backend(popart=True, popart_beta=0.1, optimizer="adam") as (cfg, model, learner, backend):
        learner.learning_rate = lambda: 0.0  # only PopArt moves: the unnormalised outputs must not
        x = _fixed_inputs()
        with torch.no_grad():
            before = model(**x)[0].values.clone()
        head_before = model.value_head.weight.detach().clone()
        batch, _ = backend.get_batch()
        metrics = learner.step(batch)
        # mu_0 = 0, nu_0 = 1: one EMA step of size beta towards the batch moments of the V-trace targets.
        assert metrics["popart_mu"] == pytest.approx(0.1 * metrics["mean_vs"], rel=1e-4)
        assert metrics["mean_vs"] > 1.0  # CartPole's unclipped returns: the statistics really moved
        assert not torch.allclose(model.value_head.weight, head_before)
        with torch.no_grad():
            after = model(**x)[0].values
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
        # The statistics are part of the weights actors receive and checkpoints hold.
        assert {"popart.mu", "popart.nu"} <= set(model.state_dict())
        backend.publish(model, learner.version)
        for _ in backend.actors:  # each actor makes one more unroll (round robin), with these weights
            backend.get_batch(len(backend.full) + 1)
        for actor in backend.actors:
            torch.testing.assert_close(actor.model.popart.mu, model.popart.mu)


def test_serial_actors_act_with_the_weights_published_last_not_later_changes():
    with learner_and_backend() as (cfg, model, learner, backend):
        first = next(model.parameters())
        with torch.no_grad():
            first.add_(1.0)
        backend.publish(model, 1)
        published = first.detach().clone()
        with torch.no_grad():
            first.mul_(0.0)  # changed after the publish: the actors must not see it
        for _ in backend.actors:
            backend.get_batch(len(backend.full) + 1)
        for actor in backend.actors:
            torch.testing.assert_close(next(actor.model.parameters()), published)
            assert next(actor.model.parameters()).abs().sum() > 0


def test_learner_updates_observation_statistics_from_new_rows_only():
    with learner_and_backend(normalize_observations=True) as (cfg, model, learner, backend):
        batch, _ = backend.get_batch()
        learner.step(batch)
        new_rows = batch["obs"][1:].reshape(-1, 4).double()
        assert float(model.obs_norm.count) == cfg.unroll_length * cfg.batch_size
        torch.testing.assert_close(model.obs_norm.mean, new_rows.mean(0))


def test_epochs_and_minibatches_make_that_many_steps_and_one_version():
    overrides = dict(optimizer="adam", batch_size=4, learner_epochs=3, learner_minibatches=2)
    with learner_and_backend(**overrides) as (cfg, model, learner, backend):
        batch, _ = backend.get_batch()
        metrics = learner.step(batch)
        steps = {int(s["step"]) for s in learner.optimizer.state_dict()["state"].values()}
        assert steps == {6}  # 3 passes x 2 minibatches
        assert learner.version == 1 and learner.frames == cfg.frames_per_update
        assert math.isfinite(metrics["total_loss"]) and metrics["time_forward_s"] > 0


def test_select_unrolls_takes_rows_along_the_batch_dimension():
    batch = {"obs": torch.arange(3 * 4).view(3, 4), "version": torch.tensor([10, 11, 12, 13])}
    picked = select_unrolls(batch, torch.tensor([2, 0]), row_names={"obs"})
    assert torch.equal(picked["obs"], torch.tensor([[2, 0], [6, 4], [10, 8]]))
    assert torch.equal(picked["version"], torch.tensor([12, 10]))


def test_minibatches_must_divide_the_batch():
    from impala_rl.config import ConfigError

    with pytest.raises(ConfigError, match="learner_minibatches .3. must divide batch_size .4."):
        make_cfg(batch_size=4, learner_minibatches=3)


def test_hyperparameters_change_between_updates_without_a_restart(setup):
    """What PBT's explore/exploit change: the learning rate, loss weights, epsilon and clip."""
    cfg, learner, backend = setup
    batch, _ = backend.get_batch()
    before = learner.agent.loss(learner.forward, batch)[1]
    learner.set_hyperparameters(learning_rate=2e-3, entropy_cost=0.5, rmsprop_epsilon=0.03, grad_norm_clip=1e-6)
    after = learner.agent.loss(learner.forward, batch)[1]
    # Same weights, same batch: only the entropy term's weight changed, from 0.01 to 0.5.
    expected = before["total_loss"] + (0.5 / cfg.entropy_cost - 1) * before["entropy_loss"]  # metric: scaled
    assert float(after["total_loss"]) == pytest.approx(float(expected), rel=1e-5)
    w0 = weights(learner.model)
    metrics = learner.step(batch)
    assert metrics["learning_rate"] == pytest.approx(2e-3 * (1 - learner.frames / cfg.total_frames))  # annealed
    assert learner.optimizer.param_groups[0]["eps"] == 0.03
    # A clip of 1e-6 bounds the whole update: RMSProp's first step moves each weight by at most lr*g/sqrt(...)
    moved = max(float((v - w0[k]).abs().max()) for k, v in weights(learner.model).items() if v.is_floating_point())
    assert moved < 1e-3
    assert learner.hyperparameters()["entropy_cost"] == 0.5
    with pytest.raises(ValueError, match="cannot change batch_size while training"):
        learner.set_hyperparameters(batch_size=64)
