"""Rainbow's training speed on the runtime against a single-process loop of the same agent.

    python benchmarks/rainbow_speed.py [--env MinAtar/Breakout-v1] [--duration 30] [--warmup 20]
        [--actors 1,2,3] [--envs-per-actor 4] [--rounds 1]

For each setting, in turn and in one sitting (the host's speed drifts: compare within one
invocation), trains ``--agent rainbow`` with the family preset and prints, after a warm-up
(the replay's warm-up included), the steady-state environment frames/s, the learner's
updates/s, and the replay's cost per learner batch (taking and storing fresh unrolls with
their initial priorities, sampling a batch, writing its new priorities back) against the
learner's step:

- ``single``: the serial backend with one actor of one environment: act, store, update
  every 4 steps, in one process (the way most Rainbow code runs, e.g. Dopamine's);
- ``local xN``: the local backend with N actor processes of ``--envs-per-actor`` environments
  each (Ape-X style: actors act while the learner learns).

Nothing is asserted; the figures go to BENCHMARKS.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from impala_rl.config import TrainConfig
from impala_rl.agents import agent_presets
from impala_rl.runtime.backends import make_backend
from impala_rl.runtime.builders import build_learner, probe_env
from impala_rl.runtime.loop import run_loop


class Timed:
    """A data source wrapper that times the source's own work (the learner's wait for actors excluded)."""

    def __init__(self, source):
        self.source = source
        self.times = {"ingest": 0.0, "sample": 0.0, "feedback": 0.0}
        self.batches = 0
        backend = source.backend
        get = backend.get_batch
        self.wait = 0.0

        def timed_get(count=None):
            t0 = time.perf_counter()
            out = get(count)
            self.wait += time.perf_counter() - t0
            return out

        backend.get_batch = timed_get

    def next_batch(self):
        t0, w0 = time.perf_counter(), self.wait
        out = self.source.next_batch()
        self.times["sample"] += time.perf_counter() - t0 - (self.wait - w0)  # ingest + sample, without waiting
        self.batches += 1
        return out

    def feedback(self, batch, per_unroll):
        t0 = time.perf_counter()
        self.source.feedback(batch, per_unroll)
        self.times["feedback"] += time.perf_counter() - t0


def measure(cfg: TrainConfig, duration: float, warmup: float) -> dict:
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    torch.set_num_threads(cfg.resolved_learner_threads)
    backend = make_backend(cfg, env_spec, learner)
    source = Timed(learner.agent.make_source(backend))
    mark: dict = {}
    step_s = [0.0]

    def hook(step):
        now = time.perf_counter()
        if not mark:
            if now - start >= warmup and learner.version > 0:
                mark.update(t=now, frames=step.frames, version=learner.version, batches=source.batches,
                            times=dict(source.times))
                step_s[0] = 0.0
            return None
        m = step.metrics
        step_s[0] += m.get("time_forward_s", 0.0) + m.get("time_backward_s", 0.0) + m.get("time_optimizer_s", 0.0)
        return "measured" if now - mark["t"] >= duration else None

    try:
        backend.start()
        start = time.perf_counter()
        run_loop(source, learner, backend.publish, [hook], total_frames=math.inf)
        elapsed = time.perf_counter() - mark["t"]
    finally:
        backend.close()
    batches = max(1, source.batches - mark["batches"])
    replay_s = sum(source.times.values()) - sum(mark["times"].values())
    return {"fps": (learner.frames - mark["frames"]) / elapsed, "updates_s": (learner.version - mark["version"]) / elapsed,
            "replay_ms": 1e3 * replay_s / batches, "learner_ms": 1e3 * step_s[0] / batches}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="MinAtar/Breakout-v1")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=20.0)
    p.add_argument("--actors", default="1,2,3")
    p.add_argument("--envs-per-actor", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    base = TrainConfig.for_env(args.env, presets=agent_presets("rainbow"), agent="rainbow", quiet=True)
    settings = [("single", dict(backend="serial", num_actors=1, envs_per_actor=1))]
    settings += [(f"local x{n}", dict(backend="local", num_actors=n, envs_per_actor=args.envs_per_actor))
                 for n in (int(a) for a in args.actors.split(","))]
    print(f"{args.env}: rainbow preset, batch {base.batch_size}, {args.duration:.0f} s measured after "
          f"{args.warmup:.0f} s (and the replay's warm-up)")
    print(f"{'setting':>10} {'round':>5} {'frames/s':>9} {'updates/s':>9} {'replay ms/batch':>15} {'learner ms/batch':>16}")
    for r in range(args.rounds):
        for name, kw in settings:
            cfg = TrainConfig(**{**base.__dict__, **kw}).validate()
            m = measure(cfg, args.duration, args.warmup)
            print(f"{name:>10} {r:>5} {m['fps']:>9.0f} {m['updates_s']:>9.1f} {m['replay_ms']:>15.2f} "
                  f"{m['learner_ms']:>16.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
