"""Population based training against the same members without it, at equal frames.

    python benchmarks/pbt.py [--env CartPole-v1] [--population 4] [--frames 300000]
                             [--ready-episodes 50] [--ready-frames 25000] [--bad-lr 1e-5] [--out runs/pbt-bench] [--seed 0]

Half of the members start from a deliberately bad learning rate (``--bad-lr``), the other
half from the preset's. Two arms, one after the other, each an ``impala pbt`` population:

- **PBT**: the seed's rules (ready every ``--ready-episodes`` episodes and ``--ready-frames``
  frames, fitness over the last ``--ready-episodes`` episodes, 5% margin, x1.2 or
  x1/1.2 with probability 1/3 on the paper's four hyperparameters);
- **no PBT**: the same members (same seeds, same starting values, same frames) with
  exploit and explore switched off (``--margin 1e9 --perturb-probability 0``).

Prints each member's starting and final learning rate and its final 100-episode mean,
the population's best and median per arm, and writes ``impala plot`` of each population
(returns with the lineage, hyperparameter traces) next to the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_arm(name: str, out: Path, a, extra: list[str]) -> dict:
    pop_dir = out / name
    lrs = ",".join([str(a.bad_lr), str(a.good_lr)])
    cmd = [sys.executable, "-m", "impala_rl.cli", "pbt", "--env", a.env, "--population", str(a.population),
           "--total-frames", str(a.frames), "--ready-episodes", str(a.ready_episodes),
           "--ready-frames", str(a.ready_frames), "--seed", str(a.seed),
           "--initial", f"learning_rate={lrs}", "--pop-dir", str(pop_dir), *extra]
    print(f"[pbt-bench] {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    subprocess.run([sys.executable, "-m", "impala_rl.cli", "plot", str(pop_dir), "-o", str(out / f"{name}.png")],
                   check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((pop_dir / "summary.json").read_text())
    start = json.loads((pop_dir / "population.json").read_text())["settings"]["members"]
    rows = {m: (start[m]["learning_rate"], s["hparams"]["learning_rate"], s["final_100_episode_mean"],
                s["parent"]) for m, s in summary["members"].items()}
    finals = [r[2] for r in rows.values() if r[2] is not None]
    return {"rows": rows, "best": max(finals), "median": statistics.median(finals), "wall_s": wall,
            "events": summary["events"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--frames", type=int, default=300_000, help="frames per member")
    p.add_argument("--ready-episodes", type=int, default=50)
    p.add_argument("--ready-frames", type=int, default=25_000,
                   help="frames between ready points as well (0: episodes only; PBT lost that way at this scale)")
    p.add_argument("--bad-lr", type=float, default=1e-5)
    p.add_argument("--good-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/pbt-bench")
    a = p.parse_args()
    out = Path(a.out) / f"seed{a.seed}"
    if out.exists():
        print(f"{out} exists; choose another --out or --seed", file=sys.stderr)
        return 2
    out.mkdir(parents=True)
    arms = {"pbt": run_arm("pbt", out, a, []),
            "no-pbt": run_arm("no-pbt", out, a, ["--margin", "1e9", "--perturb-probability", "0"])}
    print(f"{a.env}, population {a.population}, {a.frames} frames per member, ready every {a.ready_episodes} "
          f"episodes and {a.ready_frames} frames, seed {a.seed}; half the members start at lr {a.bad_lr}")
    print("| arm | member | lr at start | lr at end | copied last | final 100-ep mean |")
    print("| --- | --- | ---: | ---: | --- | ---: |")
    for arm, r in arms.items():
        for m, (lr0, lr1, final, parent) in r["rows"].items():
            print(f"| {arm} | {m} | {lr0:.3g} | {lr1:.3g} | {parent or '-'} | {final:.1f} |")
    print()
    print("| arm | best | median | events | wall time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for arm, r in arms.items():
        print(f"| {arm} | {r['best']:.1f} | {r['median']:.1f} | {r['events']} | {r['wall_s'] / 60:.1f} min |")
    (out / "results.json").write_text(json.dumps(arms, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
