"""The IMPALA paper's Table 2 at small scale: off-policy corrections without and with replay.

    python benchmarks/table2.py [--tasks CartPole-v1,Acrobot-v1,MinAtar/Breakout-v1:1000000]
                                [--seeds 0,1,2] [--frames N] [--replay-capacity 10000]
                                [--corrections vtrace,1step_is,epsilon,none] [--out runs/table2]
                                [--figure table2.png] [--json]

For every task, correction and seed: one `impala train` run with the task's preset and
``--correction C``, once without replay and once with ``--replay-proportion 0.5`` (half of
every batch drawn uniformly from a buffer of ``--replay-capacity`` unrolls: the paper's
10,000 trajectories by default, which makes the policy lag large). A task may carry its own
frame budget after a colon (``ID:FRAMES``); otherwise ``--frames``, else its preset's.
Clipping is the paper's (section 5.2.2): V-trace and 1-step importance sampling clip every
importance weight at 1 (the defaults of ``--clip-*-threshold``).

Prints the final return (mean of the last 100 episodes) as mean +- standard deviation over
the seeds, and beside each cell the importance-weight figures of the data the correction
saw (over the second half of each run, averaged over seeds): with replay those of the
replayed half alone (``replay_mean_rho``, ``replay_rho_small_fraction``: rho < 0.1),
without replay those of the whole batch; and the measured policy lag (learner updates; with
replay, of the replayed unrolls). ``--figure`` draws the table as bars. Runs whose
directory already holds a summary are read, not re-run, so an interrupted table continues.
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
FIGURES = {  # what each cell reports beside its return: metrics.csv column per replay setting
    "rho": {"no replay": "mean_rho", "replay": "replay_mean_rho"},
    "small": {"no replay": "rho_small_fraction", "replay": "replay_rho_small_fraction"},
    "lag": {"no replay": "policy_lag_mean", "replay": "policy_lag_replay"},
}


def _second_half_mean(rows: list[dict], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
    return float(np.mean(values[len(values) // 2:])) if values else float("nan")


def run(task: str, frames: int | None, correction: str, replay: str, seed: int, out: Path,
        extra: list[str]) -> dict:
    run_dir = out / f"{task.replace('/', '_')}-{correction}-{replay.replace(' ', '')}-s{seed}"
    if not (run_dir / "summary.json").exists():
        cmd = [sys.executable, "-m", "impala_rl.cli", "train", "--env", task, "--correction", correction,
               "--seed", str(seed), "--run-dir", str(run_dir), "--quiet", *REPLAY[replay], *extra]
        if frames:
            cmd += ["--total-frames", str(frames)]
        print("[table2] " + " ".join(cmd[3:]), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"final": summary["mean_return"], "frames": summary["frames"], "elapsed_s": summary["elapsed_s"],
            **{name: _second_half_mean(rows, keys[replay]) for name, keys in FIGURES.items()}}


def cell(runs: list[dict]) -> str:
    finals = [x["final"] for x in runs if x["final"] is not None]
    if not finals:
        return "n/a"
    rho, small = np.mean([x["rho"] for x in runs]), np.mean([x["small"] for x in runs])
    return f"{np.mean(finals):.1f} +- {np.std(finals):.1f} (rho {rho:.2f}, <0.1: {100 * small:.0f}%)"


def draw(results: dict, corrections: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False)
    x = np.arange(len(corrections))
    for ax, (task, by_replay) in zip(axes[0], results.items()):
        for k, replay in enumerate(REPLAY):
            finals = [[r["final"] for r in by_replay[replay][c]] for c in corrections]
            ax.bar(x + (k - 0.5) * 0.38, [np.mean(f) for f in finals], 0.38, yerr=[np.std(f) for f in finals],
                   capsize=3, label=replay)
            for i, f in enumerate(finals):  # each seed as a dot
                ax.plot([x[i] + (k - 0.5) * 0.38] * len(f), f, "k.", markersize=3)
        ax.set_xticks(x, corrections)
        ax.set_title(task)
        ax.set_ylabel("final 100-episode mean return")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="CartPole-v1,Acrobot-v1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--corrections", default=",".join(CORRECTIONS))
    p.add_argument("--frames", type=int, default=None, help="frames per run (default: the task's preset)")
    p.add_argument("--replay-capacity", type=int, default=10_000, help="unrolls in the buffer (the paper's 10,000)")
    p.add_argument("--out", default="runs/table2")
    p.add_argument("--figure", default=None, help="write the table as a bar chart (PNG)")
    p.add_argument("--json", action="store_true")
    a, extra = p.parse_known_args()  # anything else goes to every `impala train`
    tasks = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) if t.rsplit(":", 1)[-1].isdigit() else (t, a.frames)
             for t in a.tasks.split(",")]
    seeds, corrections = [int(s) for s in a.seeds.split(",")], a.corrections.split(",")
    extra = ["--replay-capacity", str(a.replay_capacity), *extra]
    results: dict = {}
    for task, frames in tasks:  # the most informative cells first: every correction with replay
        for replay in ("replay", "no replay"):
            for correction in corrections:
                for seed in seeds:
                    results.setdefault(task, {r: {} for r in REPLAY})[replay].setdefault(correction, []).append(
                        run(task, frames, correction, replay, seed, Path(a.out), extra))
    if a.figure:
        draw(results, corrections, a.figure)
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    names = [t for t, _ in tasks]
    print("| correction | " + " | ".join(f"{t} {r}" for t in names for r in REPLAY) + " |")
    print("| --- | " + " | ".join("---:" for _ in names for _ in REPLAY) + " |")
    for correction in corrections:
        print(f"| {correction} | " + " | ".join(cell(results[t][r][correction]) for t in names for r in REPLAY) + " |")
    lags = " | ".join(f"{np.mean([x['lag'] for c in corrections for x in results[t][r][c]]):.1f}"
                      for t in names for r in REPLAY)
    print(f"| policy lag (updates) | {lags} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
