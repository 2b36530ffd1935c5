"""``impala plot``: learning curves (episode return vs environment frames) from run directories.

A multi-task run's episodes carry their task: its returns are drawn in one panel per task
(runs with the same tasks overlaid), never mixed into one curve. A population directory of
``impala pbt`` is drawn with its lineage and hyperparameters (:func:`plot_population`).
Every file is read through :mod:`impala_rl.runfiles`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from impala_rl.runfiles import (
    is_population,
    member_dir,
    read_episodes,
    read_events,
    read_metric,
    read_population,
    read_tasks,
    wall_minutes,
)

X_AXES = ("frames", "wall")
X_LABELS = {"frames": "environment frames", "wall": "wall-clock minutes since the run started"}


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_runs(run_dirs: list[str], output: str | Path, window: int = 50, title: str | None = None,
              metric: str = "return", x: str = "frames") -> Path:
    """Episode return (moving average of ``window`` episodes), or any ``metrics.csv`` column
    (``metric``, e.g. ``entropy``; smoothed over ``window`` log rows), against frames, or with
    ``x="wall"`` against wall-clock minutes (:func:`wall_minutes`), to compare agents of
    different speeds at equal time."""
    if x not in X_AXES:
        raise ValueError(f"unknown x axis {x!r}; accepted: {', '.join(X_AXES)}")
    import matplotlib  # only when drawing: importing it (and pyplot) takes seconds
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(run_dirs) == 1 and is_population(run_dirs[0]):
        if x != "frames":
            raise ValueError(f"a population ({run_dirs[0]}) is drawn against frames only; "
                             "to compare wall time, plot its members' directories")
        return plot_population(run_dirs[0], output, window, title, plt)
    tasks = list(dict.fromkeys(t for d in run_dirs for t in read_tasks(d))) if metric == "return" else []
    if tasks:
        return _plot_tasks(run_dirs, tasks, output, window, title, plt, x)
    if metric == "return":
        data = [(d, *read_episodes(d)) for d in run_dirs]
    else:
        data = [(d, *read_metric(d, metric)) for d in run_dirs]
    data = _on_x_axis(data, x)  # before any figure: a run without the elapsed time leaves none open
    fig, ax = plt.subplots(figsize=(8, 5))
    _draw(ax, data, window, metric, x)
    ax.set_title(title or "impala-rl learning curves")
    return _save(fig, output, plt)


def _on_x_axis(data, x: str):
    """``(run_dir, frames, values)`` rows with frames turned into wall minutes for ``x="wall"``."""
    if x == "frames":
        return data
    return [(d, wall_minutes(d, frames), values) for d, frames, values in data]


def _plot_tasks(run_dirs, tasks, output, window, title, plt, x: str = "frames") -> Path:
    """One panel per task of multi-task runs."""
    panels = [_on_x_axis([(d, *read_episodes(d, task)) for d in run_dirs], x) for task in tasks]
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, task, data in zip(axes.flat, tasks, panels):
        _draw(ax, data, window, "return", x)
        ax.set_title(task)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(title or "impala-rl learning curves, per task")
    return _save(fig, output, plt)


def plot_population(pop_dir: str | Path, output, window: int, title: str | None, plt) -> Path:
    """A PBT population (``impala pbt``): every member's curve with its exploits marked
    (a line from the copied member's curve to the copier's at that frame: the lineage), and
    one panel per mutated hyperparameter with each member's value over frames."""
    pop = read_population(pop_dir)
    events = read_events(pop_dir)
    names = list(pop["members"])
    hparams = list(pop["rules"]["bounds"])
    fig, axes = plt.subplots(1 + len(hparams), 1, figsize=(9, 4.5 + 2.2 * len(hparams)), squeeze=False,
                             sharex=True)
    ax = axes[0, 0]
    curves, colors = {}, {}
    for name in names:
        try:
            frames, returns = read_episodes(member_dir(pop_dir, name))
        except FileNotFoundError:
            continue
        if len(returns):
            smooth = moving_average(returns, window)
            line, = ax.plot(frames, smooth, label=f"{name} ({len(returns)} episodes)")
            curves[name], colors[name] = (frames, smooth), line.get_color()
    for e in events:
        if e["event"] == "exploit" and e["member"] in curves and e["source"] in curves:
            x = e["frames"]
            y_to = float(np.interp(x, *curves[e["member"]]))
            y_from = float(np.interp(x, *curves[e["source"]]))
            ax.annotate("", xy=(x, y_to), xytext=(x, y_from),
                        arrowprops=dict(arrowstyle="->", color=colors[e["source"]], alpha=0.6, lw=1))
    ax.set_ylabel(f"episode return (moving average of {window})")
    ax.set_title(title or f"population {Path(pop_dir).name}: returns, exploits (arrows from the copied member)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    first = pop["settings"].get("members", {})  # each member's starting config
    for row, hp in enumerate(hparams, start=1):
        hax = axes[row, 0]
        for name in names:
            xs, ys = [0.0], [first.get(name, {}).get(hp, pop["members"][name]["hparams"].get(hp))]
            for e in events:
                if e["member"] == name and e["event"] == "exploit":
                    xs.append(e["frames"]), ys.append(e["new"][hp])
                if e["member"] == name and e["event"] == "explore" and hp in e["changed"]:
                    xs.append(e["frames"]), ys.append(e["changed"][hp][1])
            xs.append(max([x for x in xs] + [curves.get(name, ([0], []))[0][-1]]))
            ys.append(ys[-1])
            hax.step(xs, ys, where="post", color=colors.get(name), label=name)
        hax.set_yscale("log")
        hax.set_ylabel(hp)
        hax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("environment frames (of each member)")
    return _save(fig, output, plt)


def run_colours(labels: list[str]) -> list[str]:
    """One matplotlib colour (``C0``, ``C1``, ...) per run, shared by the seeds of one setting:
    labels that differ only in a trailing ``-seed<N>`` (as ``impala bench --learning`` names
    its runs) get the same colour, in order of first appearance."""
    groups: dict[str, str] = {}
    return [groups.setdefault(re.sub(r"-seed\d+$", "", label), f"C{len(groups) % 10}") for label in labels]


# Above this many points a run's raw values, drawn faintly behind its moving average, fill the
# panel from the lowest return to the highest (MiniGrid's 0-or-1 episodes over 100k+ episodes
# become one opaque block): only the moving average is drawn then.
RAW_TRACE_MAX_POINTS = 3000


def _draw(ax, data, window: int, metric: str, x: str = "frames") -> None:
    data = [(Path(run_dir).name, frames, returns) for run_dir, frames, returns in data if len(returns)]
    for (label, frames, returns), colour in zip(data, run_colours([label for label, _, _ in data])):
        if len(returns) <= RAW_TRACE_MAX_POINTS:
            ax.plot(frames, returns, alpha=0.15, color=colour)
        count = f"{len(returns)} episodes" if metric == "return" else f"{len(returns)} rows"
        ax.plot(frames, moving_average(returns, window), label=f"{label} ({count})", color=colour)
    ax.set_xlabel(X_LABELS[x])
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
