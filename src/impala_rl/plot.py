"""``impala plot``: learning curves (episode return vs environment frames) from run directories."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_episodes(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        raise FileNotFoundError(f"no episodes.csv in {run_dir} (is it a run directory of 'impala train'?)")
    frames, returns = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            frames.append(float(row["frames"]))
            returns.append(float(row["return"]))
    return np.asarray(frames), np.asarray(returns)


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_runs(run_dirs: list[str], output: str | Path, window: int = 50, title: str | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(d, *read_episodes(d)) for d in run_dirs]
    fig, ax = plt.subplots(figsize=(8, 5))
    for run_dir, frames, returns in data:
        label = Path(run_dir).name
        if len(returns) == 0:
            continue
        ax.plot(frames, returns, alpha=0.15)
        ax.plot(frames, moving_average(returns, window), label=f"{label} ({len(returns)} episodes)",
                color=ax.lines[-1].get_color())
    ax.set_xlabel("environment frames")
    ax.set_ylabel(f"episode return (moving average of {window})")
    ax.set_title(title or "impala-rl learning curves")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
