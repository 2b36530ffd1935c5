"""``impala plot``: learning curves (episode return vs environment frames) from run directories.

A multi-task run's episodes carry their task: its returns are drawn in one panel per task
(runs with the same tasks overlaid), never mixed into one curve."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_episodes(run_dir: str | Path, task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frames, returns) of the run's episodes (of one ``task`` label in a multi-task run)."""
    frames, returns = [], []
    for row in _episode_rows(run_dir):
        if task is None or row.get("task") == task:
            frames.append(float(row["frames"]))
            returns.append(float(row["return"]))
    return np.asarray(frames), np.asarray(returns)


def read_tasks(run_dir: str | Path) -> list[str]:
    """The task labels of a multi-task run's episodes, in order of appearance ([] for one task)."""
    return list(dict.fromkeys(row["task"] for row in _episode_rows(run_dir) if row.get("task")))


def _episode_rows(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        raise FileNotFoundError(f"no episodes.csv in {run_dir} (is it a run directory of 'impala train'?)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_metric(run_dir: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames, values) of one column of ``metrics.csv`` (rows where it is empty are skipped)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.csv in {run_dir} (is it a run directory of 'impala train'?)")
    frames, values = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if name not in (reader.fieldnames or []):
            raise ValueError(f"metrics.csv in {run_dir} has no column {name!r}; columns: "
                             f"{', '.join(c for c in reader.fieldnames or [] if c != 'frames')}")
        for row in reader:
            if row[name] not in ("", "nan"):
                frames.append(float(row["frames"]))
                values.append(float(row[name]))
    return np.asarray(frames), np.asarray(values)


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_runs(run_dirs: list[str], output: str | Path, window: int = 50, title: str | None = None,
              metric: str = "return") -> Path:
    """Episode return (moving average of ``window`` episodes), or any ``metrics.csv`` column
    (``metric``, e.g. ``entropy``; smoothed over ``window`` log rows), against frames."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(t for d in run_dirs for t in read_tasks(d))) if metric == "return" else []
    if tasks:
        return _plot_tasks(run_dirs, tasks, output, window, title, plt)
    if metric == "return":
        data = [(d, *read_episodes(d)) for d in run_dirs]
    else:
        data = [(d, *read_metric(d, metric)) for d in run_dirs]
    fig, ax = plt.subplots(figsize=(8, 5))
    _draw(ax, data, window, metric)
    ax.set_title(title or "impala-rl learning curves")
    return _save(fig, output, plt)


def _plot_tasks(run_dirs, tasks, output, window, title, plt) -> Path:
    """One panel per task of multi-task runs."""
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        _draw(ax, [(d, *read_episodes(d, task)) for d in run_dirs], window, "return")
        ax.set_title(task)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(title or "impala-rl learning curves, per task")
    return _save(fig, output, plt)


def _draw(ax, data, window: int, metric: str) -> None:
    for run_dir, frames, returns in data:
        label = Path(run_dir).name
        if len(returns) == 0:
            continue
        ax.plot(frames, returns, alpha=0.15)
        count = f"{len(returns)} episodes" if metric == "return" else f"{len(returns)} rows"
        ax.plot(frames, moving_average(returns, window), label=f"{label} ({count})",
                color=ax.lines[-1].get_color())
    ax.set_xlabel("environment frames")
    ax.set_ylabel(f"episode return (moving average of {window})" if metric == "return"
                  else f"{metric} (moving average of {window} log rows)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")


def _save(fig, output, plt) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
