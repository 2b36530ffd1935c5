"""Several data-parallel learners of one policy (``--backend ray --num-learners N``).

Learner 0 is the training process (it logs and checkpoints); learners 1..N-1 are Ray
actors. Each learner drives its own share of the Ray actors (actor i belongs to learner
i mod N) through its own :class:`~impala_rl.runtime.backends.ray_backend.RayBackend`, so
each consumes its own trajectories. On every update all learners average their
gradients with ``torch.distributed`` all-reduce (gloo on CPU, NCCL on GPU) between
backward and the optimiser step (:attr:`Learner.gradient_sync`). Starting from the same
weights and optimiser state and applying the same averaged gradient, the learners hold
identical parameters after every step, so each publishes its own (identical) weights to
its own actors: no weights travel between learners.

Every learner takes a batch of B unrolls per update, so an update consumes
``num_learners x B`` unrolls (``cfg.frames_per_update``) and the gradient is the mean of
the learners' gradients (the learning rate keeps its single-learner meaning). All learners
count frames alike and stop after the same number of updates; a non-finite loss on any
learner makes the averaged gradient non-finite, so all of them skip that update together.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import socket
import threading

import torch
import torch.distributed as dist

from impala_rl.config import TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.backends.base import ActorFailure
from impala_rl.runtime.backends.ray_backend import RayBackend
from impala_rl.runtime.loop import run_loop, stop_on_nonfinite
from impala_rl.runtime.sources import make_source
from impala_rl.runtime.types import Batch

log = logging.getLogger("impala_rl")

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)  # a learner waiting this long for the others gives up
PEER_FINISH_TIMEOUT_S = 60.0  # after the last update, how long learner 0 waits for the others to finish
LEARNER_CPUS = 1.0  # Ray CPUs a peer learner reserves


def actor_share(cfg: TrainConfig, rank: int) -> list[int]:
    """The actor ids learner ``rank`` drives: i with i mod num_learners == rank."""
    return [i for i in range(cfg.num_actors) if i % cfg.num_learners == rank]


def average_gradients(model: torch.nn.Module, loss_finite: bool = True) -> None:
    """All-reduce the gradients of ``model`` over the process group and divide by its size.

    One flat buffer, one collective. A learner whose loss was not finite (no backward)
    contributes NaN, so every learner then sees a non-finite gradient and skips the update.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if not loss_finite:
            p.grad.fill_(math.nan)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def parameter_hash(model: torch.nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers, in state_dict order (equal iff bitwise equal)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _to_cpu(obj):
    """A copy of a (nested) state dict with every tensor on the CPU, to ship to other learners."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _init_group(backend: str, init_method: str, rank: int, world_size: int) -> None:
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=COLLECTIVE_TIMEOUT)


class PeerLearner:
    """Body of learner ``rank`` >= 1 (a Ray actor): the training loop without logging.

    Runs with ``max_concurrency=2`` so that :meth:`drain` (episodes and restarts for learner
    0's logs) answers while :meth:`run` trains.
    """

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, rank: int, init_method: str, dist_backend: str,
                 learner_state: dict):
        from impala_rl.runtime.builders import build_learner
        from impala_rl.runtime.builders import resolve_device

        torch.set_num_threads(cfg.resolved_learner_threads)
        self.cfg = cfg
        self.rank = rank
        self.init_method = init_method
        self.dist_backend = dist_backend
        self.learner = build_learner(cfg, env_spec, device=resolve_device(cfg.device))
        self.learner.load_state_dict(learner_state)
        self.backend = RayBackend(cfg, env_spec, self.learner.model, actor_ids=actor_share(cfg, rank),
                                  version=self.learner.version)
        self.lock = threading.Lock()
        self.episodes: list[tuple[float, int, int]] = []

    def run(self) -> dict:
        cfg, learner = self.cfg, self.learner
        _init_group(self.dist_backend, self.init_method, self.rank, cfg.num_learners)
        learner.gradient_sync = average_gradients
        def keep_episodes(step) -> None:  # for learner 0's logs (drain)
            with self.lock:
                self.episodes.extend((e.ret, e.length, e.task) for e in step.episodes)

        try:
            self.backend.start()
            run_loop(make_source(cfg, self.backend, agent=learner.agent), learner, self.backend.publish,
                     [keep_episodes, stop_on_nonfinite(learner, cfg.max_nonfinite)], cfg.total_frames)
        finally:
            self.backend.close()
            dist.destroy_process_group()
        return {"rank": self.rank, "version": learner.version, "frames": learner.frames,
                "param_hash": parameter_hash(learner.model), "actor_restarts": self.backend.restarts}

    def drain(self) -> tuple[list[tuple[float, int]], int]:
        """(episodes finished since the last call, actor restarts so far)."""
        with self.lock:
            episodes, self.episodes = self.episodes, []
        return episodes, self.backend.restarts


class MultiLearnerBackend:
    """Learner 0's backend: its own share of actors, plus learners 1..N-1 as Ray actors.

    Wires :func:`average_gradients` into ``learner`` once the process group is up
    (:meth:`start`). After the run, :attr:`peer_results` holds each peer's final version
    and parameter hash, and :meth:`close` logs whether they equal learner 0's.
    """

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, learner):
        self.cfg = cfg
        self.learner = learner
        self.world_size = cfg.num_learners
        self.local = RayBackend(cfg, env_spec, learner.model, actor_ids=actor_share(cfg, 0), version=learner.version,
                                extra_cpus=(cfg.num_learners - 1) * LEARNER_CPUS)
        ray = self.ray = self.local.ray
        on_gpu = learner.device.type == "cuda"
        self.dist_backend = "nccl" if on_gpu else "gloo"
        host = ray.util.get_node_ip_address()
        self.init_method = f"tcp://{host}:{_free_port(host)}"
        state_ref = ray.put(_to_cpu(learner.state_dict()))  # all learners start from learner 0's state
        peer_cls = ray.remote(PeerLearner).options(num_cpus=LEARNER_CPUS, num_gpus=1 if on_gpu else 0,
                                                   max_concurrency=2, max_restarts=0)
        self.peers = [peer_cls.remote(cfg, env_spec, rank, self.init_method, self.dist_backend, state_ref)
                      for rank in range(1, self.world_size)]
        self.runs: list = []
        self.drains: dict[int, object] = {}
        self.peer_episodes: list[EpisodeStats] = []
        self.peer_restarts: dict[int, int] = {}
        self.peer_results: list[dict] = []
        self.group_up = False
        self.closed = False

    def start(self) -> None:
        self.runs = [p.run.remote() for p in self.peers]
        log.info("multi-learner: %d learners, %s all-reduce via %s", self.world_size, self.dist_backend,
                 self.init_method)
        _init_group(self.dist_backend, self.init_method, 0, self.world_size)
        self.group_up = True
        self.learner.gradient_sync = average_gradients
        self.local.start()

    def _poll_peers(self) -> None:
        """Collect peers' episodes and restart counts without blocking; fail fast if a peer died."""
        ray = self.ray
        done, _ = ray.wait(self.runs, num_returns=len(self.runs), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except Exception as e:
                raise ActorFailure(f"a peer learner failed: {str(e).strip().splitlines()[-1]}") from None
        for i, peer in enumerate(self.peers):
            ref = self.drains.get(i)
            if ref is None:
                self.drains[i] = peer.drain.remote()
                continue
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                episodes, restarts = ray.get(ref)
                self.peer_episodes.extend(EpisodeStats(*e) for e in episodes)
                self.peer_restarts[i] = restarts
                self.drains[i] = peer.drain.remote()

    def get_batch(self, count: int | None = None) -> tuple[Batch, list[EpisodeStats]]:
        self._poll_peers()
        batch, episodes = self.local.get_batch(count)
        episodes = episodes + self.peer_episodes
        self.peer_episodes = []
        return batch, episodes

    def publish(self, model: torch.nn.Module, version: int) -> None:
        self.local.publish(model, version)

    def actor_timings(self) -> dict[str, float]:
        return self.local.actor_timings()  # learner 0's own actors

    def info(self) -> dict[str, float]:
        info = self.local.info()
        info["actor_restarts"] += float(sum(self.peer_restarts.values()))
        return info

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        ray = self.ray
        cfg, learner = self.cfg, self.learner
        finished = learner.frames >= cfg.total_frames or learner.nonfinite_in_a_row >= cfg.max_nonfinite
        if self.runs and finished:  # the peers end after the same update: wait for their results
            done, _ = ray.wait(self.runs, num_returns=len(self.runs), timeout=PEER_FINISH_TIMEOUT_S)
            for ref in done:
                try:
                    self.peer_results.append(ray.get(ref))
                except Exception as e:
                    log.error("a peer learner failed: %s", str(e).strip().splitlines()[-1])
            for r in self.peer_results:
                self.peer_restarts[r["rank"] - 1] = r["actor_restarts"]
            own = parameter_hash(learner.model)
            same = all(r["param_hash"] == own and r["version"] == learner.version for r in self.peer_results)
            if same and len(self.peer_results) == len(self.peers):
                log.info("multi-learner: all %d learners hold identical parameters after %d updates (sha256 %s)",
                         self.world_size, learner.version, own[:16])
            else:
                log.error("multi-learner: learners disagree at the end: learner 0 version %d hash %s; peers %s",
                          learner.version, own[:16],
                          [(r["rank"], r["version"], r["param_hash"][:16]) for r in self.peer_results])
        for p in self.peers:
            try:
                ray.kill(p, no_restart=True)
            except Exception:
                pass
        if self.group_up:
            dist.destroy_process_group()
            self.group_up = False
        self.local.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

