"""One optimiser step alone: torch's Adam loops (per tensor, foreach) against the fused kernel.

    python benchmarks/optimizer_step.py [--steps 300] [ENV:AGENT ...]

For each ``ENV:AGENT`` (default: Rainbow and IMPALA on MinAtar Breakout, MERLIN on POPGym's
RepeatPrevious, IMPALA on Pong) it builds the family preset's network, gives every parameter
a random gradient and prints the mean time of one ``Adam.step`` for each
implementation, one thread (as the learner runs beside two actors on two cores). Nothing is
asserted; the figures go to BENCHMARKS.md with this command.
"""

from __future__ import annotations

import argparse
import time

import torch

from impala_rl.cli.train import config_with_preset
from impala_rl.runtime.builders import build_learner, probe_env

DEFAULT = ("MinAtar/Breakout-v1:rainbow", "MinAtar/Breakout-v1:impala", "popgym/RepeatPreviousEasy-v0:merlin",
           "ALE/Pong-v5:impala")
VARIANTS = (("per tensor", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True}))


def step_ms(params: list[torch.Tensor], steps: int, **kwargs) -> float:
    copies = [p.detach().clone().requires_grad_() for p in params]
    for c in copies:
        c.grad = torch.randn_like(c)
    optimizer = torch.optim.Adam(copies, lr=1e-4, **kwargs)
    for _ in range(5):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", default=list(DEFAULT), metavar="ENV:AGENT")
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{'env':32s} {'agent':8s} {'params':>9s} " + " ".join(f"{name + ' ms':>14s}" for name, _ in VARIANTS))
    for target in args.targets:
        env, _, agent = target.partition(":")
        cfg, _ = config_with_preset({"env": env, "agent": agent or "impala", "quiet": True})
        learner = build_learner(cfg, probe_env(cfg))
        params = [q for q in learner.model.parameters() if q.requires_grad]
        times = [step_ms(params, args.steps, **kwargs) for _, kwargs in VARIANTS]
        print(f"{env:32s} {agent:8s} {sum(q.numel() for q in params):9d} " + " ".join(f"{t:14.3f}" for t in times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
