"""The Python API, for notebooks and scripts: the same runs as the ``impala`` command.

    import impala_rl

    result = impala_rl.train("CartPole-v1", total_frames=200_000, seed=1)   # the preset applies
    print(result.mean_return, result.run_dir)
    print(impala_rl.evaluate(result.run_dir, episodes=5).mean)

:func:`train` takes any :class:`~impala_rl.config.TrainConfig` field as a keyword and
applies the environment family's preset to the others, exactly as ``impala train`` does
(``preset=None`` keeps the paper's defaults). A script needs no ``if __name__ ==
"__main__":`` guard: the actor processes are started without re-running the script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from impala_rl.config import TrainConfig


def train(env: str | None = None, config: TrainConfig | None = None, preset: str | None = "auto",
          **overrides: Any):
    """Train and return a :class:`~impala_rl.runtime.train.TrainResult`.

    Give ``env`` (and field overrides) or a ready ``config``. The run directory defaults
    to ``runs/<env>-<time>`` as on the command line; a directory that already holds a run
    is refused (``ConfigError``) rather than overwritten.
    """
    from impala_rl.agents import agent_presets
    from impala_rl.config import ConfigError
    from impala_rl.logging import setup_logging
    from impala_rl.runtime.rundirs import check_run_dir, make_run_dir, with_run_dir
    from impala_rl.runtime.train import Trainer

    if (env is None) == (config is None):
        raise ConfigError("give either env (with field overrides) or config")
    if config is None:  # the agent's own presets (IMPALA's: impala_rl.presets)
        config = TrainConfig.for_env(env, preset=preset, presets=agent_presets(overrides.get("agent", "impala")),
                                     **overrides)
    cfg = config.validate()
    cfg = with_run_dir(cfg)
    check_run_dir(cfg, resuming=False)  # the command line's policy (runtime/rundirs.py)
    trainer = Trainer(cfg)  # checks everything before anything is written
    setup_logging(make_run_dir(cfg), quiet=cfg.quiet)  # train.log, as from the command line
    return trainer.run()


def evaluate(run_dir: str | Path, episodes: int = 10, greedy: bool = True, **kwargs: Any):
    """Play ``episodes`` episodes with a run's latest checkpoint (see ``impala eval``)."""
    from impala_rl.runtime.evaluate import evaluate as _evaluate

    return _evaluate(run_dir, episodes=episodes, greedy=greedy, **kwargs)
