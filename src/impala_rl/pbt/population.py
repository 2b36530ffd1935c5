"""The PBT controller's state and decisions, with no processes in it.

Members (normal training runs, :mod:`impala_rl.pbt.member`) call :meth:`Population.ready`
when they are ready (:func:`~impala_rl.pbt.rules.is_ready`); the population records their
fitness and checkpoint, applies the seed's exploit and explore rules
(:mod:`impala_rl.pbt.rules`) and answers with a :class:`Decision`. Every event goes to an
append-only log (``events.jsonl``: one JSON object a line) and the whole state to
``population.json`` (written atomically), from which ``impala pbt --resume`` continues.
Runs the same in the local driver and as a Ray actor.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from impala_rl.pbt.rules import Rules, exploit_source, explore
from impala_rl.runfiles import EVENTS_NAME, POPULATION_NAME, read_population
from impala_rl.scores import human_normalized


@dataclass
class Decision:
    """What a ready member does now: copy ``source`` (its checkpoint handle, or None to keep
    its own weights), then train with ``hparams``."""

    hparams: dict[str, float]
    source: str | None = None
    checkpoint: Any = None


@dataclass
class MemberState:
    hparams: dict[str, float]
    fitness: float | None = None
    frames: int = 0
    readies: int = 0
    checkpoint: Any = None  # a path (local) or the state itself (Ray); not saved in population.json
    parent: str | None = None  # whom it last copied


def rules_to_dict(rules: Rules) -> dict:
    d = asdict(rules)
    d["factors"] = list(d["factors"])
    d["bounds"] = {k: list(v) for k, v in d["bounds"].items()}
    return d


def rules_from_dict(d: dict) -> Rules:
    return Rules(ready_episodes=d["ready_episodes"], ready_frames=d.get("ready_frames", 0), margin=d["margin"],
                 factors=tuple(d["factors"]), probability=d["probability"],
                 bounds={k: tuple(v) for k, v in d["bounds"].items()})


class Population:
    """The members' last reported fitness and hyperparameters; the rules; the event log."""

    def __init__(self, hparams: dict[str, dict[str, float]], rules: Rules, seed: int = 0,
                 out_dir: str | os.PathLike | None = None, settings: dict | None = None):
        if len(hparams) < 2:
            raise ValueError(f"a population needs at least 2 members, got {len(hparams)}")
        self.rules = rules
        self.members = {name: MemberState(dict(h)) for name, h in hparams.items()}
        self.rng = random.Random(seed)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.settings = dict(settings or {})
        self.events = 0

    # ------------------------------------------------------------------ decisions
    def ready(self, name: str, fitness: float, frames: int, checkpoint: Any,
              hparams: dict[str, float]) -> Decision:
        """``name`` is ready with ``fitness`` over its last window: exploit (maybe), explore."""
        own = self.members[name]
        own.fitness, own.frames, own.checkpoint, own.hparams = fitness, frames, checkpoint, dict(hparams)
        own.readies += 1
        self.log("ready", name, fitness=fitness, frames=frames, hparams=own.hparams)
        fitness_now = {m: s.fitness for m, s in self.members.items()
                       if s.fitness is not None and s.checkpoint is not None}
        source = exploit_source(name, fitness_now, self.rules, self.rng)
        base = own.hparams
        if source is not None:
            src = self.members[source]
            self.log("exploit", name, source=source, frames=frames, fitness=fitness, source_fitness=src.fitness,
                     old=own.hparams, new=src.hparams)
            base = src.hparams
            own.parent = source
        new = explore(base, self.rules, self.rng)
        changed = {k: [base[k], v] for k, v in new.items() if v != base.get(k)}
        if changed:
            self.log("explore", name, frames=frames, changed=changed)
        own.hparams = new
        if source is not None:
            own.fitness = self.members[source].fitness  # it is now a copy of that member
        self.save()
        return Decision(hparams=new, source=source,
                        checkpoint=self.members[source].checkpoint if source is not None else None)

    def member_event(self, kind: str, name: str, **details) -> None:
        """A member's life event (``started``, ``died``, ``restarted``, ``finished``)."""
        self.log(kind, name, **details)
        self.save()

    # ------------------------------------------------------------------ persistence
    def log(self, kind: str, name: str, **details) -> None:
        self.events += 1
        if self.out_dir is None:
            return
        record = {"time": round(time.time(), 3), "event": kind, "member": name, **details}
        with open(self.out_dir / EVENTS_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    def state_dict(self) -> dict:
        return {"rules": rules_to_dict(self.rules), "settings": self.settings, "events": self.events,
                "rng": _rng_to_json(self.rng.getstate()),
                "members": {name: {"hparams": s.hparams, "fitness": s.fitness, "frames": s.frames,
                                   "readies": s.readies, "parent": s.parent,
                                   "checkpoint": s.checkpoint if isinstance(s.checkpoint, str) else None}
                            for name, s in self.members.items()}}

    def save(self) -> None:
        if self.out_dir is None:
            return
        path = self.out_dir / POPULATION_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Population":
        """The population saved in ``out_dir`` (``population.json``)."""
        d = read_population(out_dir)  # no file, or not a population's: its error says so
        path = Path(out_dir) / POPULATION_NAME
        try:
            pop = cls({name: m["hparams"] for name, m in d["members"].items()}, rules_from_dict(d["rules"]),
                      out_dir=out_dir, settings=d["settings"])
            pop.rng.setstate(_rng_from_json(d["rng"]))
            pop.events = d["events"]
            for name, m in d["members"].items():
                s = pop.members[name]
                s.fitness, s.frames, s.readies, s.parent = m["fitness"], m["frames"], m["readies"], m["parent"]
                s.checkpoint = m["checkpoint"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a population this version can read: {e}") from None
        return pop


def _rng_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


@dataclass
class Window:
    """A member's episodes since it was last ready (the last ``limit`` of them, if given),
    and its fitness over them: the mean return, or for Atari tasks the mean capped
    human-normalised score (per task, then averaged over tasks)."""

    tasks: tuple[str, ...]
    limit: int | None = None
    returns: deque[tuple[int, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.returns = deque(maxlen=self.limit)

    def add(self, task: int, ret: float) -> None:
        self.returns.append((task, ret))

    def __len__(self) -> int:
        return len(self.returns)

    def fitness(self) -> float:
        by_task: dict[int, list[float]] = {}
        for task, ret in self.returns:
            by_task.setdefault(task, []).append(ret)
        means = {t: sum(r) / len(r) for t, r in by_task.items()}
        scores = [human_normalized(self.tasks[t], m) if t < len(self.tasks) else None for t, m in means.items()]
        if scores and all(s is not None for s in scores):
            return sum(min(s, 100.0) for s in scores) / len(scores)
        return sum(means.values()) / len(means)

    def clear(self) -> None:
        self.returns.clear()
