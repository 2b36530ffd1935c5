"""What ``impala pbt`` is asked for, and the population it makes of it.

:func:`new_population` turns one training config into the members' configs (seed + i, a run
directory each, the ``--initial`` values handed round) and the controller, and writes them
to ``population.json``; :func:`load_population` reads them back for ``impala pbt --resume``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from impala_rl.config import TrainConfig
from impala_rl.pbt.population import Population
from impala_rl.pbt.rules import Rules
from impala_rl.runfiles import MEMBERS_DIR, member_dir
from impala_rl.runtime.learner import mutable_hyperparameters


@dataclasses.dataclass
class PopulationConfig:
    """What ``impala pbt`` was asked for (saved in population.json's settings)."""

    pop_dir: str
    population: int = 4
    concurrent: int = 0  # members running at a time; 0 = all
    slice_s: float = 60.0
    max_restarts: int = 3
    ray_address: str = ""  # "" = local processes; "local" = a private Ray; else a cluster
    member_cpus: float = 1.0


def member_names(n: int) -> list[str]:
    return [f"m{i}" for i in range(n)]


def new_population(base: TrainConfig, pcfg: PopulationConfig, rules: Rules,
                   initial: dict[str, list[float]]) -> tuple[Population, dict[str, TrainConfig]]:
    """Member configs (seed + i, its own run directory, the ``initial`` values given round
    robin) and the controller, written to ``pcfg.pop_dir``."""
    pop_dir = Path(pcfg.pop_dir)
    cfgs = {}
    for i, name in enumerate(member_names(pcfg.population)):
        values = {k: v[i % len(v)] for k, v in initial.items()}
        cfgs[name] = dataclasses.replace(base, seed=base.seed + i, quiet=True,
                                         run_dir=str(member_dir(pop_dir, name)), **values).validate()
    hparams = {name: {k: getattr(c, k) for k in mutable_hyperparameters(c)} for name, c in cfgs.items()}
    settings = {"population": dataclasses.asdict(pcfg), "members": {n: c.to_dict() for n, c in cfgs.items()}}
    (pop_dir / MEMBERS_DIR).mkdir(parents=True, exist_ok=True)
    pop = Population(hparams, rules, seed=base.seed, out_dir=pop_dir, settings=settings)
    pop.save()
    return pop, cfgs


def load_population(pop_dir: str | os.PathLike) -> tuple[Population, dict[str, TrainConfig], PopulationConfig]:
    pop = Population.load(pop_dir)
    try:
        cfgs = {n: TrainConfig.from_dict(d) for n, d in pop.settings["members"].items()}
        pcfg = PopulationConfig(**pop.settings["population"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{pop_dir} is not a population this version can read: {e}") from None
    return pop, cfgs, pcfg
