"""Ray transport overhead: steady-state training throughput, Ray backend vs local backend.

For each actor count, the same configuration is trained with ``--backend local`` and
``--backend ray`` (a private local Ray on 127.0.0.1) and the learner's consumption in
frames/s is measured after a warm-up (``impala_rl.bench.measure_train``, the same loop as
``impala bench``'s train stage). Prints a markdown table: frames/s of each backend, their
ratio (ray / local), the share of the learner's time spent waiting for a batch (near 0:
the learner is the bottleneck), and for Ray the object store's use and spill at the end.

    python benchmarks/ray_transport.py --env CartPole-v1 --actors 1 2 4 [--duration 20 --warmup 10]
    python benchmarks/ray_transport.py --env ALE/Pong-v5 --actors 1 2 4
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import torch


from impala_rl.bench import measure_learner, measure_train
from impala_rl.config import TrainConfig, apply_preset
from impala_rl.envs import env_family
from impala_rl.runtime.builders import probe_env
from impala_rl.runtime.builders import resolve_device


def object_store_stats() -> str:
    """'used X MiB, spilled Y MiB' of the running Ray, or '' when Ray cannot say."""
    try:
        from ray._private.internal_api import memory_summary
        text = memory_summary(stats_only=True)
    except Exception:
        return ""
    used = re.search(r"Plasma memory usage (\d+) MiB", text)
    spilled = re.search(r"Spilled (\d+) MiB", text)
    return f"used {used.group(1) if used else '?'} MiB, spilled {spilled.group(1) if spilled else 0} MiB"


class NullWorker:
    """A Ray actor that returns ready-made unrolls (no environment, no inference): what the
    driver can ingest through Ray when actors cost nothing."""

    def __init__(self, cfg: TrainConfig, env_spec, actor_id: int):
        import os
        import uuid

        import ray

        from impala_rl.runtime.builders import rollout_spec
        spec = rollout_spec(cfg, env_spec)
        buffers = spec.allocate(cfg.envs_per_actor)
        if spec.obs_dtype == torch.uint8:
            buffers["obs"].random_(0, 256)
        self.arrays = {k: v.numpy() for k, v in buffers.items()}
        self.version = -1
        self.ray = ray
        self.meta = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                     "incarnation": uuid.uuid4().hex, "reconstructed": False}

    def unroll(self, version: int, weights: list):
        if version != self.version:  # the weights still travel, as in a real run
            self.ray.get(weights[0])
            self.version = version
        self.arrays["version"][:] = version
        return self.arrays, [], self.meta


def transport_ceiling(cfg: TrainConfig, duration: float) -> float:
    """Frames/s the driver ingests from ``cfg.num_actors`` null actors (batching and a publish per batch)."""
    from impala_rl.runtime.backends.ray_backend import RayBackend
    from impala_rl.agents import make_agent

    class NullBackend(RayBackend):
        worker_class = NullWorker

    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    backend = NullBackend(cfg, env_spec, model)
    try:
        backend.start()
        for _ in range(5):
            backend.get_batch()
        batches, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration:
            backend.get_batch()
            batches += 1
            backend.publish(model, batches)
        return batches * cfg.frames_per_batch / (time.perf_counter() - t0)
    finally:
        backend.close()


def run(cfg: TrainConfig, warmup: float, duration: float) -> tuple[float, float, str]:
    env_spec = probe_env(cfg)
    device = resolve_device(cfg.device)
    stats = ""
    if cfg.backend == "ray":  # keep the Ray instance up after measure_train closes the backend's actors
        from impala_rl.runtime.backends.ray_backend import connect
        ray, _ = connect(cfg, cfg.num_actors * cfg.cpus_per_actor)
    try:
        fps, learner_frac, _ = measure_train(cfg, env_spec, warmup, duration, device)
        if cfg.backend == "ray":
            stats = object_store_stats()
    finally:
        if cfg.backend == "ray":
            ray.shutdown()
    return fps, learner_frac.get("wait_batch", float("nan")), stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--actors", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--envs-per-actor", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--ceiling-actors", type=int, nargs="*", default=[1, 2],
                   help="null-actor counts for the transport ceiling")
    p.add_argument("--learner-threads", type=int, default=1,
                   help="torch threads of the learner (default 1: on a small shared machine more threads "
                        "contend with the actors)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.learner_threads)

    def config(num_actors: int, backend: str) -> TrainConfig:
        explicit = {"env": args.env, "num_actors": num_actors, "backend": backend, "device": "cpu",
                    "total_frames": 10**9, "learner_threads": args.learner_threads}
        if args.envs_per_actor:
            explicit["envs_per_actor"] = args.envs_per_actor
        if args.batch_size:
            explicit["batch_size"] = args.batch_size
        return apply_preset(TrainConfig(**explicit), set(explicit), env_family(args.env))[0].validate()

    rows = []
    for n in args.actors:
        result = {}
        for backend in ("local", "ray"):
            t0 = time.time()
            result[backend] = run(config(n, backend), args.warmup, args.duration)
            print(f"[ray_transport] {args.env} {n} actor(s) {backend}: {result[backend][0]:,.0f} frames/s, "
                  f"learner waiting {result[backend][1]:.0%} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        rows.append((n, result))
    ceilings = []
    for n in args.ceiling_actors:
        ceilings.append((n, transport_ceiling(config(n, "ray"), args.duration)))
        print(f"[ray_transport] transport ceiling with {n} null actor(s): {ceilings[-1][1]:,.0f} frames/s",
              file=sys.stderr, flush=True)
    base = config(1, "local")
    learner_fps = measure_learner(base, probe_env(base), args.duration, resolve_device("cpu"))
    cfg = config(1, "ray")
    print(f"{args.env}: {cfg.envs_per_actor} envs per actor, T={cfg.unroll_length}, B={cfg.batch_size}, "
          f"{cfg.envs_per_actor * cfg.unroll_length * cfg.frames_per_step} frames per Ray request, "
          f"{args.learner_threads} learner thread(s)")
    print()
    if rows:
        print("| actors | local frames/s | ray frames/s | ray / local | learner waiting (local / ray) "
              "| object store (ray) |")
        print("| ---: | ---: | ---: | ---: | :---: | --- |")
        for n, r in rows:
            (lf, lw, _), (rf, rw, st) = r["local"], r["ray"]
            print(f"| {n} | {lf:,.0f} | {rf:,.0f} | {rf / lf:.2f} | {lw:.0%} / {rw:.0%} | {st} |")
        print()
    print(f"learner alone (batches in memory): {learner_fps:,.0f} frames/s")
    for n, c in ceilings:
        print(f"Ray transport ceiling, {n} null actor(s) (no env, no inference, no learner step): {c:,.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
