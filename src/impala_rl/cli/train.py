"""``impala train``: the config from the flags, a preset, a recorded config or a run to resume."""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from impala_rl.cli.flags import UsageError, explicit_fields
from impala_rl.cli.signals import interrupted_exit_code


def config_with_preset(explicit: dict, preset: str | None = "auto"):
    """(config with the env family's preset applied, a note saying what the preset changed or "").

    Checks the environment id first (one line for an unknown id). Callers print the note
    only once the config is valid: a bad input gets one line.
    """
    from impala_rl.agents import agent_presets
    from impala_rl.config import TrainConfig, apply_preset, lacks_preset
    from impala_rl.envs import env_family

    cfg = TrainConfig(**explicit)
    try:
        family = env_family(cfg.env)
        presets = agent_presets(cfg.agent)  # the agent's own values (IMPALA's: impala_rl.presets)
    except ValueError as e:  # UnknownEnvError, ConfigError (an unknown agent)
        raise UsageError(str(e)) from None
    if preset is None:
        cfg, changes = apply_preset(cfg, set(explicit), None, presets)
        return cfg, (f"[impala] no preset for {cfg.env}: the paper's Atari defaults plus your flags"
                     + (" (reward_clip=0.0: PopArt trains on unclipped rewards)" if changes else ""))
    if preset != "auto":
        if preset not in presets[0]:
            known = ", ".join(presets[0]) or f"none (agent {cfg.agent} declares no presets)"
            raise UsageError(f"--preset {preset} is not one of: {known}")
        family = preset
    elif lacks_preset(family, presets):  # the agent has none here: its flags' defaults (it may refuse the env)
        cfg, _ = apply_preset(cfg, set(explicit), None, presets)
        return cfg, f"[impala] agent {cfg.agent} has no preset for {family} environments: the flags' defaults"
    cfg, changes = apply_preset(cfg, set(explicit), family, presets)
    note = (f"[impala] preset '{family}' for {cfg.env}: " + ", ".join(f"{k}={v}" for k, v in changes.items())
            + " (--no-preset keeps the paper's defaults)") if changes else ""
    return cfg, note


def _train_config(args: argparse.Namespace):
    """(config, resume state or None, note on the preset or overrides applied) from the parsed
    flags; the run-directory policy is :mod:`impala_rl.runtime.rundirs`'."""
    from impala_rl.runtime.rundirs import recorded_config, resumed_config, with_run_dir

    explicit = explicit_fields(args)
    if args.suite is not None:
        from impala_rl.envs.tasks import SUITES

        if args.suite not in SUITES:
            raise UsageError(f"--suite {args.suite} is not one of: {', '.join(SUITES)}")
        if "env" in explicit or args.resume:
            raise UsageError("--suite names the run's environments: give it instead of --env (and not with --resume)")
        explicit["env"] = ",".join(SUITES[args.suite])
    if args.config is not None and args.resume:
        raise UsageError("--config starts a new run from a recorded config; --resume continues one: give one")
    try:
        if args.config is not None:
            return recorded_config(args.config, explicit), None, (
                f"[impala] config from {args.config} (no preset applied: the record holds every value)"
                + (f"; flags given: {explicit}" if explicit else ""))
        if args.resume:
            cfg, state = resumed_config(args.resume, explicit)
            explicit.pop("run_dir", None)
            return cfg, state, f"[impala] resuming {args.resume} with overrides: {explicit}" if explicit else ""
    except ValueError as e:  # ConfigError: a foreign, broken or missing record
        raise UsageError(str(e)) from None
    cfg, note = config_with_preset(explicit, preset=args.preset)
    return with_run_dir(cfg), None, note


def cmd_train(args: argparse.Namespace) -> int:
    from impala_rl.checkpoint import CHECKPOINT_NAME
    from impala_rl.envs import check_env_id
    from impala_rl.logging import setup_logging
    from impala_rl.runtime.precision import describe as describe_precision
    from impala_rl.runtime.rundirs import check_run_dir, make_run_dir
    from impala_rl.runtime.train import FINISHED, Trainer

    cfg, state, note = _train_config(args)
    try:
        cfg.validate()
        check_env_id(cfg.env)
        trainer = Trainer(cfg, resume_state=state)
    except ValueError as e:  # ConfigError, UnknownEnvError, unsupported spaces
        raise UsageError(str(e)) from None
    if state is not None and trainer.learner.frames >= cfg.total_frames:
        raise UsageError(f"the run in {cfg.run_dir} already reached {trainer.learner.frames} of "
                         f"{cfg.total_frames} frames; pass a larger --total-frames to continue it")
    try:
        check_run_dir(cfg, resuming=state is not None)
        run_dir = make_run_dir(cfg)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if note:
        print(note, file=sys.stderr)
    setup_logging(Path(cfg.run_dir), quiet=cfg.quiet)
    precision = describe_precision(cfg.learner_precision, trainer.learner.precision)
    if trainer.learner.compiled:
        precision += ", torch.compile (its first learner steps compile: timed in train.log)"
    print(f"[impala] training {cfg.env} for {cfg.total_frames} frames ({cfg.backend} backend, "
          f"{cfg.num_actors} actors x {cfg.envs_per_actor} envs, device {trainer.device}, {precision}); run dir {cfg.run_dir}",
          file=sys.stderr)
    try:
        result = trainer.run()
    except OSError as e:  # a full disk, a vanished directory: one line, details in train.log
        where = getattr(e, "filename", "") or cfg.run_dir
        if (run_dir / CHECKPOINT_NAME).exists():
            advice = f"the last checkpoint in {cfg.run_dir} is intact, --resume it once fixed"
        else:
            advice = f"no checkpoint was written; remove {cfg.run_dir} and start again once fixed"
        print(f"impala: error: the run stopped: {e.strerror or e} ({where}); {advice}", file=sys.stderr)
        return 1
    if result.stop_reason == "interrupted":  # the shell's convention: 128 + the signal's number
        return interrupted_exit_code()
    return 0 if result.stop_reason in FINISHED else 1
