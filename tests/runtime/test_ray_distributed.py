"""Several data-parallel learners (``--num-learners``): gradients averaged with gloo on CPU.

- ``average_gradients`` across two real gloo processes on 127.0.0.1 equals the mean of
  the two gradients, and a non-finite loss on one learner poisons the average on both;
- two learners on a local Ray (learner 0 here, learner 1 a Ray actor), each with its own
  actor, hold bitwise-identical parameters after several updates that changed them;
- the same through the Trainer (the CLI's code path), which logs the agreement.
"""

from __future__ import annotations

import logging
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("ray")

from impala_rl.config import TrainConfig  # noqa: E402
from impala_rl.runtime.backends import ray_backend  # noqa: E402
from impala_rl.runtime.builders import build_learner, probe_env  # noqa: E402
from impala_rl.runtime.distributed import (MultiLearnerBackend, actor_share, average_gradients,  # noqa: E402
                                           parameter_hash)
from impala_rl.runtime.train import Trainer  # noqa: E402

ray = ray_backend.import_ray(loopback=True)

# The tests that start Ray are exclusive: Ray's services are checked machine-wide (the gloo test starts none).
pytestmark = pytest.mark.timeout(300)



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def grads_for(model: torch.nn.Module, rank: int) -> list[torch.Tensor]:
    model.zero_grad()
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3) * (rank + 1)
    model(x).pow(2).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def _gloo_worker(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = tiny_model()
        grads_for(model, rank)
        average_gradients(model, loss_finite=True)
        averaged = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)  # rank 1's loss "was not finite": no backward, no grads
        if rank == 0:
            grads_for(model, rank)
        average_gradients(model, loss_finite=rank == 0)
        poisoned = all(torch.isnan(p.grad).all() for p in model.parameters())
        # NumPy arrays travel by value; a torch tensor would travel as a file descriptor shared by
        # this process, which may have exited before the test unpickles it (seen: FileNotFoundError).
        out.put((rank, [g.numpy() for g in averaged], bool(poisoned)))
    finally:
        dist.destroy_process_group()


def test_average_gradients_is_the_mean_over_gloo_processes():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_gloo_worker, args=(rank, port, out), daemon=True) for rank in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict((r, (avg, poisoned)) for r, avg, poisoned in (out.get(timeout=120) for _ in procs))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    expected = [(a + b) / 2 for a, b in zip(grads_for(tiny_model(), 0), grads_for(tiny_model(), 1))]
    for rank in (0, 1):
        averaged, poisoned = results[rank]
        for got, want in zip(averaged, expected):
            torch.testing.assert_close(torch.as_tensor(got), want)
        assert poisoned, f"rank {rank} kept a finite gradient although rank 1's loss was not finite"


def make_cfg(**kw) -> TrainConfig:
    base = dict(env="CartPole-v1", torso="mlp", backend="ray", num_actors=2, num_learners=2, envs_per_actor=2,
                batch_size=4, unroll_length=5, total_frames=40 * 2 * 5 * 4, reward_clip=0.0, learning_rate=2e-3,
                device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base).validate()


@pytest.mark.exclusive
def test_two_learners_hold_identical_parameters(no_new_ray_services):
    cfg = make_cfg()
    assert actor_share(cfg, 0) == [0] and actor_share(cfg, 1) == [1]
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    initial = parameter_hash(learner.model)
    backend = MultiLearnerBackend(cfg, env_spec, learner)
    try:
        backend.start()
        assert dist.is_initialized() and dist.get_world_size() == 2 and dist.get_backend() == "gloo"
        assert backend.local.actor_ids == [0]
        while learner.frames < cfg.total_frames:
            batch, _ = backend.get_batch()
            metrics = learner.step(batch)
            assert math.isfinite(metrics["grad_norm"])
            backend.publish(learner.model, learner.version)
    finally:
        backend.close()
    assert not dist.is_initialized() and not ray.is_initialized()
    assert learner.version == 40 and learner.frames == 40 * cfg.frames_per_update
    assert parameter_hash(learner.model) != initial  # the updates did change the parameters
    [peer] = backend.peer_results
    assert peer["rank"] == 1 and peer["version"] == learner.version and peer["frames"] == learner.frames
    assert peer["param_hash"] == parameter_hash(learner.model)


@pytest.mark.exclusive
def test_trainer_with_two_learners_logs_agreement(tmp_path, caplog, no_new_ray_services):
    cfg = make_cfg(total_frames=20 * 2 * 5 * 4, run_dir=str(tmp_path / "run"), quiet=True, log_interval=1.0)
    with caplog.at_level(logging.INFO, logger="impala_rl"):
        result = Trainer(cfg).run()
    assert result.stop_reason == "done" and result.version == 20
    assert "all 2 learners hold identical parameters after 20 updates" in caplog.text
