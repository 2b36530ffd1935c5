"""The IMPALA paper's Table 2 at small scale: off-policy corrections without and with replay.

    python benchmarks/table2.py [--tasks CartPole-v1,Acrobot-v1] [--seeds 0,1,2] [--frames N]
                                [--corrections vtrace,1step_is,epsilon,none] [--out runs/table2] [--json]

For every task, correction and seed: one `impala train` run with the task's preset and
``--correction C``, once without replay and once with ``--replay-proportion 0.5`` (half of
every batch drawn from a buffer of ``--replay-capacity`` unrolls, which makes the policy
lag large). Prints the final return (mean of the last 100 episodes) as mean +- standard
deviation over the seeds, and the policy lag measured in those runs (mean over the run of
the per-batch mean lag, in learner updates; with replay, of the replayed unrolls).
Runs whose directory already holds a summary are read, not re-run, so an interrupted
table continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

CORRECTIONS = ("vtrace", "1step_is", "epsilon", "none")
REPLAY = {"no replay": [], "replay": ["--replay-proportion", "0.5"]}


def run(task: str, correction: str, replay: str, seed: int, out: Path, frames: int | None, extra: list[str]) -> dict:
    run_dir = out / f"{task.replace('/', '_')}-{correction}-{replay.replace(' ', '')}-s{seed}"
    if not (run_dir / "summary.json").exists():
        cmd = [sys.executable, "-m", "impala_rl.cli", "train", "--env", task, "--correction", correction,
               "--seed", str(seed), "--run-dir", str(run_dir), "--quiet", *REPLAY[replay], *extra]
        if frames:
            cmd += ["--total-frames", str(frames)]
        print("[table2] " + " ".join(cmd[3:]), file=sys.stderr)
        subprocess.run(cmd, check=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lag_key = "policy_lag_replay" if replay == "replay" else "policy_lag_mean"
    lags = [float(r[lag_key]) for r in rows if r.get(lag_key) not in (None, "", "nan")]
    return {"final": summary["mean_return"], "lag": float(np.mean(lags)) if lags else float("nan"),
            "frames": summary["frames"], "elapsed_s": summary["elapsed_s"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="CartPole-v1,Acrobot-v1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--corrections", default=",".join(CORRECTIONS))
    p.add_argument("--frames", type=int, default=None, help="frames per run (default: the task's preset)")
    p.add_argument("--replay-capacity", type=int, default=2000)
    p.add_argument("--out", default="runs/table2")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    tasks, seeds, corrections = a.tasks.split(","), [int(s) for s in a.seeds.split(",")], a.corrections.split(",")
    extra = ["--replay-capacity", str(a.replay_capacity)]
    results: dict = {}
    for task in tasks:  # the most informative cells first: V-trace and 1-step IS with replay
        for replay in ("replay", "no replay"):
            for correction in corrections:
                for seed in seeds:
                    results.setdefault(task, {}).setdefault(replay, {}).setdefault(correction, []).append(
                        run(task, correction, replay, seed, Path(a.out), a.frames, extra))
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    header = " | ".join(f"{t} {r}" for t in tasks for r in REPLAY)
    print(f"| correction | {header} |")
    print("| --- | " + " | ".join("---:" for _ in tasks for _ in REPLAY) + " |")
    for correction in corrections:
        cells = []
        for task in tasks:
            for replay in REPLAY:
                finals = [x["final"] for x in results[task][replay][correction] if x["final"] is not None]
                cells.append(f"{np.mean(finals):.1f} +- {np.std(finals):.1f}" if finals else "n/a")
        print(f"| {correction} | " + " | ".join(cells) + " |")
    lags = " | ".join(f"{np.mean([x['lag'] for c in corrections for x in results[t][r][c]]):.1f}"
                      for t in tasks for r in REPLAY)
    print(f"| policy lag (updates) | {lags} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
