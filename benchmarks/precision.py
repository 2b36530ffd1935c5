"""The learner step in variants, side by side: float32 against bfloat16 autocast
(--learner-precision), with and without torch.compile (--compile).

    python benchmarks/precision.py [--env ALE/Pong-v5] [--threads 1,2] [--rounds 5]
        [--variants float32,bfloat16,compile,compile+bfloat16]

Builds the family preset's learner for ``--env`` once per variant (same seed) and times
``Learner.step`` on one synthetic batch laid out as the backends give it (the preset's
passes and minibatches included), alternating the variants so that the host's drift hits
them alike. Prints, per thread count, each variant's first step (where ``compile`` pays its
compile time), its median step after two warm-up steps, and the ratio of the first variant's
median to each one's (above 1: faster). Also whether this CPU has native bfloat16
(AVX512-BF16 or AMX): where it has not, autocast emulates bfloat16 and is expected to be slower.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from impala_rl.bench import synthetic_batch
from impala_rl.config import TrainConfig
from impala_rl.runtime.builders import build_learner, probe_env
from impala_rl.runtime.precision import cpu_flags, native_bf16

VARIANTS = {
    "float32": {"learner_precision": "float32"},
    "bfloat16": {"learner_precision": "bfloat16"},
    "compile": {"learner_precision": "float32", "compile": True},
    "compile+bfloat16": {"learner_precision": "bfloat16", "compile": True},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default="float32,bfloat16", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    args = p.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    cfg = TrainConfig.for_env(args.env, quiet=True)  # as `impala train --env ENV` runs it
    env_spec = probe_env(cfg)
    batch = synthetic_batch(cfg, env_spec)
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx"))
    print(f"{args.env}: batch {cfg.batch_size} x T {cfg.unroll_length}, {cfg.learner_epochs} pass(es) x "
          f"{cfg.learner_minibatches} minibatch(es); native bfloat16 on this CPU: "
          f"{native_bf16(torch.device('cpu'))} ({', '.join(flags) or 'no BF16 flags'})")
    print(f"{'threads':>7} {'variant':>17} {'first step s':>13} {'median ms':>10} {f'{names[0]}/variant':>18}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        learners, first = {}, {}
        for name in names:
            learners[name] = build_learner(dataclasses.replace(cfg, **VARIANTS[name]), env_spec)
            t0 = time.perf_counter()
            learners[name].step(batch)  # compile happens here
            first[name] = time.perf_counter() - t0
            for _ in range(2):  # warm-up: allocator, kernels, recompiles
                learners[name].step(batch)
        times = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, learner in learners.items():
                t0 = time.perf_counter()
                learner.step(batch)
                times[name].append(time.perf_counter() - t0)
        medians = {name: statistics.median(times[name]) * 1000 for name in names}
        for name in names:
            print(f"{threads:>7} {name:>17} {first[name]:>13.1f} {medians[name]:>10.1f} "
                  f"{medians[names[0]] / medians[name]:>18.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
