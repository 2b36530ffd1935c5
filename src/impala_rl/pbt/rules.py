"""Population based training's rules as the IMPALA paper states them (seed 003), as pure functions.

For Atari, IMPALA trained a population of 24 agents with PBT (Jaderberg et al. 2017)
adapting the entropy cost, learning rate, RMSProp epsilon and the global gradient-norm
clip. When an agent is **ready** (``ready_episodes`` = 5000 episodes since it last was):

- **exploit**: it may be overwritten by the parameters and hyperparameters of another
  agent, if that one is sufficiently better: its fitness (the mean capped
  human-normalised score over its last ``ready_episodes`` episodes) is at least
  ``margin`` = 5% better;
- **explore**, independently: each hyperparameter may change, multiplied by 1.2 or 1/1.2,
  with probability 1/3 (``probability``), then kept within its bounds.

At small scale a window of a few episodes is noise (every member scores about the same
before any has learned), so a member may also be required to have trained
``ready_frames`` frames since it last was ready (0 = episodes only, the seed's rule);
fitness is then the mean over its last ``ready_episodes`` episodes.

Which other agent is compared is not stated; here it is one drawn uniformly from the rest
of the population (a binary tournament, as in the PBT paper's Atari experiments).
"Better by 5%" is ``other >= own + margin * |own|`` (and strictly better), so that it
also means something for negative or zero fitness.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rules:
    """Every constant of the rules (the seed's values by default)."""

    ready_episodes: int = 5000
    ready_frames: int = 0
    margin: float = 0.05
    factors: tuple[float, ...] = (1.2, 1 / 1.2)
    probability: float = 1 / 3
    bounds: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "entropy_cost": (1e-5, 1.0),
        "learning_rate": (1e-6, 1e-1),
        "rmsprop_epsilon": (1e-8, 1.0),
        "grad_norm_clip": (0.1, 1e4),
    })

    def __post_init__(self) -> None:
        if self.ready_episodes < 1:
            raise ValueError(f"ready_episodes must be >= 1, got {self.ready_episodes}")
        if self.ready_frames < 0:
            raise ValueError(f"ready_frames must be >= 0, got {self.ready_frames}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if not self.factors or any(f <= 0 for f in self.factors):
            raise ValueError(f"factors must be positive, got {self.factors}")
        for name, (low, high) in self.bounds.items():
            if not 0 < low <= high:
                raise ValueError(f"bounds of {name} must satisfy 0 < low <= high, got ({low}, {high})")


def is_ready(episodes_since_ready: int, frames_since_ready: int, rules: Rules) -> bool:
    """An agent is ready once it has finished ``ready_episodes`` episodes and trained
    ``ready_frames`` frames since it last was."""
    return episodes_since_ready >= rules.ready_episodes and frames_since_ready >= rules.ready_frames


def sufficiently_better(other: float, own: float, margin: float) -> bool:
    """``other`` beats ``own`` by at least ``margin`` (relative to ``|own|``), and strictly."""
    return other > own and other >= own + margin * abs(own)


def exploit_source(member: str, fitness: dict[str, float], rules: Rules, rng: random.Random) -> str | None:
    """The member whose weights and hyperparameters ``member`` copies, or None.

    One other member with a fitness is drawn uniformly; it is the source if it is
    sufficiently better than ``member``."""
    others = sorted(m for m in fitness if m != member)
    if member not in fitness or not others:
        return None
    other = rng.choice(others)
    return other if sufficiently_better(fitness[other], fitness[member], rules.margin) else None


def explore(hparams: dict[str, float], rules: Rules, rng: random.Random) -> dict[str, float]:
    """Each hyperparameter named in ``rules.bounds`` is, with probability ``rules.probability``,
    multiplied by one of ``rules.factors`` (drawn uniformly), then clipped to its bounds."""
    out = dict(hparams)
    for name in sorted(rules.bounds):
        if name not in out:
            continue
        if rng.random() < rules.probability:
            low, high = rules.bounds[name]
            out[name] = min(high, max(low, out[name] * rng.choice(rules.factors)))
    return out
