"""The IMPALA paper's Table 1 on this machine: training throughput of each architecture.

    python benchmarks/table1.py [--env ALE/Pong-v5] [--duration 20] [--warmup 10] [--rounds 2] [--json]

Every row trains the same task with the same network, batch and environments (the
family's preset, with 2 actors x 16 environments and batch 32 so that the synchronous
rows hold one unroll of every environment per batch); only the architecture differs:

- IMPALA: asynchronous actors, each with its own CPU copy of the policy (the default);
- IMPALA (dyn. batch): asynchronous actors, one batched inference server (``--inference central``);
- Batched A2C (sync step): all environments step in lock-step, one batched forward pass
  per step (``--sync-step``);
- Batched A2C (sync traj.): actors wait for the new weights before each unroll (``--sync``);
- Batched A2C (dyn. batch): ``--sync --inference central``.

Frames/s are the learner's consumption at steady state (after ``--warmup`` seconds),
measured as in ``impala bench``; the rows run one after the other, ``--rounds`` times in
alternation (the host's speed drifts), and each row's best round is reported with its
ratio to IMPALA's. A3C (Hogwild-style asynchronous gradient workers) is not implemented.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

ROWS = {
    "IMPALA": {},
    "IMPALA (dyn. batch)": {"inference": "central"},
    "Batched A2C (sync step)": {"sync_step": True},
    "Batched A2C (sync traj.)": {"sync": True},
    "Batched A2C (dyn. batch)": {"sync": True, "inference": "central"},
}
PAPER_TASK1 = {"IMPALA": "17K (48 actors)", "IMPALA (dyn. batch)": "21K (48 actors, 1 GPU)",
               "Batched A2C (sync step)": "9K (13K with 1 GPU)", "Batched A2C (sync traj.)": "16K",
               "Batched A2C (dyn. batch)": "16K (1 GPU)"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    import torch

    from impala_rl.bench import measure_train
    from impala_rl.config import TrainConfig
    from impala_rl.runtime.builders import probe_env, resolve_device

    base = TrainConfig.for_env(a.env, num_actors=2, envs_per_actor=16, batch_size=32, learner_minibatches=1,
                               learner_epochs=1, total_frames=10**12)
    env_spec = probe_env(base)
    device = resolve_device(base.device)
    fps: dict[str, list[float]] = {name: [] for name in ROWS}
    for r in range(a.rounds):
        for name, flags in ROWS.items():
            cfg = dataclasses.replace(base, **flags).validate()
            torch.set_num_threads(cfg.resolved_learner_threads)
            value, _, _ = measure_train(cfg, env_spec, a.warmup, a.duration, device)
            fps[name].append(value)
            print(f"[table1] round {r + 1}: {name}: {value:,.0f} frames/s", file=sys.stderr)
    best = {name: max(v) for name, v in fps.items()}
    impala = best["IMPALA"]
    if a.json:
        print(json.dumps({"env": a.env, "fps": fps, "best": best}, indent=2))
        return 0
    print(f"| architecture | frames/s ({a.env}, 2 actors x 16 envs, batch 32) | ratio to IMPALA | "
          f"paper, task 1 (48 CPUs) |")
    print("| --- | ---: | ---: | ---: |")
    for name in ROWS:
        print(f"| {name} | {best[name]:,.0f} | {best[name] / impala:.2f} | {PAPER_TASK1[name]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
