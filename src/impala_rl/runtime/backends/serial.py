"""Serial backend: actors and learner in one process, deterministic, for debugging and tests.

The very same Actor runs here as in the local and Ray backends. Every actor acts with the
newest weights, so the policy lag is 0 unless B is not a multiple of the envs per actor
(left-over unrolls then wait one update). An actor loads them when it next acts, not at
every publish: an agent that makes many updates per unroll (Rainbow's replay ratio) would
otherwise copy the weights into every actor after each update.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import torch

from impala_rl.config import TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.backends.base import sum_timings
from impala_rl.runtime.builders import build_actor, rollout_spec
from impala_rl.runtime.types import Batch


class SerialBackend:
    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, model: torch.nn.Module):
        self.cfg = cfg
        self.spec = rollout_spec(cfg, env_spec)
        self.pin_memory = next(model.parameters()).is_cuda  # learner on CUDA: async host-to-device copies
        self.buffers = self.spec.allocate(cfg.slots)
        self.free = deque(range(cfg.slots))
        self.full: deque[int] = deque()
        if cfg.sync_step:  # one actor holding every environment: one batched forward pass per step
            one = dataclasses.replace(cfg, num_actors=1, envs_per_actor=cfg.total_envs)
            self.actors = [build_actor(one, env_spec, 0)]
        else:
            self.actors = [build_actor(cfg, env_spec, i) for i in range(cfg.num_actors)]
        self.version = 0
        self.weights: dict[str, torch.Tensor] = {}
        self.loaded = [-1] * len(self.actors)  # the version each actor holds
        self.next_actor = 0
        self.actor_time = 0.0
        self.publish(model, 0)

    def start(self) -> None:
        pass

    def get_batch(self, count: int | None = None) -> tuple[Batch, list[EpisodeStats]]:
        """The next ``count`` unrolls (default: a whole learner batch), acting until there are enough."""
        count = self.cfg.batch_size if count is None else count  # the source decides (0: episodes only)
        finished: list[EpisodeStats] = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            while len(self.full) < count:
                i = self.next_actor
                actor = self.actors[i]
                if self.loaded[i] != self.version:
                    actor.model.load_state_dict(self.weights)
                    self.loaded[i] = self.version
                self.next_actor = (self.next_actor + 1) % len(self.actors)
                slots = [self.free.popleft() for _ in range(actor.num_envs)]
                finished += actor.unroll(self.buffers, slots, self.version)
                self.full.extend(slots)
        self.actor_time += time.perf_counter() - t0
        idx = [self.full.popleft() for _ in range(count)]
        batch = self.spec.gather(self.buffers, idx, pin_memory=self.pin_memory)
        self.free.extend(idx)
        return batch, finished

    def publish(self, model: torch.nn.Module, version: int) -> None:
        # A snapshot: the actors must act with these weights even if the model changes before
        # they next act (on CUDA ``.to`` copies; on the CPU ``clone`` does).
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.version = version
        self.loaded = [-1] * len(self.actors)

    def info(self) -> dict[str, float]:
        return {"actor_restarts": 0.0, "actor_time_s": self.actor_time}

    def actor_timings(self) -> dict[str, float]:
        return sum_timings(actor.timings for actor in self.actors)

    def close(self) -> None:
        for actor in self.actors:
            actor.close()
        self.actors = []
