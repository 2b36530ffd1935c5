"""The run-directory policy, shared by ``impala train`` and :func:`impala_rl.train`.

- A new run goes into a directory that does not exist or is empty; one that holds a run
  (``checkpoint.pt``) is for ``--resume``, one that holds other files is refused.
- A resumed run continues in its own directory and keeps what its weights, optimiser and
  agent state mean (:func:`impala_rl.agents.resume_fixed`); other fields may change.
- A run repeated from its record (``--config RUN``) takes every recorded value, no preset
  on top, the fields given beside it win, and it trains in a new directory.

Every refusal is a :class:`~impala_rl.config.ConfigError` naming what was wrong and what is
accepted; nothing is written before the checks pass.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from impala_rl.agents import resume_fixed
from impala_rl.checkpoint import CHECKPOINT_NAME, load_checkpoint
from impala_rl.config import ConfigError, TrainConfig, flag_value
from impala_rl.runfiles import CONFIG_NAME


def load_run(run_dir: str | Path) -> tuple[TrainConfig, dict]:
    """The config and checkpoint of a run directory."""
    state = load_checkpoint(run_dir)
    try:
        return TrainConfig.from_dict(state["config"]), state
    except ConfigError as e:
        raise ConfigError(f"the run in {run_dir} cannot be loaded by this version of impala-rl: {e}") from None


def resumed_config(run_dir: str, explicit: dict) -> tuple[TrainConfig, dict]:
    """(the run's config with the ``explicit`` fields on top, its checkpoint) to continue it."""
    try:
        cfg, state = load_run(run_dir)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    explicit = dict(explicit)
    if "run_dir" in explicit and Path(explicit["run_dir"]).resolve() != Path(run_dir).resolve():
        raise ConfigError(f"--run-dir cannot be combined with --resume: a run continues in its own directory "
                          f"({run_dir}); copy the directory first to branch it")
    explicit.pop("run_dir", None)
    changed = [f"--{k.replace('_', '-')} (run: {flag_value(getattr(cfg, k))}, given: {flag_value(v)})"
               for k, v in explicit.items() if k in resume_fixed(cfg) and v != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"a resumed run keeps its environment, network and optimiser; these differ: "
                          f"{'; '.join(changed)}")
    return dataclasses.replace(cfg, **explicit, run_dir=str(run_dir)), state


def recorded_config(path: str, explicit: dict) -> TrainConfig:
    """A run's recorded config.json (``path``: the file or its run directory) with the
    ``explicit`` fields on top, for a new run (a new directory unless ``run_dir`` is given)."""
    file = Path(path) / CONFIG_NAME if Path(path).is_dir() else Path(path)
    try:
        recorded = json.loads(file.read_text())
    except OSError as e:
        raise ConfigError(f"--config: cannot read {file}: {e.strerror or e}; give a run directory or its "
                          f"config.json") from None
    except ValueError as e:
        raise ConfigError(f"--config: {file} is not JSON ({e}); give a run directory or its config.json") from None
    if not isinstance(recorded, dict):
        raise ConfigError(f"--config: {file} holds no config object; give a run directory or its config.json")
    recorded.pop("run_dir", None)  # a repeat never writes into the recorded run
    try:
        cfg = TrainConfig.from_dict({**recorded, **explicit})
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"--config: {file} cannot be loaded by this version of impala-rl: {e}") from None
    return with_run_dir(cfg)


def with_run_dir(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its default run directory (``runs/<env>-<time>``) if it names none."""
    return cfg if cfg.run_dir else dataclasses.replace(cfg, run_dir=cfg.default_run_dir())


def check_run_dir(cfg: TrainConfig, resuming: bool) -> None:
    """Refuse a run directory that is a file, or (for a new run) one that holds a run or other files."""
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {cfg.run_dir} is an existing file, not a directory")
    if resuming:
        return
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(f"run directory {cfg.run_dir} already holds a run; use --resume {cfg.run_dir} "
                          f"or another --run-dir")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"run directory {cfg.run_dir} already holds files but no checkpoint (a run that died "
                          f"before its first one?); remove it or choose another --run-dir")


def make_run_dir(cfg: TrainConfig) -> Path:
    """Create the run directory and check it can be written (ConfigError if not)."""
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".impala-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write the run directory {cfg.run_dir}: {e.strerror or e}") from None
    return run_dir
