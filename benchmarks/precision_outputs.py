"""How far the learner's outputs move under bfloat16 and under torch.compile, on one batch.

    python benchmarks/precision_outputs.py [--env ALE/Pong-v5] [--logit-scale 300]

Builds the family preset's learner, scales the policy head so the logits are of the size they
reach in training (``--logit-scale``; the head starts at gain 0.01), and prints, for bfloat16
autocast, torch.compile, and both, the largest change of the logits, of the log-probabilities and
of the values against float32 eager, and the mean |rho - 1| that change gives V-trace's
importance weights on fresh data (where they would be exactly 1).
"""

from __future__ import annotations

import argparse

import torch

from impala_rl.bench import synthetic_batch
from impala_rl.config import TrainConfig
from impala_rl.models import net_inputs
from impala_rl.runtime.builders import build_learner, probe_env
from impala_rl.runtime.precision import AutocastForward


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--logit-scale", type=float, default=300.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.for_env(args.env, quiet=True)  # as `impala train --env ENV` runs it
    spec = probe_env(cfg)
    model = build_learner(cfg, spec).model
    with torch.no_grad():
        model.policy_head.weight.mul_(args.logit_scale)
    batch = synthetic_batch(cfg, spec)
    inputs = net_inputs(batch["obs"], batch["first"], batch["last_action"], batch["reward"], cfg.reward_clip)
    with torch.no_grad():
        ref = model(**inputs)[0]
        ref_logp = torch.log_softmax(ref.policy_params, -1)
        print(f"{args.env}: mean |logit| {float(ref.policy_params.abs().mean()):.3f}")
        cpu = torch.device("cpu")
        for name, forward in (("bfloat16", AutocastForward(model, cpu)), ("compile", torch.compile(model)),
                              ("compile+bfloat16", AutocastForward(torch.compile(model), cpu))):
            out = forward(**inputs)[0]
            logp = torch.log_softmax(out.policy_params, -1)
            print(f"{name:>17}: max |d logit| {float((out.policy_params - ref.policy_params).abs().max()):.4f}, "
                  f"max |d log pi| {float((logp - ref_logp).abs().max()):.4f}, "
                  f"mean |rho - 1| {float((logp - ref_logp).exp().sub(1).abs().mean()):.4f}, "
                  f"max |d V| {float((out.values - ref.values).abs().max()):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
