"""``impala bench --learning SUITE``: does a run learn? A named suite of training runs with
the README's defaults (each task's preset, no extra flags) and fixed seeds.

Every task runs ``impala train --env ID --seed S --total-frames F`` in a subprocess (the
same command a user types), one task at a time so that each has the whole machine; then
one table is printed: task, frames, final 100-episode mean, frames to the threshold (the
first frame at which the trailing 100-episode mean reached it), wall time and frames/s.
Each task's learning curve is written as a PNG next to its run directory.

Suites: ``quick`` (classic, continuous and MinAtar tasks), ``atari`` (Pong), ``mujoco``
(HalfCheetah) and ``all``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Task:
    env: str
    frames: int
    threshold: float  # the target for the 100-episode mean (issue 8; MinAtar: the paper's AC(0.8) at 5M frames)


TASKS = {
    "cartpole": Task("CartPole-v1", 500_000, 475.0),
    "lunarlander": Task("LunarLander-v3", 5_000_000, 200.0),
    "pendulum": Task("Pendulum-v1", 2_000_000, -250.0),
    "minatar-breakout": Task("MinAtar/Breakout-v1", 5_000_000, 17.5),
    "minatar-spaceinvaders": Task("MinAtar/SpaceInvaders-v1", 5_000_000, 184.0),
    "halfcheetah": Task("HalfCheetah-v5", 5_000_000, 1500.0),
    "pong": Task("ALE/Pong-v5", 20_000_000, 18.0),
}
SUITES = {
    "quick": ("cartpole", "pendulum", "lunarlander", "minatar-breakout", "minatar-spaceinvaders"),
    "atari": ("pong",),
    "mujoco": ("halfcheetah",),
    "all": tuple(TASKS),
}


@dataclass
class TaskResult:
    task: str
    env: str
    frames: int
    final_mean: float
    frames_to_threshold: float  # nan when never reached
    threshold: float
    wall_s: float
    fps: float
    run_dir: str
    curve: str


def trailing_means(returns: np.ndarray, window: int = 100) -> np.ndarray:
    c = np.cumsum(np.insert(returns.astype(np.float64), 0, 0.0))
    idx = np.arange(1, len(returns) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def frames_to_threshold(frames: np.ndarray, returns: np.ndarray, threshold: float, window: int = 100) -> float:
    """First frame count at which the trailing mean of ``window`` episodes (a full window) is >= threshold."""
    if len(returns) < window:
        return math.nan
    means = trailing_means(returns, window)
    hits = np.flatnonzero(means[window - 1:] >= threshold)
    return float(frames[window - 1 + hits[0]]) if len(hits) else math.nan


def summarise(name: str, task: Task, run_dir: Path, wall_s: float) -> TaskResult:
    from impala_rl.plot import plot_runs, read_episodes

    frames, returns = read_episodes(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    curve = run_dir.parent / f"{name}.png"
    plot_runs([str(run_dir)], curve, window=100, title=f"{task.env} (threshold {task.threshold:g})")
    final = float(returns[-100:].mean()) if len(returns) else math.nan
    return TaskResult(name, task.env, int(summary["frames"]), final,
                      frames_to_threshold(frames, returns, task.threshold), task.threshold,
                      wall_s, float(summary["fps"]), str(run_dir), str(curve))


def run_task(name: str, out: Path, seed: int, extra: list[str], frames: int | None = None) -> TaskResult:
    task = TASKS[name]
    run_dir = out / f"{name}-seed{seed}"
    if (run_dir / "summary.json").exists():  # already run: just summarise (re-run by deleting the directory)
        summary = json.loads((run_dir / "summary.json").read_text())
        return summarise(name, task, run_dir, float(summary["elapsed_s"]))
    cmd = [sys.executable, "-m", "impala_rl.cli", "train", "--env", task.env, "--seed", str(seed),
           "--total-frames", str(frames or task.frames), "--run-dir", str(run_dir), "--quiet", *extra]
    print(f"[learning] {name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    start = time.time()
    code = subprocess.run(cmd).returncode
    if code:
        raise TaskFailed(f"[learning] {name}: impala train exited with {code} (its message is above); "
                         f"the suite stops here")
    return summarise(name, task, run_dir, time.time() - start)


class TaskFailed(RuntimeError):
    """A task's training run did not finish (the suite reports it in one line)."""


def format_table(results: list[TaskResult]) -> str:
    def num(x: float, fmt: str) -> str:
        return "-" if not math.isfinite(x) else format(x, fmt)

    lines = ["| task | env | frames | final 100-ep mean | threshold | frames to threshold | wall time | frames/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.task} | {r.env} | {r.frames / 1e6:.2f}M | {num(r.final_mean, '.1f')} | {r.threshold:g} | "
                     f"{num(r.frames_to_threshold / 1e6, '.2f') + 'M' if math.isfinite(r.frames_to_threshold) else 'not reached'} | "
                     f"{r.wall_s / 60:.1f} min | {r.fps:.0f} |")
    return "\n".join(lines)


def main_learning(suite: str, out: str, seed: int, extra: list[str], as_json: bool = False,
                  frames: int | None = None) -> int:
    names = SUITES.get(suite) or ((suite,) if suite in TASKS else None)
    if names is None:
        raise ValueError(f"unknown learning suite or task {suite!r}; choose one of: "
                         f"{', '.join([*SUITES, *TASKS])}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        results = [run_task(name, out_dir, seed, extra, frames) for name in names]
    except TaskFailed as e:
        print(e, file=sys.stderr)
        return 1
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(json.dumps([asdict(r) for r in results], indent=2) if as_json else format_table(results))
    return 0
