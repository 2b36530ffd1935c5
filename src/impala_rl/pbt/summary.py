"""A finished population in numbers: ``summary.json`` in the population directory."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from impala_rl.config import TrainConfig
from impala_rl.pbt.population import Population
from impala_rl.pbt.settings import PopulationConfig
from impala_rl.runfiles import SUMMARY_NAME, read_episodes


def summarize(pop: Population, cfgs: dict[str, TrainConfig], pcfg: PopulationConfig,
              finished: dict[str, dict]) -> dict:
    """Each member's final 100-episode mean (from its ``episodes.csv``), hyperparameters, last
    parent and how it ended; the population's best and median. Written to ``summary.json``."""
    finals = {}
    for name, cfg in cfgs.items():
        try:
            _, returns = read_episodes(cfg.run_dir)
            finals[name] = float(returns[-100:].mean()) if len(returns) else None
        except (FileNotFoundError, ValueError):
            finals[name] = None
    scored = [v for v in finals.values() if v is not None]
    summary = {"members": {n: {"final_100_episode_mean": finals[n], "hparams": pop.members[n].hparams,
                               "parent": pop.members[n].parent, **finished.get(n, {})} for n in cfgs},
               "best": max(scored) if scored else None, "median": statistics.median(scored) if scored else None,
               "events": pop.events}
    (Path(pcfg.pop_dir) / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
    return summary
