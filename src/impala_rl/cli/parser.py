"""The ``impala`` command line: its commands and their flags."""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

from __future__ import annotations

import argparse

from impala_rl import __version__
from impala_rl.cli.flags import UsageError, add_config_flags
from impala_rl.cli.pbt import cmd_pbt
from impala_rl.cli.tools import cmd_bench, cmd_eval, cmd_plot, cmd_presets
from impala_rl.cli.train import cmd_train


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="impala",
                     description="IMPALA: scalable distributed deep RL with importance-weighted actor-learners.")
    parser.add_argument("--version", action="version", version=f"impala-rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser("train", help="train an agent", description="Train the IMPALA agent. Each environment family "
                           "(atari, classic_control, continuous, minatar, memory) gets a preset chosen from the experiments in "
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
    add_config_flags(train)
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
                       "continuous and MinAtar tasks; atari = Pong, Breakout, SpaceInvaders; "
                       "mujoco = HalfCheetah, Walker2d; rainbow = Rainbow's CartPole, LunarLander and MinAtar "
                       "targets, and DQN's; memory = IMPALA feed-forward and LSTM, RL-MEM and MERLIN on the memory tasks; "
                       "all = IMPALA's, MountainCar too; or one task name)")
    bench.add_argument("--learning-out", metavar="DIR", default="runs/learning",
                       help="--learning: where the run directories and curve PNGs go; without --learning: where the "
                       "time-to-score line looks for finished runs of the same env (default: runs/learning)")
    from impala_rl.learning_bench import parse_jobs, parse_seeds

    bench.add_argument("--seeds", metavar="S,S,...", type=parse_seeds, default=None,
                       help="--learning: run every task once per seed, e.g. 0,1,2 (distinct non-negative integers), "
                       "and report each task over its seeds and the IQM across tasks and seeds (default: --seed, 0)")
    bench.add_argument("--jobs", metavar="N", type=parse_jobs, default=None,
                       help="--learning: up to N training runs at once (default: 1, each run has the machine); for "
                       "runs that use about one core, e.g. Rainbow's: 2 on 2 cores nearly doubles the suite's pace")
    add_config_flags(bench)
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
    add_config_flags(pbt)
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
    pr.add_argument("--agent", default="impala", help="whose presets: impala (default), rainbow, or module:Class")
    pr.set_defaults(func=cmd_presets)

    pl = sub.add_parser("plot", help="plot learning curves (episode return vs frames)")
    pl.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    pl.add_argument("-o", "--output", default="curve.png", help="output PNG (default: curve.png)")
    pl.add_argument("--window", type=int, default=50, help="episodes in the moving average (default: 50)")
    pl.add_argument("--metric", default="return", help="what to plot: return (episodes.csv), or a column of "
                    "metrics.csv such as entropy, grad_norm, policy_lag_mean (default: return)")
    pl.add_argument("--x", default="frames", help="the x axis: frames (environment frames, the default) or "
                    "wall (wall-clock minutes since the run started, resumes included: agents of different "
                    "speeds compared at equal time)")
    pl.set_defaults(func=cmd_plot)
    return parser
