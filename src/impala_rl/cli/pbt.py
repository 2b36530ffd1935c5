"""``impala pbt``: its flags read into PBT's rules and starting values, and the population run."""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from impala_rl.cli.flags import UsageError, explicit_fields
from impala_rl.cli.signals import interrupted_exit_code
from impala_rl.cli.train import config_with_preset


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
        if explicit_fields(args) or args.pop_dir:
            raise UsageError("--resume continues a population as it was set up; give no other options")
        try:
            pop, cfgs, pcfg = load_population(args.resume)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
    else:
        explicit = explicit_fields(args)
        ray_address = explicit.pop("ray_address", "")  # for the population, not for each member's actors
        explicit.setdefault("backend", "serial")  # the population is the parallelism: one process per member
        if explicit["backend"] == "ray":
            raise UsageError("a member's own backend is serial or local; --ray-address runs the population on Ray")
        base, note = config_with_preset(explicit, preset=args.preset)
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
        return interrupted_exit_code()
    width = max(len(n) for n in summary["members"])
    for name, m in summary["members"].items():
        final = m["final_100_episode_mean"]
        print(f"{name:<{width}}  final 100-episode mean {final if final is None else round(final, 2)!s:>8}  "
              f"{m.get('stop_reason', '?'):<11} parent {m['parent'] or '-':<{width}}  "
              + " ".join(f"{k}={v:.3g}" for k, v in m["hparams"].items() if k in pop.rules.bounds))
    print(f"best {summary['best']}, median {summary['median']}; {summary['events']} events in "
          f"{Path(pcfg.pop_dir) / 'events.jsonl'}; `impala plot {pcfg.pop_dir}` draws the population")
    return 0 if all(m.get("stop_reason") in FINISHED for m in summary["members"].values()) else 1
