"""Run logging: a live progress line, CSV files and TensorBoard scalars in the run directory.

Files written under the run directory:
- ``metrics.csv``: one row per log interval: the ``PROGRESS_COLUMNS``, then every metric
  the learner, the agent and the backend recorded, in the order they first appeared (a
  metric that first appears later widens the file: it is rewritten with the new header);
- ``episodes.csv``: one row per finished episode (frames, return, length; and task, the
  task's label, in a multi-task run);
- ``tb/``: the same scalars for TensorBoard;
- ``train.log``: the log messages (actor restarts, warnings, the final summary).

A multi-task run adds, per task label L: ``return_L`` (its last-100-episode mean) and
``episodes_L``; for Atari tasks ``hns_L`` (human-normalised score, percent, of that mean;
:mod:`impala_rl.scores`) and ``hns_median``, ``hns_mean``, ``hns_capped_mean`` over the
tasks. A single Atari game gets ``hns``. The agent adds PopArt's ``popart_mu_L`` and
``popart_sigma_L``.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
from collections import deque
from pathlib import Path

from impala_rl.envs.tasks import task_labels
from impala_rl.runfiles import EPISODES_NAME, METRICS_NAME
from impala_rl.scores import aggregates, human_normalized

PROGRESS_COLUMNS = (
    "frames", "elapsed_s", "fps", "learner_steps", "learner_steps_per_s",
    "episode_return", "episode_length", "episodes",
)
_MAX_COLUMNS = {"policy_lag_max"}
_LAST_COLUMNS = {"learning_rate", "nonfinite_total"}

logger = logging.getLogger("impala_rl")


def setup_logging(run_dir: Path | None = None, quiet: bool = False) -> None:
    """Messages to stderr (unless quiet) and to ``run_dir/train.log``. Called by the CLI only."""
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S")
    if not quiet:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        logger.addHandler(h)
    if run_dir is not None:
        h = logging.FileHandler(Path(run_dir) / "train.log")
        h.setFormatter(fmt)
        logger.addHandler(h)


def _drop_rows_past(path: Path, frames: int) -> None:
    """Keep the header and the rows of a CSV whose ``frames`` column is <= ``frames``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "frames" not in rows[0]:
        return
    col = rows[0].index("frames")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) > col and r[col] and float(r[col]) <= frames]
    if len(kept) < len(rows):
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)
        tmp.replace(path)


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


class RunLogger:
    """Aggregates learner metrics and episodes between log intervals and writes them out."""

    def __init__(self, run_dir: Path, total_frames: int, start_frames: int = 0, interval: float = 5.0,
                 quiet: bool = False, tensorboard: bool = True, window: int = 100, start_steps: int = 0,
                 start_elapsed: float = 0.0, tasks: tuple[str, ...] = ()):
        """``start_*``: the checkpoint's counters when resuming. Rows of ``metrics.csv`` and
        ``episodes.csv`` (and TensorBoard events) past ``start_frames`` were written after
        that checkpoint by a run that then died: they are dropped, so every file continues
        from the checkpoint, and frames, learner steps and elapsed time continue its counts."""
        self.run_dir = Path(run_dir)
        self.total_frames = total_frames
        self.interval = interval
        self.quiet = quiet
        self.session_start = time.time()
        self.start_time = self.session_start - start_elapsed
        self.last_time = self.session_start
        self.last_frames = start_frames
        self.start_frames = start_frames
        self.steps = start_steps
        self.last_steps = start_steps
        self.recent_returns: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[int] = deque(maxlen=window)
        self.episodes = 0
        self.tasks = tuple(tasks)  # Gymnasium ids, by task id (several: a multi-task run)
        self.labels = task_labels(self.tasks) if len(self.tasks) > 1 else ()
        self.task_returns = [deque(maxlen=window) for _ in self.labels]
        self.task_episodes = [0 for _ in self.labels]
        self._acc: dict[str, list[float]] = {}
        self.last_row: dict[str, float] = {}
        self._metrics_path = self.run_dir / METRICS_NAME
        self.columns: list[str] = list(PROGRESS_COLUMNS)
        if self._metrics_path.exists():  # a resumed run: keep its columns
            with open(self._metrics_path, newline="") as f:
                self.columns = next(csv.reader(f), None) or self.columns
            _drop_rows_past(self._metrics_path, start_frames)
        else:
            self._metrics_path.write_text(",".join(self.columns) + "\n")
        self._metrics_file = open(self._metrics_path, "a", newline="")
        episodes_path = self.run_dir / EPISODES_NAME
        # Empty: a run killed before its first write reached the disk (the header with it).
        new = not episodes_path.exists() or episodes_path.stat().st_size == 0
        if not new:
            _drop_rows_past(episodes_path, start_frames)
        self._episodes_file = open(episodes_path, "a", newline="")
        self._episodes = csv.writer(self._episodes_file)
        if new:
            self._episodes.writerow(["frames", "return", "length"] + (["task"] if self.labels else []))
            self._episodes_file.flush()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                # purge_step: TensorBoard discards events this run's earlier life logged past the checkpoint
                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_frames or None)
            except ImportError:  # tensorboard is a dependency, but keep training if it is broken
                logger.warning("tensorboard is not importable; writing CSV only")

    def record(self, frames: int, metrics: dict[str, float], episodes: list, extra: dict[str, float]) -> None:
        """Called after every learner step."""
        self.steps += 1
        for k, v in list(metrics.items()) + list(extra.items()):
            self._acc.setdefault(k, []).append(v)
        for e in episodes:
            self.recent_returns.append(e.ret)
            self.recent_lengths.append(e.length)
            self.episodes += 1
            if self.labels:
                self.task_returns[e.task].append(e.ret)
                self.task_episodes[e.task] += 1
                self._episodes.writerow([frames, f"{e.ret:.6g}", e.length, self.labels[e.task]])
            else:
                self._episodes.writerow([frames, f"{e.ret:.6g}", e.length])
        now = time.time()
        if now - self.last_time >= self.interval:
            self.flush(frames, now)

    def recent_windows(self) -> list[deque]:
        """Each task's returns of its last ``window`` episodes (one deque for a single task),
        live: :meth:`record` appends to them."""
        return self.task_returns if self.labels else [self.recent_returns]

    def flush(self, frames: int, now: float | None = None) -> dict[str, float]:
        """Write one row for the steps since the last flush (none if there were none)."""
        if self.steps == self.last_steps and self.last_row:
            return self.last_row
        now = time.time() if now is None else now
        dt = max(now - self.last_time, 1e-9)
        row: dict[str, float] = {}
        for k, values in self._acc.items():
            if k in _MAX_COLUMNS:
                row[k] = max(values)
            elif k in _LAST_COLUMNS:
                row[k] = values[-1]
            else:
                row[k] = sum(values) / len(values)
        row.update(
            frames=frames, elapsed_s=now - self.start_time, fps=(frames - self.last_frames) / dt,
            learner_steps=self.steps, learner_steps_per_s=(self.steps - self.last_steps) / dt,
            episodes=self.episodes,
            episode_return=(sum(self.recent_returns) / len(self.recent_returns)) if self.recent_returns else float("nan"),
            episode_length=(sum(self.recent_lengths) / len(self.recent_lengths)) if self.recent_lengths else float("nan"),
        )
        row.update(self._task_columns(row["episode_return"]))
        self._acc = {}
        self.last_time, self.last_frames, self.last_steps = now, frames, self.steps
        self.last_row = row
        self._write_metrics_row({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._episodes_file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "frames" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, frames)
            self._tb.flush()
        if not self.quiet:
            print(self.progress_line(row), file=sys.stderr, flush=True)
        return row

    def _task_columns(self, episode_return: float) -> dict[str, float]:
        """Per-task returns and episode counts, and human-normalised scores for Atari (module docstring)."""
        if not self.labels:
            hns = human_normalized(self.tasks[0], episode_return) if self.tasks else None
            return {} if hns is None else {"hns": hns}
        out: dict[str, float] = {}
        scores = []
        for label, env_id, returns, count in zip(self.labels, self.tasks, self.task_returns, self.task_episodes):
            mean = sum(returns) / len(returns) if returns else float("nan")
            out[f"return_{label}"] = mean
            out[f"episodes_{label}"] = count
            hns = human_normalized(env_id, mean)
            if hns is not None:
                out[f"hns_{label}"] = hns
                scores.append(hns)
        if scores and len(scores) == len(self.labels):
            out.update({f"hns_{k}": v for k, v in aggregates(scores).items()})
        return out

    def _write_metrics_row(self, row: dict) -> None:
        new = [k for k in row if k not in self.columns]
        if new:  # widen the file: rewrite it under the new header (earlier rows leave the new columns empty)
            self._metrics_file.close()
            with open(self._metrics_path, newline="") as f:
                old_rows = list(csv.DictReader(f))
            self.columns += new
            with open(self._metrics_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(old_rows)
            self._metrics_file = open(self._metrics_path, "a", newline="")
        csv.DictWriter(self._metrics_file, fieldnames=self.columns).writerow(row)
        self._metrics_file.flush()

    def progress_line(self, row: dict[str, float]) -> str:
        frames = row["frames"]
        fps = row["fps"]
        elapsed = row["elapsed_s"]
        overall_fps = (frames - self.start_frames) / max(time.time() - self.session_start, 1e-9)
        eta = (self.total_frames - frames) / overall_fps if overall_fps > 0 else float("inf")
        ret = row["episode_return"]
        ret_s = f"{ret:8.2f}" if math.isfinite(ret) else "     n/a"
        return (f"frames {_fmt_count(frames):>8}/{_fmt_count(self.total_frames)} | {fps:7.0f} fps | "
                f"return {ret_s} (last {len(self.recent_returns)} eps) | "
                f"lag {row.get('policy_lag_mean', float('nan')):.1f} (max {row.get('policy_lag_max', 0):.0f}) | "
                f"{_fmt_duration(elapsed)} elapsed, ETA {_fmt_duration(eta)}"
                + "".join(f" | {label} {row[f'return_{label}']:.1f}" for label in self.labels))

    def close(self) -> None:
        self._metrics_file.close()
        self._episodes_file.close()
        if self._tb is not None:
            self._tb.close()
