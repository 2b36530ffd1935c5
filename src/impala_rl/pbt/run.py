"""``impala pbt``: a population of normal training runs under one controller.

The parts, each in its own module:

- :mod:`impala_rl.pbt.rules`: the seed's rules (ready, exploit, explore) as pure functions;
- :mod:`impala_rl.pbt.population`: the controller's state, decisions and event log;
- :mod:`impala_rl.pbt.member`: a member's side: the loop hook that reports and applies the
  controller's answer, and the bodies that run a member (a local process, a Ray actor);
- :mod:`impala_rl.pbt.drivers`: the driver's side: the local and the Ray driver;
- :mod:`impala_rl.pbt.settings`: what ``impala pbt`` is asked for, and the population made of it;
- :mod:`impala_rl.pbt.summary`: ``summary.json`` of a finished population.

This module runs a population with the driver asked for and summarises it. It also hands on
the names that ``impala pbt`` (:mod:`impala_rl.cli.pbt`) and the loop's docs use from here.
"""

from __future__ import annotations

from impala_rl.config import TrainConfig
from impala_rl.pbt.drivers import LocalDriver, RayDriver
from impala_rl.pbt.member import pbt_hook
from impala_rl.pbt.population import Population
from impala_rl.pbt.settings import PopulationConfig, load_population, new_population
from impala_rl.pbt.summary import summarize

__all__ = ["PopulationConfig", "load_population", "new_population", "pbt_hook", "run_population"]


def run_population(pop: Population, cfgs: dict[str, TrainConfig], pcfg: PopulationConfig,
                   resume: bool = False) -> dict:
    """Run every member to its ``total_frames``; returns the summary (also ``summary.json``)."""
    driver = RayDriver if pcfg.ray_address else LocalDriver
    finished = driver(pop, cfgs, pcfg).run(resume)
    return summarize(pop, cfgs, pcfg, finished)
