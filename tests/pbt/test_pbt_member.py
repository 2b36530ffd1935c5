"""Exploit copies weights, optimiser state and hyperparameters exactly; explore changes them in place."""

import random
from types import SimpleNamespace

import torch

from impala_rl.config import TrainConfig
from impala_rl.pbt.member import exploit, pbt_hook
from impala_rl.pbt.population import Decision
from impala_rl.pbt.rules import Rules, explore
from impala_rl.runtime.backends.serial import SerialBackend
from impala_rl.runtime.builders import build_learner, probe_env


@torch.no_grad()
def same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def member(seed: int, **kw):
    cfg = TrainConfig(env="CartPole-v1", torso="mlp", backend="serial", num_actors=1, envs_per_actor=2,
                      batch_size=2, unroll_length=5, total_frames=10_000, seed=seed, reward_clip=0.0, **kw).validate()
    spec = probe_env(cfg)
    learner = build_learner(cfg, spec)
    backend = SerialBackend(cfg, spec, learner.model)
    for _ in range(3):
        learner.step(backend.get_batch()[0])
        backend.publish(learner.model, learner.version)
    return cfg, learner, backend


def trainer_of(learner, saves: list | None = None) -> SimpleNamespace:
    """What the PBT hook reads of a trainer."""
    return SimpleNamespace(cfg=SimpleNamespace(tasks=("CartPole-v1",)), learner=learner,
                           save_now=lambda: saves.append(1) if saves is not None else None)


def test_exploit_copies_weights_optimizer_state_and_hyperparameters_exactly():
    cfg_a, a, backend_a = member(0, learning_rate=1e-3, entropy_cost=0.01)
    cfg_b, b, backend_b = member(1, learning_rate=5e-4, entropy_cost=0.03, grad_norm_clip=10.0)
    source = {**b.state_dict(), "config": cfg_b.to_dict()}
    frames, version = a.frames, a.version
    hparams = exploit(a, source)
    assert same_parameters(a.model, b.model)
    for (ka, va), (kb, vb) in zip(a.optimizer.state_dict()["state"].items(), b.optimizer.state_dict()["state"].items()):
        assert all(torch.equal(va[k], vb[k]) for k in va)
    assert hparams == b.hyperparameters() == a.hyperparameters()
    assert a.agent.cfg.entropy_cost == 0.03 and a.cfg.grad_norm_clip == 10.0
    assert (a.frames, a.version) == (frames, version)  # its own experience and updates
    # Both now make the very same update on the same batch.
    batch, _ = backend_b.get_batch()
    a.step(batch)
    b.step(batch)
    assert same_parameters(a.model, b.model)
    backend_a.close()
    backend_b.close()


def test_the_hook_applies_explored_values_to_the_running_learner():
    _, learner, backend = member(0)
    before = learner.hyperparameters()
    new = explore(before, Rules(probability=1.0), random.Random(3))  # what the controller answers
    answer = lambda *a: Decision(hparams=new)  # noqa: E731
    hook = pbt_hook(trainer_of(learner), "m0", Rules(ready_episodes=1, ready_frames=1), answer, load=lambda c: c)
    hook(SimpleNamespace(frames=learner.frames + 1, episodes=[SimpleNamespace(task=0, ret=1.0)]))
    assert learner.hyperparameters() == new
    for name in Rules().bounds:
        ratio = new[name] / before[name]
        assert abs(ratio - 1.2) < 1e-9 or abs(ratio - 1 / 1.2) < 1e-9
    assert learner.optimizer.param_groups[0]["eps"] == new["rmsprop_epsilon"]
    backend.close()


def test_the_hook_waits_for_both_intervals_and_reports_the_last_episodes():
    _, learner, backend = member(0)
    backend.close()
    saves, asked = [], []
    trainer = trainer_of(learner, saves)

    def ready(name, fitness, frames, hparams, trainer):
        asked.append((fitness, frames))
        return Decision(hparams=dict(hparams, learning_rate=7e-4))

    start = learner.frames
    hook = pbt_hook(trainer, "m0", Rules(ready_episodes=2, ready_frames=100), ready, load=lambda c: c)
    ep = lambda r: SimpleNamespace(task=0, ret=r)  # noqa: E731
    hook(SimpleNamespace(frames=start + 50, episodes=[ep(1.0), ep(2.0), ep(3.0)]))  # episodes, not frames
    assert asked == [] and saves == []
    hook(SimpleNamespace(frames=start + 100, episodes=[ep(5.0)]))  # both: fitness over the last 2
    assert asked == [(4.0, start + 100)] and saves == [1]
    assert learner.hyperparameters()["learning_rate"] == 7e-4
    hook(SimpleNamespace(frames=start + 250, episodes=[ep(9.0)]))  # frames, but 1 episode since
    hook(SimpleNamespace(frames=start + 260, episodes=[ep(9.0)]))  # 2 episodes, 160 frames since
    assert asked == [(4.0, start + 100), (9.0, start + 260)]
