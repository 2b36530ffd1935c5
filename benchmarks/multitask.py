"""Multi-task benchmark: one agent on a suite of games, with and without PopArt, at equal frames.

    python benchmarks/multitask.py [--suite minatar5] [--frames 10000000] [--seed 0]
                                   [--variants popart,unclipped,clipped] [--out runs/multitask]

Each variant is one `impala train --suite SUITE` run with the suite family's preset:

- ``popart``: ``--popart`` (per-task value statistics; rewards unclipped);
- ``unclipped``: ``--no-popart --reward-clip 0`` (per-task value heads, no normalisation);
- ``clipped``: ``--no-popart --reward-clip 1`` (the IMPALA paper's multi-task baseline).

Prints, per game, the last-100-episode mean return of every variant and a random policy's
(100 episodes), and one aggregate: the mean over games of
``(score - random) / (best - random)``, where ``best`` is the highest final score any
variant reached in that game (so 1.0 means "the best of the runs compared here in every
game"; MinAtar has no human reference scores). Curves: ``OUT/multitask.png`` via
`impala plot`. Runs that exist already in OUT are summarised, not re-run.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    "popart": ["--popart"],
    "unclipped": ["--no-popart", "--reward-clip", "0"],
    "clipped": ["--no-popart", "--reward-clip", "1"],
}


def final_returns(run_dir: Path) -> dict[str, float]:
    """Per task label: the mean return of its last 100 episodes."""
    by_task: dict[str, list[float]] = {}
    with open(run_dir / "episodes.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_task.setdefault(row["task"], []).append(float(row["return"]))
    return {task: float(np.mean(r[-100:])) for task, r in by_task.items()}


def random_returns(env_ids: list[str], episodes: int = 100, seed: int = 0) -> dict[str, float]:
    from impala_rl.envs import make_env
    from impala_rl.envs.tasks import task_labels

    out = {}
    for label, env_id in zip(task_labels(tuple(env_ids)), env_ids):
        env = make_env(env_id, seed=seed)
        rng = np.random.default_rng(seed)
        totals = []
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                _, r, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
                total += r
                done = terminated or truncated
            totals.append(total)
        env.close()
        out[label] = float(np.mean(totals))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="minatar5")
    p.add_argument("--frames", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="popart,unclipped")
    p.add_argument("--out", default="runs/multitask")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    from impala_rl.envs.tasks import SUITES

    variants = a.variants.split(",")
    out = Path(a.out)
    runs = {}
    for variant in variants:
        run_dir = out / f"{a.suite}-{variant}-s{a.seed}"
        runs[variant] = run_dir
        if (run_dir / "summary.json").exists():
            print(f"[multitask] {run_dir} exists: summarising it", file=sys.stderr)
            continue
        cmd = [sys.executable, "-m", "impala_rl.cli", "train", "--suite", a.suite, "--total-frames", str(a.frames),
               "--seed", str(a.seed), "--run-dir", str(run_dir), "--quiet", *VARIANTS[variant]]
        print("[multitask] " + " ".join(cmd[2:]), file=sys.stderr)
        subprocess.run(cmd, check=True)
    finals = {v: final_returns(d) for v, d in runs.items()}
    random = random_returns(list(SUITES[a.suite]), seed=a.seed)
    games = list(random)
    best = {g: max(finals[v].get(g, -np.inf) for v in variants) for g in games}
    summary = {}
    for v in variants:
        norm = [(finals[v][g] - random[g]) / (best[g] - random[g]) if best[g] > random[g] else float("nan")
                for g in games]
        info = json.loads((runs[v] / "summary.json").read_text())
        summary[v] = {"returns": finals[v], "normalised_mean": float(np.nanmean(norm)),
                      "frames": info["frames"], "minutes": round(info["elapsed_s"] / 60, 1)}
    from impala_rl.plot import plot_runs

    png = plot_runs([str(d) for d in runs.values()], out / f"{a.suite}-s{a.seed}.png", window=100,
                    title=f"{a.suite}: " + " vs ".join(variants) + f", {a.frames / 1e6:g}M frames, seed {a.seed}")
    if a.json:
        print(json.dumps({"random": random, "variants": summary, "png": str(png)}, indent=2))
        return 0
    print(f"| game | random | " + " | ".join(variants) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in variants) + " |")
    for g in games:
        print(f"| {g} | {random[g]:.2f} | " + " | ".join(f"{finals[v].get(g, float('nan')):.2f}" for v in variants)
              + " |")
    print("| normalised mean | 0 | " + " | ".join(f"{summary[v]['normalised_mean']:.3f}" for v in variants) + " |")
    print("| frames / wall time | | " + " | ".join(f"{summary[v]['frames'] / 1e6:.1f}M / {summary[v]['minutes']} min"
                                             for v in variants) + " |")
    print(f"curves: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
