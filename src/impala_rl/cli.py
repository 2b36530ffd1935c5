"""The ``impala`` command: ``train``, ``eval``, ``plot``.

Every bad input (unknown flag, bad value, unknown environment, inconsistent sizes) ends
in one line on stderr naming the problem and what is accepted, exit code 2, and nothing
written to disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from impala_rl import __version__


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ----------------------------------------------------------------------------- train flags
def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; help from the field's metadata, grouped by section."""
    from impala_rl.config import ENV_PRESETS, PRESETS, TrainConfig, flag_value

    parser.add_argument("--preset", nargs="?", const="auto", default="auto", metavar="NAME",
                        help=f"apply a preset to the options not given: the environment family's (default), or "
                        f"NAME, one of {', '.join(PRESETS)} (`impala presets` lists their values; docs/learning.md "
                        f"says why)")
    parser.add_argument("--no-preset", dest="preset", action="store_const", const=None,
                        help="no preset: the paper's Atari defaults plus the options given")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        by_preset = [f"{family} {flag_value(values[f.name])}" for family, values in {**PRESETS, **ENV_PRESETS}.items()
                     if f.name in values]
        help_text = (f"{f.metadata['help']} (default: {default if default != '' else 'auto'}"
                     + (f"; presets: {', '.join(by_preset)})" if by_preset else ")"))
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, tuple):
            group.add_argument(flag, nargs="+", type=int, metavar="N", **kw)
        else:
            group.add_argument(flag, type=type(default), metavar=type(default).__name__.upper(), **kw)


def _explicit_fields(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (flags default to SUPPRESS)."""
    from impala_rl.config import TrainConfig

    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if "mlp_sizes" in explicit:
        explicit["mlp_sizes"] = tuple(explicit["mlp_sizes"])
    return explicit


def _config_with_preset(explicit: dict, preset: str | None = "auto"):
    """(config with the env family's preset applied, a note saying what the preset changed or "").

    Checks the environment id first (one line for an unknown id). Callers print the note
    only once the config is valid: a bad input gets one line.
    """
    from impala_rl.config import PRESETS, TrainConfig, apply_preset
    from impala_rl.envs import env_family

    cfg = TrainConfig(**explicit)
    try:
        family = env_family(cfg.env)
    except ValueError as e:  # UnknownEnvError
        raise UsageError(str(e)) from None
    if preset is None:
        cfg, changes = apply_preset(cfg, set(explicit), None)
        return cfg, (f"[impala] no preset for {cfg.env}: the paper's Atari defaults plus your flags"
                     + (" (reward_clip=0.0: PopArt trains on unclipped rewards)" if changes else ""))
    if preset != "auto":
        if preset not in PRESETS:
            raise UsageError(f"--preset {preset} is not one of: {', '.join(PRESETS)}")
        family = preset
    cfg, changes = apply_preset(cfg, set(explicit), family)
    note = (f"[impala] preset '{family}' for {cfg.env}: " + ", ".join(f"{k}={v}" for k, v in changes.items())
            + " (--no-preset keeps the paper's defaults)") if changes else ""
    return cfg, note


def _train_config(args: argparse.Namespace):
    """(config, resume state or None, note on the preset or overrides applied) from the parsed
    flags; the run-directory policy is :mod:`impala_rl.runtime.rundirs`'."""
    from impala_rl.runtime.rundirs import recorded_config, resumed_config, with_run_dir

    explicit = _explicit_fields(args)
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
    cfg, note = _config_with_preset(explicit, preset=args.preset)
    return with_run_dir(cfg), None, note


def cmd_train(args: argparse.Namespace) -> int:
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
    print(f"[impala] training {cfg.env} for {cfg.total_frames} frames ({cfg.backend} backend, "
          f"{cfg.num_actors} actors x {cfg.envs_per_actor} envs, device {trainer.device}, {precision}); run dir {cfg.run_dir}",
          file=sys.stderr)
    try:
        result = trainer.run()
    except OSError as e:  # a full disk, a vanished directory: one line, details in train.log
        where = getattr(e, "filename", "") or cfg.run_dir
        if (run_dir / "checkpoint.pt").exists():
            advice = f"the last checkpoint in {cfg.run_dir} is intact, --resume it once fixed"
        else:
            advice = f"no checkpoint was written; remove {cfg.run_dir} and start again once fixed"
        print(f"impala: error: the run stopped: {e.strerror or e} ({where}); {advice}", file=sys.stderr)
        return 1
    if result.stop_reason == "interrupted":  # the shell's convention: 128 + the signal's number
        return 128 + _STOP_SIGNAL.get("signum", signal.SIGINT)
    return 0 if result.stop_reason in FINISHED else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from impala_rl.bench import main_bench
    from impala_rl.envs import check_env_id
    from impala_rl.runtime.backends import check_backend

    if args.learning:
        return _bench_learning(args)
    cfg, note = _config_with_preset(_explicit_fields(args), preset=args.preset)
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
    if note:
        print(note, file=sys.stderr)
    return main_bench(cfg, args.duration, args.warmup, args.json)


def _bench_learning(args: argparse.Namespace) -> int:
    from impala_rl.learning_bench import SUITES, TASKS, main_learning

    if args.learning not in SUITES and args.learning not in TASKS:
        raise UsageError(f"unknown learning suite {args.learning!r}; choose a suite ({', '.join(SUITES)}) "
                         f"or one task ({', '.join(TASKS)})")
    explicit = _explicit_fields(args)
    if set(explicit) - {"seed"}:
        raise UsageError(f"--learning runs every task with its defaults; it takes only --seed, --seeds, --learning-out "
                         f"and --json (got --{next(iter(set(explicit) - {'seed'})).replace('_', '-')}); "
                         f"use benchmarks/learning.py to pass training options")
    if args.seeds and "seed" in explicit:
        raise UsageError("give --seed N (one seed) or --seeds S,S,... (several), not both")
    return main_learning(args.learning, args.learning_out, args.seeds or (explicit.get("seed", 0),), [],
                         as_json=args.json)


# ----------------------------------------------------------------------------- pbt
def _name_values(items: list[str], flag: str, parse, mutable: tuple[str, ...]) -> dict:
    """``NAME=VALUE`` pairs of a repeatable flag, names checked against the ``mutable`` hyperparameters."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.replace("-", "_")
        if not sep or name not in mutable:
            raise UsageError(f"{flag} {item}: expected NAME=VALUE with NAME one of {', '.join(mutable)}")
        try:
            out[name] = parse(value)
        except ValueError:
            raise UsageError(f"{flag} {item}: cannot read the value {value!r}") from None
    return out


def _pbt_rules(args: argparse.Namespace, optimizer: str, mutable: tuple[str, ...]):
    from impala_rl.pbt.rules import Rules

    defaults = Rules()
    mutate = args.mutate or ["entropy_cost", "learning_rate", "optimizer_epsilon", "grad_norm_clip"]
    names = []
    for name in mutate:
        name = name.replace("-", "_")
        if name == "optimizer_epsilon":  # the seed's RMSProp epsilon: the epsilon of the optimiser in use
            name = "adam_epsilon" if optimizer == "adam" else "rmsprop_epsilon"
        if name not in mutable:
            raise UsageError(f"--mutate {name}: not a hyperparameter PBT can change; choose from "
                             f"{', '.join(mutable)}, optimizer_epsilon")
        names.append(name)

    def bounds_of(text: str) -> tuple[float, float]:
        low, _, high = text.partition(":")
        return float(low), float(high)

    given = _name_values(args.bound or [], "--bound", bounds_of, mutable)
    fallback = {"baseline_cost": (1e-3, 10.0), "adam_epsilon": (1e-10, 1e-2)}
    bounds = {n: given.get(n, defaults.bounds.get(n, fallback.get(n))) for n in names}
    try:
        return Rules(ready_episodes=args.ready_episodes, ready_frames=args.ready_frames, margin=args.margin,
                     factors=tuple(args.perturb_factors), probability=args.perturb_probability, bounds=bounds)
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_pbt(args: argparse.Namespace) -> int:
    from impala_rl.envs import check_env_id
    from impala_rl.logging import setup_logging
    from impala_rl.pbt.run import PopulationConfig, load_population, new_population, run_population
    from impala_rl.runtime.learner import mutable_hyperparameters
    from impala_rl.runtime.train import FINISHED

    if args.resume:
        if _explicit_fields(args) or args.pop_dir:
            raise UsageError("--resume continues a population as it was set up; give no other options")
        try:
            pop, cfgs, pcfg = load_population(args.resume)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
    else:
        explicit = _explicit_fields(args)
        ray_address = explicit.pop("ray_address", "")  # for the population, not for each member's actors
        explicit.setdefault("backend", "serial")  # the population is the parallelism: one process per member
        if explicit["backend"] == "ray":
            raise UsageError("a member's own backend is serial or local; --ray-address runs the population on Ray")
        base, note = _config_with_preset(explicit, preset=args.preset)
        if args.population < 2:
            raise UsageError(f"--population must be at least 2, got {args.population}")
        if args.concurrent < 0 or args.slice_seconds <= 0 or args.max_restarts < 0:
            raise UsageError("--concurrent and --max-restarts must be >= 0 and --slice-seconds > 0")
        try:
            mutable = mutable_hyperparameters(base)
        except ValueError as e:  # an unknown --agent
            raise UsageError(str(e)) from None
        rules = _pbt_rules(args, base.optimizer, mutable)
        initial = _name_values(args.initial or [], "--initial",
                               lambda v: [float(x) for x in v.split(",") if x] or float("x"), mutable)
        try:
            base.validate()
            check_env_id(base.env)
            for name, values in initial.items():
                for v in values:
                    dataclasses.replace(base, **{name: v}).validate()
        except ValueError as e:
            raise UsageError(str(e)) from None
        pop_dir = Path(args.pop_dir or "runs/pbt-" + Path(base.default_run_dir()).name)
        if pop_dir.exists() and (not pop_dir.is_dir() or any(pop_dir.iterdir())):
            raise UsageError(f"--pop-dir {pop_dir} already exists and is not empty; use --resume {pop_dir} "
                             f"or another --pop-dir")
        if note:
            print(note, file=sys.stderr)
        pcfg = PopulationConfig(pop_dir=str(pop_dir), population=args.population, concurrent=args.concurrent,
                                slice_s=args.slice_seconds, max_restarts=args.max_restarts,
                                ray_address=ray_address, member_cpus=args.member_cpus)
        try:
            pop_dir.mkdir(parents=True, exist_ok=True)
            pop, cfgs = new_population(base, pcfg, rules, initial)
        except OSError as e:
            raise UsageError(f"cannot write --pop-dir {pop_dir}: {e.strerror or e}") from None
    setup_logging(None)
    first = next(iter(cfgs.values()))
    print(f"[impala] population of {len(cfgs)} on {first.env}, {first.total_frames} frames each, ready every "
          f"{pop.rules.ready_episodes} episodes"
          f"{f' and {pop.rules.ready_frames} frames' if pop.rules.ready_frames else ''}, mutating {', '.join(pop.rules.bounds)} "
          f"({'Ray' if pcfg.ray_address else 'local processes'}); population dir {pcfg.pop_dir}", file=sys.stderr)
    try:
        summary = run_population(pop, cfgs, pcfg, resume=bool(args.resume))
    except KeyboardInterrupt:
        return 128 + _STOP_SIGNAL.get("signum", signal.SIGINT)
    width = max(len(n) for n in summary["members"])
    for name, m in summary["members"].items():
        final = m["final_100_episode_mean"]
        print(f"{name:<{width}}  final 100-episode mean {final if final is None else round(final, 2)!s:>8}  "
              f"{m.get('stop_reason', '?'):<11} parent {m['parent'] or '-':<{width}}  "
              + " ".join(f"{k}={v:.3g}" for k, v in m["hparams"].items() if k in pop.rules.bounds))
    print(f"best {summary['best']}, median {summary['median']}; {summary['events']} events in "
          f"{Path(pcfg.pop_dir) / 'events.jsonl'}; `impala plot {pcfg.pop_dir}` draws the population")
    return 0 if all(m.get("stop_reason") in FINISHED for m in summary["members"].values()) else 1


# ----------------------------------------------------------------------------- eval / plot
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
    from impala_rl.config import ENV_PRESETS, PRESETS, TrainConfig, flag_value

    defaults = TrainConfig()
    headings = [(f"{family}:", values) for family, values in PRESETS.items()]
    headings += [(f"{env} (on top of its family's preset):", values) for env, values in ENV_PRESETS.items()]
    for heading, values in headings:
        print(heading)
        for name, value in values.items():
            print(f"  --{name.replace('_', '-'):<24} {flag_value(value):<12} (paper default: "
                  f"{flag_value(getattr(defaults, name))})")
    print("Applied to the options not given on the command line; --preset NAME picks one, --no-preset none.")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from impala_rl.plot import plot_runs

    try:
        path = plot_runs(args.run_dirs, args.output, window=args.window, metric=args.metric)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    print(f"learning curves written to {path}")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="impala",
                     description="IMPALA: scalable distributed deep RL with importance-weighted actor-learners.")
    parser.add_argument("--version", action="version", version=f"impala-rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser("train", help="train an agent", description="Train the IMPALA agent. Each environment family "
                           "(atari, classic_control, continuous, minatar) gets a preset chosen from the experiments in "
                           "docs/learning.md, printed at start; the defaults listed below are the paper's Atari values, "
                           "which --no-preset keeps.")
    train.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue a run (frames, optimizer state, LR schedule) from its checkpoint")
    train.add_argument("--config", metavar="PATH", default=None,
                       help="repeat a run from its record: a run directory or its config.json; every value comes "
                       "from the record (no preset is applied on top), flags given beside it win, and it trains "
                       "in a new run directory unless --run-dir is given")
    train.add_argument("--suite", metavar="NAME", default=None,
                       help="train one agent on a named set of environments (multi-task; docs/multitask.md): "
                       "minatar5, minatar3, atari5 (with --full-action-space for one 18-action policy)")
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="measure throughput: env, learner, inference, bound, train, ratio",
                           description="Measure each stage alone and end-to-end training on the same pipeline, "
                           "network and cores; print the table (or --json). Takes every train option.")
    bench.add_argument("--duration", type=float, default=20.0, help="seconds per measured stage (default: 20)")
    bench.add_argument("--warmup", type=float, default=15.0,
                       help="seconds of end-to-end training before measuring (default: 15)")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    bench.add_argument("--learning", metavar="SUITE", default=None,
                       help="instead of throughput, run a learning suite with each task's defaults and print "
                       "frames, final 100-episode mean, frames to threshold, wall time (suites: quick = classic, "
                       "continuous and MinAtar tasks; atari = Pong; mujoco = HalfCheetah, Walker2d; "
                       "all, MountainCar too; or one task name)")
    bench.add_argument("--learning-out", metavar="DIR", default="runs/learning",
                       help="--learning: where the run directories and curve PNGs go (default: runs/learning)")
    from impala_rl.learning_bench import parse_seeds

    bench.add_argument("--seeds", metavar="S,S,...", type=parse_seeds, default=None,
                       help="--learning: run every task once per seed, e.g. 0,1,2 (distinct non-negative integers), "
                       "and report each task over its seeds and the IQM across tasks and seeds (default: --seed, 0)")
    _add_config_flags(bench)
    bench.set_defaults(func=cmd_bench)

    pbt = sub.add_parser("pbt", help="population based training (seed 003's rules)",
                         description="Train a population of runs (each a normal run in <pop-dir>/members/<name>) "
                         "under the IMPALA paper's PBT rules: when ready, a member copies a sufficiently better "
                         "one (weights, optimiser state, hyperparameters), then each hyperparameter may be "
                         "multiplied by a factor. Takes every train option for the members (their backend "
                         "defaults to serial); --ray-address runs the members as Ray actors ('local' starts a "
                         "private Ray on 127.0.0.1, 'auto' or HOST:PORT joins a cluster); docs/pbt.md.")
    pbt.add_argument("--population", type=int, default=4, help="members (default: 4)")
    pbt.add_argument("--ready-episodes", type=int, default=5000,
                     help="episodes between two ready points of a member (default: 5000, the paper's)")
    pbt.add_argument("--ready-frames", type=int, default=0,
                     help="frames a member also trains between two ready points; fitness is still the mean of its "
                     "last --ready-episodes episodes. Give one on small tasks, where a few episodes of members "
                     "that have not learned yet are noise (default: 0, episodes only)")
    pbt.add_argument("--margin", type=float, default=0.05,
                     help="how much better (relative) another member's fitness must be to be copied (default: 0.05)")
    pbt.add_argument("--perturb-factors", type=float, nargs="+", default=[1.2, 1 / 1.2], metavar="F",
                     help="explore multiplies by one of these (default: 1.2 0.8333)")
    pbt.add_argument("--perturb-probability", type=float, default=1 / 3,
                     help="chance that each hyperparameter is perturbed when ready (default: 0.333)")
    pbt.add_argument("--mutate", nargs="+", metavar="NAME", default=None,
                     help="hyperparameters PBT changes (default: entropy_cost learning_rate optimizer_epsilon "
                     "grad_norm_clip, the paper's four; optimizer_epsilon = the epsilon of the optimiser in use)")
    pbt.add_argument("--bound", action="append", metavar="NAME=LOW:HIGH",
                     help="bounds of a mutated hyperparameter (repeatable)")
    pbt.add_argument("--initial", action="append", metavar="NAME=V1,V2,...",
                     help="starting values, given to the members in turn (repeatable), e.g. learning_rate=1e-5,1e-3")
    pbt.add_argument("--pop-dir", default=None, help="the population's directory (default: runs/pbt-<env>-<time>)")
    pbt.add_argument("--resume", metavar="POP_DIR", default=None,
                     help="continue an interrupted population: every member from its checkpoint")
    pbt.add_argument("--concurrent", type=int, default=0,
                     help="members training at a time on this machine; the others wait their turn (default: 0 = all)")
    pbt.add_argument("--slice-seconds", type=float, default=60.0,
                     help="with --concurrent: seconds between turns (default: 60)")
    pbt.add_argument("--max-restarts", type=int, default=3,
                     help="restarts of a member that dies, from its last checkpoint (default: 3)")
    pbt.add_argument("--member-cpus", type=float, default=1.0, help="Ray CPUs per member (default: 1)")
    _add_config_flags(pbt)
    pbt.set_defaults(func=cmd_pbt)

    ev = sub.add_parser("eval", help="evaluate a trained run")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--episodes", type=int, default=10, help="episodes to play (default: 10)")
    ev.add_argument("--sample", action="store_true", help="sample actions instead of the greedy policy")
    ev.add_argument("--video", metavar="PATH", default=None, help="write an mp4 of the first episode")
    ev.add_argument("--seed", type=int, default=12345, help="environment seed (default: 12345)")
    ev.add_argument("--max-steps", type=int, default=None,
                    help="cap on agent steps per episode, so that every episode ends; 0 = none "
                    "(default: the run's --eval-max-steps, 27000)")
    ev.add_argument("--trust-env-module", action="store_true",
                    help="allow a run whose env id is 'module:Env' (or agent 'module:Class') to import that "
                    "module (it runs its code)")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("presets", help="list each environment family's preset values")
    pr.set_defaults(func=cmd_presets)

    pl = sub.add_parser("plot", help="plot learning curves (episode return vs frames)")
    pl.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    pl.add_argument("-o", "--output", default="curve.png", help="output PNG (default: curve.png)")
    pl.add_argument("--window", type=int, default=50, help="episodes in the moving average (default: 50)")
    pl.add_argument("--metric", default="return", help="what to plot: return (episodes.csv), or a column of "
                    "metrics.csv such as entropy, grad_norm, policy_lag_mean (default: return)")
    pl.set_defaults(func=cmd_plot)
    return parser


_STOP_SIGNAL: dict = {}


def _raise_keyboard_interrupt(signum, frame):
    _STOP_SIGNAL.setdefault("signum", signum)
    raise KeyboardInterrupt


def _thread_exception(args) -> None:
    """An OS error in a background thread (TensorBoard's writer on a full disk) goes to
    train.log only: the main thread reports the failure in its one line."""
    import logging
    import threading
    import traceback

    if not issubclass(args.exc_type, OSError):
        return threading.__excepthook__(args)
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    for handler in logging.getLogger("impala_rl").handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:  # None once closed
            try:
                handler.stream.write(f"background thread {args.thread.name if args.thread else '?'}: {text}")
                handler.flush()
            except (OSError, ValueError):
                pass


def main(argv: list[str] | None = None) -> int:
    import threading

    threading.excepthook = _thread_exception
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # SIGTERM = Ctrl-C: final checkpoint, clean exit
        return args.func(args)
    except UsageError as e:
        print(f"impala: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `impala presets | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
