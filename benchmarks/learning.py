"""Learning benchmark: named suites of training runs with fixed seeds, one table of results.

    python benchmarks/learning.py SUITE [--out DIR] [--seed N | --seeds 0,1,2] [--frames N] [--json]
                                        [--jobs N] [-- train options]

SUITE: quick (CartPole, Acrobot, Pendulum, LunarLander, MinAtar Breakout and SpaceInvaders),
atari (Pong), mujoco (HalfCheetah, Walker2d), all (these and MountainCar), or one task name.
--seeds runs every task once per seed (distinct non-negative integers separated by commas)
and reports each task over its seeds plus the IQM of normalised scores across tasks and
seeds; --seed N (default 0) runs one seed. Without train options every task runs with the
README's defaults (its preset); options after ``--`` go to every `impala train` (for
ablations). The same as `impala bench --learning SUITE` (see impala_rl/learning_bench.py).
"""

import argparse
import sys

from impala_rl.learning_bench import SUITES, TASKS, main_learning, parse_jobs, parse_seeds

if __name__ == "__main__":
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suite", choices=[*SUITES, *TASKS])
    p.add_argument("--out", default="runs/learning")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=0, help="run one seed (default: 0)")
    seed.add_argument("--seeds", type=parse_seeds, metavar="S,S,...",
                      help="run every task once per seed, e.g. 0,1,2")
    p.add_argument("--frames", type=int, default=None, help="override every task's frame budget")
    p.add_argument("--json", action="store_true")
    p.add_argument("--jobs", type=parse_jobs, default=1, metavar="N", help="training runs at once (default: 1)")
    a = p.parse_args(argv)
    sys.exit(main_learning(a.suite, a.out, a.seeds or (a.seed,), extra, as_json=a.json, frames=a.frames, jobs=a.jobs))
