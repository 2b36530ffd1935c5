"""The commands around training: ``bench`` (throughput, or a learning suite), ``eval``, ``presets``, ``plot``."""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

from __future__ import annotations

import argparse
import sys

from impala_rl.cli.flags import UsageError, explicit_fields
from impala_rl.cli.train import config_with_preset


def cmd_bench(args: argparse.Namespace) -> int:
    from impala_rl.bench import main_bench
    from impala_rl.envs import check_env_id
    from impala_rl.runtime.backends import check_backend

    if args.learning:
        return _bench_learning(args)
    if args.seeds or args.jobs:
        raise UsageError("--seeds and --jobs go with --learning SUITE (they choose a learning suite's runs)")
    cfg, note = config_with_preset(explicit_fields(args), preset=args.preset)
    if args.duration <= 0 or args.warmup < 0:
        raise UsageError(f"--duration must be positive and --warmup >= 0, got {args.duration}, {args.warmup}")
    try:
        cfg.validate()
        check_backend(cfg.backend)
        check_env_id(cfg.env)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if len(cfg.tasks) > 1:
        raise UsageError("impala bench measures one environment; give a single --env id")
    if cfg.agent == "rainbow":  # its learner trains from its own replay, not the fresh batches bench times
        raise UsageError("impala bench times agents that train on fresh unrolls (impala, merlin); for Rainbow run "
                         "python benchmarks/rainbow_speed.py")
    if note:
        print(note, file=sys.stderr)
    return main_bench(cfg, args.duration, args.warmup, args.json, learning_out=args.learning_out)


def _bench_learning(args: argparse.Namespace) -> int:
    from impala_rl.learning_bench import SUITES, TASKS, main_learning

    if args.learning not in SUITES and args.learning not in TASKS:
        raise UsageError(f"unknown learning suite {args.learning!r}; choose a suite ({', '.join(SUITES)}) "
                         f"or one task ({', '.join(TASKS)})")
    explicit = explicit_fields(args)
    if set(explicit) - {"seed"}:
        raise UsageError(f"--learning runs every task with its defaults; it takes only --seed, --seeds, --learning-out "
                         f"and --json (got --{next(iter(set(explicit) - {'seed'})).replace('_', '-')}); "
                         f"use benchmarks/learning.py to pass training options")
    if args.seeds and "seed" in explicit:
        raise UsageError("give --seed N (one seed) or --seeds S,S,... (several), not both")
    return main_learning(args.learning, args.learning_out, args.seeds or (explicit.get("seed", 0),), [],
                         as_json=args.json, jobs=args.jobs or 1)


def cmd_eval(args: argparse.Namespace) -> int:
    from impala_rl.runtime.evaluate import evaluate

    if args.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {args.episodes}")
    if args.max_steps is not None and args.max_steps < 0:
        raise UsageError(f"--max-steps must be 0 (no cap) or positive, got {args.max_steps}")
    try:
        result = evaluate(args.run_dir, episodes=args.episodes, greedy=not args.sample, video=args.video,
                          seed=args.seed, max_steps=args.max_steps, trust_env_module=args.trust_env_module,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if result.tasks:  # a multi-task run: one line per task, then the aggregates
        print(f"{result.policy} policy, {args.episodes} episodes per task:")
        width = max(len(label) for label in result.tasks)
        for label, r in result.tasks.items():
            hns = f"  human-normalised {result.hns[label]:7.1f}%" if label in result.hns else ""
            print(f"  {label:<{width}}  mean return {r.mean:9.2f} +- {r.std:8.2f} (min {min(r.returns):.2f}, "
                  f"max {max(r.returns):.2f}){hns}")
        if "median" in result.hns:
            print(f"  human-normalised score over {len(result.tasks)} tasks: median {result.hns['median']:.1f}%, "
                  f"mean {result.hns['mean']:.1f}%, capped mean {result.hns['capped_mean']:.1f}%")
    else:
        print(f"{result.policy} policy, {len(result.returns)} episodes: mean return {result.mean:.2f} "
              f"+- {result.std:.2f} (min {min(result.returns):.2f}, max {max(result.returns):.2f})")
    if args.video:
        print(f"video of episode 1 written to {args.video}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    import dataclasses

    from impala_rl.agents.base import agent_class
    from impala_rl.config import ConfigError, TrainConfig, flag_value

    try:
        cls = agent_class(args.agent)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    defaults = TrainConfig()
    label = "paper default" if args.agent == "impala" else "flag default"  # TrainConfig's defaults are IMPALA's paper's
    headings = [(f"{family}:", values) for family, values in cls.PRESETS.items()]
    headings += [(f"{env} (on top of its family's preset):", values) for env, values in cls.ENV_PRESETS.items()]
    print(f"agent {args.agent}" + ("" if headings else ": no presets (the flags' defaults)"))
    for heading, values in headings:
        print(heading)
        for name, value in values.items():
            print(f"  --{name.replace('_', '-'):<24} {flag_value(value):<12} ({label}: "
                  f"{flag_value(getattr(defaults, name))})")
    print("Applied to the options not given on the command line; --preset NAME picks one, --no-preset none.")
    options = getattr(cls, "Options", None)
    if dataclasses.is_dataclass(options):
        print(f"--agent-options of {args.agent} (key=value,...), with their defaults:")
        for f in dataclasses.fields(options):
            print(f"  {f.name:<24} {flag_value(f.default)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from impala_rl.plot import plot_runs

    try:
        path = plot_runs(args.run_dirs, args.output, window=args.window, metric=args.metric, x=args.x)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    print(f"learning curves written to {path}")
    return 0
