"""The learner step in float32 against bfloat16 autocast (--learner-precision), side by side.

    python benchmarks/precision.py [--env ALE/Pong-v5] [--threads 1,2] [--rounds 5]

Builds the family preset's learner for ``--env`` twice (same seed), one per precision, and
times ``Learner.step`` on one synthetic batch laid out as the backends give it (the
preset's passes and minibatches included), alternating the two so that the host's drift
hits both alike. Prints the median step time of each and their ratio, per thread count,
and whether this CPU has native bfloat16 (AVX512-BF16 or AMX): where it has not, autocast
emulates bfloat16 and is expected to be slower.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from impala_rl.bench import synthetic_batch
from impala_rl.config import TrainConfig, apply_preset
from impala_rl.envs import env_family
from impala_rl.runtime.builders import build_learner, probe_env
from impala_rl.runtime.precision import cpu_flags, native_bf16


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    cfg = apply_preset(TrainConfig(env=args.env, quiet=True), {"env"}, env_family(args.env))[0].validate()
    env_spec = probe_env(cfg)
    batch = synthetic_batch(cfg, env_spec)
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx"))
    print(f"{args.env}: batch {cfg.batch_size} x T {cfg.unroll_length}, {cfg.learner_epochs} pass(es) x "
          f"{cfg.learner_minibatches} minibatch(es); native bfloat16 on this CPU: "
          f"{native_bf16(torch.device('cpu'))} ({', '.join(flags) or 'no BF16 flags'})")
    print(f"{'threads':>7} {'float32 ms':>11} {'bfloat16 ms':>12} {'float32/bfloat16':>17}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        learners = {p: build_learner(dataclasses.replace(cfg, learner_precision=p), env_spec)
                    for p in ("float32", "bfloat16")}
        for learner in learners.values():  # warm-up: allocator, kernels
            for _ in range(2):
                learner.step(batch)
        times = {p: [] for p in learners}
        for _ in range(args.rounds):
            for p, learner in learners.items():
                t0 = time.perf_counter()
                learner.step(batch)
                times[p].append(time.perf_counter() - t0)
        f32, bf16 = (statistics.median(times[p]) * 1000 for p in ("float32", "bfloat16"))
        print(f"{threads:>7} {f32:>11.1f} {bf16:>12.1f} {f32 / bf16:>17.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
