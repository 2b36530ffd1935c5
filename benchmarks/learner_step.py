"""The learner step alone, for comparing two checkouts side by side.

    PYTHONPATH=<checkout>/src python benchmarks/learner_step.py LABEL [--env ALE/Pong-v5] [--steps 8]

Builds the family preset's learner for ``--env`` (one thread, as ``impala train`` gives the
learner beside two actors on two cores), makes two warm-up steps on one synthetic batch and
prints ``LABEL <median step ms>``. Run it alternately under each checkout's ``src``
(A B B A ...) so that the host's drift hits both alike; BENCHMARKS.md compares the seams this
way (issue 20).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from impala_rl.bench import synthetic_batch
from impala_rl.config import TrainConfig
from impala_rl.runtime.builders import build_learner, probe_env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("label")
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.for_env(args.env, quiet=True)  # as `impala train --env ENV` runs it
    spec = probe_env(cfg)
    batch = synthetic_batch(cfg, spec)
    learner = build_learner(cfg, spec)
    for _ in range(2):
        learner.step(batch)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        learner.step(batch)
        times.append(time.perf_counter() - t0)
    print(f"{args.label} {statistics.median(times) * 1000:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
