"""Throughput benchmark: the same as `impala bench` (see impala_rl/bench.py).

    python benchmarks/throughput.py [impala bench options, e.g. --duration 30 --json]
"""

import sys

from impala_rl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
