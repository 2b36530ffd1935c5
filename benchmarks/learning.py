"""Learning benchmark: named suites of training runs with fixed seeds, one table of results.

    python benchmarks/learning.py SUITE [--out DIR] [--seed N] [--frames N] [--json] [-- train options]

SUITE: quick (CartPole, Pendulum, LunarLander, MinAtar Breakout and SpaceInvaders), atari
(Pong), mujoco (HalfCheetah), all, or one task name. Without train options every task runs
with the README's defaults (its preset); options after ``--`` go to every `impala train`
(for ablations). The same as `impala bench --learning SUITE` (see impala_rl/learning_bench.py).
"""

import argparse
import sys

from impala_rl.learning_bench import SUITES, TASKS, main_learning

if __name__ == "__main__":
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suite", choices=[*SUITES, *TASKS])
    p.add_argument("--out", default="runs/learning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=None, help="override every task's frame budget")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    sys.exit(main_learning(a.suite, a.out, a.seed, extra, as_json=a.json, frames=a.frames))
