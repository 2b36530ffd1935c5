"""``impala bench --learning SUITE``: does a run learn? A named suite of training runs with
the README's defaults (each task's preset, no extra flags) and fixed seeds.

Every task runs ``impala train --env ID --seed S --total-frames F`` in a subprocess (the
same command a user types) once per seed (``--seeds 0,1,2``; ``--seed N`` for one), into
``OUT/TASK-seedS`` (a directory that already holds a finished run is summarised, not
re-run). By default one run at a time, so that each has the whole machine; ``--jobs N``
runs up to N at once, for runs that use about one core each (Rainbow's learner, a serial
backend with ``--learner-threads 1``): on 2 cores two Rainbow runs side by side keep most of
their speed alone (docs/rainbow.md), while IMPALA's local backend already uses every core. With one seed the table
has one row per run: frames, final 100-episode mean, frames to the threshold (the first
frame at which the trailing 100-episode mean reached it), wall time and frames/s. With
several, one row per task over its seeds: mean, min and max of the final 100-episode
mean, how many seeds met the threshold within the budget, the median frames to it, the
total wall time and each seed's final mean. With several tasks or seeds, the
interquartile mean (IQM) of the normalised scores, (final - random) / (threshold -
random) so that 1 is "at the target", follows with a 95% stratified-bootstrap confidence
interval (rliable; Agarwal et al. 2021), and the fraction of runs that met their target.
Each task's learning curves (one per seed) are drawn in ``OUT/TASK.png``; ``results.json``
holds every run, every task's summary and the aggregate.

Suites: ``quick`` (classic, continuous and MinAtar tasks), ``atari`` (Pong 20M frames,
Breakout and SpaceInvaders 10M), ``mujoco``
(HalfCheetah, Walker2d), ``all`` (every task, MountainCar too: a known exploration
failure, reported rather than tuned for), ``rainbow`` (issue 21's targets: Rainbow and DQN,
with the IMPALA preset's MinAtar runs beside them), ``rainbow-ablation`` (Rainbow minus each
component and DQN plus each, MinAtar Breakout, 2M frames) and ``memory`` (issue 22's four
agents on the memory tasks).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from impala_rl.plot import plot_runs
from impala_rl.runfiles import SUMMARY_NAME, read_episodes, read_summary


@dataclass(frozen=True)
class Task:
    env: str
    frames: int
    threshold: float  # the target for the 100-episode mean (issue 8; MinAtar: the paper's AC(0.8) at 5M frames)
    random: float  # a random policy's mean return: 0 on the normalised scale, where the threshold is 1
    flags: tuple[str, ...] = ()  # beyond --env: another agent and its options (the IMPALA preset without)


# agents.rainbow.agent.COMPONENTS (a test checks): not imported, so that the CLI's parser, which
# imports this module, does not import torch.
RAINBOW_COMPONENTS = ("double", "prioritized", "dueling", "multistep", "distributional", "noisy")


def rainbow_with(*on: str) -> tuple[str, ...]:
    """Rainbow's flags with only the components ``on`` switched on (all six: Rainbow; none: DQN)."""
    return ("--agent", "rainbow", "--agent-options", ",".join(f"{c}={str(c in on).lower()}" for c in RAINBOW_COMPONENTS))


RAINBOW = ("--agent", "rainbow")
DQN = rainbow_with()  # Rainbow with its six components off


# "Revisiting Rainbow"'s ablation at small scale (issue 21): Rainbow minus each component and DQN plus
# each, MinAtar Breakout, 2M frames (threshold and random as the 5M Breakout task's).
ABLATION = {"rainbow": rainbow_with(*RAINBOW_COMPONENTS), "dqn": rainbow_with(),
            **{f"rainbow-no-{c}": rainbow_with(*(o for o in RAINBOW_COMPONENTS if o != c)) for c in RAINBOW_COMPONENTS},
            **{f"dqn-plus-{c}": rainbow_with(c) for c in RAINBOW_COMPONENTS}}

MEMORY_TASKS = {
    "repeatprevious": ("popgym/RepeatPreviousEasy-v0", 1.0, -0.49),
    "autoencode": ("popgym/AutoencodeEasy-v0", 1.0, -0.48),
    "concentration": ("popgym/ConcentrationEasy-v0", 0.82, -0.21),
    "minigrid-memory": ("MiniGrid-MemoryS11-v0", 0.986, 0.30),
}
MEMORY_AGENTS = {
    "impala-ff": ("--no-use-lstm",),
    "impala-lstm": (),  # the memory preset's LSTM
    "rl-mem": ("--agent", "merlin", "--agent-options", "mbp_loss=false"),
    "merlin": ("--agent", "merlin"),
}

# random: a uniformly random policy's mean return, rounded as usually reported (Pong's -20.7 is
# the DQN paper's random score).
TASKS = {
    "cartpole": Task("CartPole-v1", 500_000, 475.0, 22.0),
    "acrobot": Task("Acrobot-v1", 500_000, -100.0, -500.0),
    "lunarlander": Task("LunarLander-v3", 5_000_000, 200.0, -180.0),
    "pendulum": Task("Pendulum-v1", 2_000_000, -250.0, -1200.0),
    "minatar-breakout": Task("MinAtar/Breakout-v1", 5_000_000, 17.5, 0.5),
    "minatar-spaceinvaders": Task("MinAtar/SpaceInvaders-v1", 5_000_000, 184.0, 3.0),
    "halfcheetah": Task("HalfCheetah-v5", 5_000_000, 1500.0, -280.0),
    "walker2d": Task("Walker2d-v5", 5_000_000, 2000.0, 2.0),
    "pong": Task("ALE/Pong-v5", 20_000_000, 18.0, -20.7),
    # issue 19's targets for the Atari preset beyond Pong (random: the DQN paper's 1.7 and 148)
    "breakout": Task("ALE/Breakout-v5", 10_000_000, 30.0, 1.7),
    "spaceinvaders": Task("ALE/SpaceInvaders-v5", 10_000_000, 400.0, 148.0),
    "mountaincar": Task("MountainCar-v0", 500_000, -110.0, -200.0),  # only in `all`: reported, not tuned for
    # issue 21's targets for Rainbow (docs/rainbow.md); DQN is Rainbow with its six components off
    "rainbow-cartpole": Task("CartPole-v1", 200_000, 475.0, 22.0, RAINBOW),
    "rainbow-lunarlander": Task("LunarLander-v3", 1_000_000, 200.0, -180.0, RAINBOW),
    "rainbow-minatar-breakout": Task("MinAtar/Breakout-v1", 5_000_000, 20.0, 0.5, RAINBOW),
    "rainbow-minatar-spaceinvaders": Task("MinAtar/SpaceInvaders-v1", 5_000_000, 100.0, 3.0, RAINBOW),
    "dqn-minatar-breakout": Task("MinAtar/Breakout-v1", 5_000_000, 20.0, 0.5, DQN),
    "dqn-minatar-spaceinvaders": Task("MinAtar/SpaceInvaders-v1", 5_000_000, 100.0, 3.0, DQN),
    **{f"breakout2m-{name}": Task("MinAtar/Breakout-v1", 2_000_000, 20.0, 0.5, flags) for name, flags in ABLATION.items()},
    # issue 22's comparison on the memory tasks (docs/memory_tasks.md: "threshold" is the best score a
    # perfect memory gets, "random" a random policy's, so the normalised score is 0 at random, 1 at best)
    **{f"{agent}-{task}": Task(env, 2_000_000, best, random, flags)
       for task, (env, best, random) in MEMORY_TASKS.items() for agent, flags in MEMORY_AGENTS.items()},
}
SUITES = {
    "quick": ("cartpole", "acrobot", "pendulum", "lunarlander", "minatar-breakout", "minatar-spaceinvaders"),
    "atari": ("pong", "breakout", "spaceinvaders"),
    "mujoco": ("halfcheetah", "walker2d"),
    # with the IMPALA preset on the same MinAtar tasks, side by side (its own thresholds: AC(0.8)'s)
    "rainbow": ("rainbow-cartpole", "rainbow-lunarlander", "rainbow-minatar-breakout", "rainbow-minatar-spaceinvaders",
                "dqn-minatar-breakout", "dqn-minatar-spaceinvaders", "minatar-breakout", "minatar-spaceinvaders"),
    "rainbow-ablation": tuple(f"breakout2m-{name}" for name in ABLATION),
    "memory": tuple(f"{agent}-{task}" for task in MEMORY_TASKS for agent in MEMORY_AGENTS),
    "all": tuple(name for name, task in TASKS.items() if not task.flags and not task.env.startswith(("popgym", "MiniGrid"))),
}


@dataclass
class TaskResult:
    """One training run (one task, one seed)."""
    task: str
    env: str
    seed: int
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


def summarise(name: str, task: Task, seed: int, run_dir: Path, wall_s: float) -> TaskResult:
    frames, returns = read_episodes(run_dir)
    summary = read_summary(run_dir)
    final = float(returns[-100:].mean()) if len(returns) else math.nan
    return TaskResult(name, task.env, seed, int(summary["frames"]), final,
                      frames_to_threshold(frames, returns, task.threshold), task.threshold,
                      wall_s, float(summary["fps"]), str(run_dir), str(run_dir.parent / f"{name}.png"))


def run_task(name: str, out: Path, seed: int, extra: list[str], frames: int | None = None) -> TaskResult:
    task = TASKS[name]
    run_dir = out / f"{name}-seed{seed}"
    if (run_dir / SUMMARY_NAME).exists():  # already run: just summarise (re-run by deleting the directory)
        summary = read_summary(run_dir)
        return summarise(name, task, seed, run_dir, float(summary["elapsed_s"]))
    cmd = [sys.executable, "-m", "impala_rl.cli", "train", "--env", task.env, "--seed", str(seed),
           "--total-frames", str(frames or task.frames), "--run-dir", str(run_dir), "--quiet", *task.flags, *extra]
    print(f"[learning] {run_dir.name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    start = time.time()
    code = subprocess.run(cmd).returncode
    if code:
        raise TaskFailed(f"[learning] {run_dir.name}: impala train exited with {code} (its message is above); "
                         f"the suite stops here")
    return summarise(name, task, seed, run_dir, time.time() - start)


class TaskFailed(RuntimeError):
    """A task's training run did not finish (the suite reports it in one line)."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds 0,1,2``: distinct non-negative integers separated by commas."""
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers separated by commas, "
                                         f"e.g. 0,1,2; got {text!r}")
    return seeds


def parse_jobs(text: str) -> int:
    """``--jobs N``: how many training runs at once, a positive integer."""
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (training runs at once); got {text!r}")
    return jobs


def run_tasks(runs: Sequence[tuple[str, int]], out: Path, extra: list[str], frames: int | None = None,
              jobs: int = 1) -> list[TaskResult]:
    """Each ``(task, seed)`` of ``runs``, up to ``jobs`` at once, results in the order of ``runs``.
    A run that fails stops the suite: runs not yet started are not started, running ones finish."""
    if jobs == 1:
        return [run_task(name, out, seed, extra, frames) for name, seed in runs]
    stop = threading.Event()  # set by a failed run before its thread can take the next one

    def one(name: str, seed: int) -> TaskResult | None:
        if stop.is_set():
            return None
        try:
            return run_task(name, out, seed, extra, frames)
        except TaskFailed:
            stop.set()
            raise

    pool = ThreadPoolExecutor(jobs)
    futures = [pool.submit(one, name, seed) for name, seed in runs]
    try:
        wait(futures)
    except BaseException:  # Ctrl-C: the runs got it too and end with their checkpoints; start no more
        stop.set()
        raise
    finally:
        pool.shutdown(wait=False)
    failed = next((f.exception() for f in futures if f.exception()), None)
    if failed is not None:
        raise failed
    return [f.result() for f in futures]


@dataclass
class SeedSummary:
    """One task over its seeds (in the order run)."""
    task: str
    env: str
    threshold: float
    random: float
    seeds: list[int]
    finals: list[float]  # each seed's final 100-episode mean
    normalised: list[float]  # (final - random) / (threshold - random): 0 = random policy, 1 = the threshold
    mean: float
    min: float
    max: float
    met: int  # seeds whose trailing 100-episode mean reached the threshold within the budget
    median_frames_to_threshold: float  # a seed that never reached it counts as never: nan unless over half did
    frames: float  # mean over seeds
    wall_s: float  # total over seeds


def summarise_seeds(results: list[TaskResult]) -> list[SeedSummary]:
    by_task: dict[str, list[TaskResult]] = {}
    for r in results:
        by_task.setdefault(r.task, []).append(r)
    out = []
    for name, runs in by_task.items():
        task = TASKS[name]
        finals = np.array([r.final_mean for r in runs])
        reached = np.array([r.frames_to_threshold for r in runs])
        median = float(np.median(np.where(np.isnan(reached), np.inf, reached)))
        out.append(SeedSummary(name, task.env, task.threshold, task.random, [r.seed for r in runs], finals.tolist(),
                               ((finals - task.random) / (task.threshold - task.random)).tolist(),
                               float(finals.mean()), float(finals.min()), float(finals.max()),
                               int(np.isfinite(reached).sum()), median if math.isfinite(median) else math.nan,
                               float(np.mean([r.frames for r in runs])), sum(r.wall_s for r in runs)))
    return out


def aggregate(tasks: list[SeedSummary], reps: int = 2000) -> dict:
    """Across tasks and seeds: runs that met their target, and the interquartile mean of the
    normalised scores with a 95% stratified-bootstrap confidence interval (rliable; the
    interval only with several seeds: one seed has no spread to resample)."""
    scores = np.array([t.normalised for t in tasks]).T  # (seeds, tasks), as rliable takes them
    out = {"runs": int(scores.size), "met": sum(t.met for t in tasks), "tasks": len(tasks), "seeds": len(scores),
           "iqm": None, "iqm_ci": None, "reps": reps, "note": None}
    try:
        from rliable import library, metrics
    except ImportError:
        out["note"] = "IQM not computed: the rliable package is not installed (pip install rliable)"
        return out
    # The same interval every time: rliable's StratifiedBootstrap draws from numpy's global generator
    # (its random_state is not used for the draws), so seed that and put its state back.
    state = np.random.get_state()
    np.random.seed(0)
    try:
        point, interval = library.get_interval_estimates(
            {"all": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
    finally:
        np.random.set_state(state)
    out["iqm"] = float(point["all"][0])
    if len(scores) > 1:
        out["iqm_ci"] = [float(interval["all"][0, 0]), float(interval["all"][1, 0])]
    return out


def _num(x: float, fmt: str) -> str:
    return format(x, fmt) if math.isfinite(x) else "-"


def _reached(frames: float) -> str:
    return f"{frames / 1e6:.2f}M" if math.isfinite(frames) else "not reached"


def format_table(results: list[TaskResult]) -> str:
    """One row per run (the table for one seed)."""
    lines = ["| task | env | frames | final 100-ep mean | threshold | frames to threshold | wall time | frames/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.task} | {r.env} | {r.frames / 1e6:.2f}M | {_num(r.final_mean, '.1f')} | {r.threshold:g} | "
                     f"{_reached(r.frames_to_threshold)} | {r.wall_s / 60:.1f} min | {r.fps:.0f} |")
    return "\n".join(lines)


def format_seed_table(tasks: list[SeedSummary]) -> str:
    """One row per task over its seeds (final = the last 100 episodes' mean return)."""
    lines = ["| task | env | seeds | frames | final mean | final min | final max | threshold | met | "
             "median frames to threshold | total wall time | final per seed |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for t in tasks:
        lines.append(f"| {t.task} | {t.env} | {len(t.seeds)} | {t.frames / 1e6:.2f}M | {_num(t.mean, '.1f')} | "
                     f"{_num(t.min, '.1f')} | {_num(t.max, '.1f')} | {t.threshold:g} | {t.met} of {len(t.seeds)} | "
                     f"{_reached(t.median_frames_to_threshold)} | {t.wall_s / 60:.1f} min | "
                     f"{', '.join(_num(f, '.1f') for f in t.finals)} |")
    return "\n".join(lines)


def format_aggregate(agg: dict) -> str:
    lines = [f"targets met: {agg['met']} of {agg['runs']} runs ({agg['met'] / agg['runs']:.0%})"]
    if agg["iqm"] is None:
        return "\n".join([*lines, agg["note"]])
    ci = (f"95% CI [{agg['iqm_ci'][0]:.2f}, {agg['iqm_ci'][1]:.2f}] (stratified bootstrap, {agg['reps']} reps)"
          if agg["iqm_ci"] else "no confidence interval from one seed")
    return "\n".join([*lines, f"IQM of normalised scores, tasks x seeds = {agg['tasks']} x {agg['seeds']}: "
                               f"{agg['iqm']:.2f}, {ci}",
                       "  normalised = (final - random) / (threshold - random): 0 = random policy, 1 = threshold"])


def format_report(results: list[TaskResult], tasks: list[SeedSummary], agg: dict | None) -> str:
    """The run table for one seed, the task-over-seeds table for several; then the aggregate."""
    table = format_table(results) if all(len(t.seeds) == 1 for t in tasks) else format_seed_table(tasks)
    return table + ("\n\n" + format_aggregate(agg) if agg else "")


def main_learning(suite: str, out: str, seeds: Sequence[int], extra: list[str], as_json: bool = False,
                  frames: int | None = None, jobs: int = 1) -> int:
    names = SUITES.get(suite) or ((suite,) if suite in TASKS else None)
    if names is None:
        raise ValueError(f"unknown learning suite or task {suite!r}; choose one of: "
                         f"{', '.join([*SUITES, *TASKS])}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if jobs > 1:
        print(f"[learning] up to {jobs} runs at once: each run's wall time is a shared machine's", file=sys.stderr,
              flush=True)
    try:  # seed by seed: each seed's whole suite is started before the next seed's
        results = run_tasks([(name, seed) for seed in seeds for name in names], out_dir, extra, frames, jobs)
    except TaskFailed as e:
        print(e, file=sys.stderr)
        return 1
    for name in names:
        task = TASKS[name]
        plot_runs([r.run_dir for r in results if r.task == name], out_dir / f"{name}.png", window=100,
                  title=f"{task.env} (threshold {task.threshold:g})")
    tasks = summarise_seeds(results)
    agg = aggregate(tasks) if len(results) > 1 else None  # several tasks or seeds
    rep = {"runs": [asdict(r) for r in results], "tasks": [asdict(t) for t in tasks], "aggregate": agg, "jobs": jobs}
    (out_dir / "results.json").write_text(json.dumps(rep, indent=2))
    print(json.dumps(rep, indent=2) if as_json else format_report(results, tasks, agg))
    return 0
