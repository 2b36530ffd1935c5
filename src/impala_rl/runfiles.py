"""The files that training leaves on disk, by name, and read back: one reader per file, for every reader.

- A run directory (``impala train``): ``episodes.csv``, one row per finished episode
  (``frames``, ``return``, and ``task`` in a multi-task run), and ``metrics.csv``, one row
  per log interval (both written by :class:`impala_rl.logging.RunLogger`); ``config.json``,
  the run's config, and ``summary.json``, how it ended (both written by
  :class:`impala_rl.runtime.train.Trainer`; the config is read back by
  :mod:`impala_rl.runtime.rundirs`, which knows the config's class).
- A population directory (``impala pbt``): ``population.json`` (the rules, the settings
  with every member's starting config, the controller's state) and ``events.jsonl`` (one
  JSON object per event), both written by :class:`impala_rl.pbt.population.Population`,
  and its members' run directories under ``members/``; ``summary.json`` once it has ended
  (:mod:`impala_rl.pbt.summary`).

``impala plot``, the PBT summary and ``impala bench --learning`` read through here; this
module imports nothing of the project, so any of them may import it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

EPISODES_NAME = "episodes.csv"
METRICS_NAME = "metrics.csv"
CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"  # a run's, and a population's
POPULATION_NAME = "population.json"
EVENTS_NAME = "events.jsonl"
MEMBERS_DIR = "members"


# ----------------------------------------------------------------------------- a run directory
def read_episodes(run_dir: str | os.PathLike, task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frames, returns) of the run's episodes (of one ``task`` label in a multi-task run)."""
    frames, returns = [], []
    for row in _episode_rows(run_dir):
        if task is None or row.get("task") == task:
            frames.append(float(row["frames"]))
            returns.append(float(row["return"]))
    return np.asarray(frames), np.asarray(returns)


def read_tasks(run_dir: str | os.PathLike) -> list[str]:
    """The task labels of a multi-task run's episodes, in order of appearance ([] for one task)."""
    return list(dict.fromkeys(row["task"] for row in _episode_rows(run_dir) if row.get("task")))


def _episode_rows(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / EPISODES_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {EPISODES_NAME} in {run_dir} (is it a run directory of 'impala train'?)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"frames", "return"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path} has no header line with frames and return (a damaged run directory)")
        return list(reader)


def read_metric(run_dir: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames, values) of one column of ``metrics.csv`` (rows where it is empty are skipped)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {METRICS_NAME} in {run_dir} (is it a run directory of 'impala train'?)")
    frames, values = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if name not in (reader.fieldnames or []):
            raise ValueError(f"{METRICS_NAME} in {run_dir} has no column {name!r}; columns: "
                             f"{', '.join(c for c in reader.fieldnames or [] if c != 'frames')}")
        for row in reader:
            if row[name] not in ("", "nan"):
                frames.append(float(row["frames"]))
                values.append(float(row[name]))
    return np.asarray(frames), np.asarray(values)


def wall_minutes(run_dir: str | os.PathLike, frames: np.ndarray) -> np.ndarray:
    """Wall-clock minutes since the run started at each of ``frames``, read from
    ``metrics.csv``'s ``elapsed_s`` (which a resumed run continues, so a run made of several
    segments reads as one) and interpolated linearly between its rows (0 at frame 0)."""
    logged_frames, elapsed_s = read_metric(run_dir, "elapsed_s")
    return np.interp(frames, np.insert(logged_frames, 0, 0.0), np.insert(elapsed_s, 0, 0.0) / 60.0)


def read_summary(run_dir: str | os.PathLike) -> dict:
    """``summary.json`` as saved: how the run ended (``stop_reason``, ``frames``, ``elapsed_s``,
    ``fps``, ``mean_return``, ...); in a population directory, the population's (``members``,
    ``best``, ``median``, ``events``).

    Raises FileNotFoundError if there is none (the run has not ended), ValueError if it is not JSON."""
    return json.loads((Path(run_dir) / SUMMARY_NAME).read_text())


# ----------------------------------------------------------------------------- a population directory
def is_population(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a population directory of ``impala pbt`` (rather than a run directory)."""
    return (Path(path) / POPULATION_NAME).exists()


def member_dir(pop_dir: str | os.PathLike, name: str) -> Path:
    """The run directory of the population's member ``name``."""
    return Path(pop_dir) / MEMBERS_DIR / name


def read_population(pop_dir: str | os.PathLike) -> dict:
    """``population.json`` as saved: ``rules``, ``settings`` (``population``: what ``impala pbt``
    was asked for; ``members``: each member's starting config), ``members`` (each one's
    ``hparams``, ``fitness``, ``frames``, ``readies``, ``parent``, ``checkpoint``), ``events``, ``rng``.

    Raises FileNotFoundError if there is none, ValueError if it is not such a file."""
    path = Path(pop_dir) / POPULATION_NAME
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{pop_dir} holds no population ({POPULATION_NAME} is missing)") from None
    except ValueError as e:
        raise ValueError(f"{path} is not a population this version can read: {e}") from None
    if not isinstance(d, dict) or not {"rules", "settings", "members"} <= set(d):
        raise ValueError(f"{path} is not a population this version can read: it lacks rules, settings or members")
    return d


def read_events(pop_dir: str | os.PathLike) -> list[dict]:
    """The population's event log (``events.jsonl``), oldest first ([] if there is none yet)."""
    path = Path(pop_dir) / EVENTS_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
