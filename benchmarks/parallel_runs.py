"""How many training runs to put on this machine at once: each run's speed alone and side by side.

    python benchmarks/parallel_runs.py [--jobs 1,2,3] [--warmup 45] [--duration 60] -- TRAIN OPTIONS

For each N of ``--jobs``, in turn and in one sitting (the host's speed drifts: compare
within one invocation), starts N identical ``impala train TRAIN OPTIONS`` processes (seeds
0..N-1, each in its own temporary run directory), waits ``--warmup`` seconds (start-up and
the replay's warm-up), then reads each run's ``metrics.csv`` at the start and the end of
``--duration`` seconds and prints its frames/s, the sum over the N runs, and the sum
against one run alone. The runs are then interrupted and their directories removed.

A run that leaves cores idle (Rainbow's learner sets the pace of its run and uses about
one core; a serial run with ``--learner-threads 1`` uses one) gains from a second run beside
it; IMPALA's local backend already fills every core. ``impala bench --learning SUITE
--jobs N`` runs a learning suite N runs at a time. Nothing is asserted; the figures go to
BENCHMARKS.md with the command that produced them. Example (issue 21's ablation runs)::

    python benchmarks/parallel_runs.py --jobs 1,2,3 -- --agent rainbow --env MinAtar/Breakout-v1
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from impala_rl.learning_bench import parse_jobs


def last_row(run_dir: Path) -> tuple[float, float] | None:
    """(frames, elapsed_s) of the newest row of ``run_dir``'s metrics.csv, or None before the first."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return (float(rows[-1]["frames"]), float(rows[-1]["elapsed_s"])) if rows else None


def measure(n: int, train: list[str], warmup: float, duration: float) -> list[float]:
    """Frames/s of each of ``n`` runs started together (nan for a run that logged nothing)."""
    with tempfile.TemporaryDirectory(prefix="parallel_runs_") as tmp:
        dirs = [Path(tmp) / f"run{i}" for i in range(n)]
        procs = [subprocess.Popen([sys.executable, "-m", "impala_rl.cli", "train", *train, "--seed", str(i),
                                   "--total-frames", str(10 ** 10), "--log-interval", "5", "--quiet",
                                   "--run-dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i, d in enumerate(dirs)]
        try:
            time.sleep(warmup)
            start = [last_row(d) for d in dirs]
            time.sleep(duration)
            end = [last_row(d) for d in dirs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)  # a run ends on SIGTERM with its final checkpoint (SIGINT may be ignored in the background)
            errors = [p.communicate(timeout=120)[1] for p in procs]
        for p, err in zip(procs, errors):
            if p.returncode not in (0, -signal.SIGTERM, 143):
                sys.exit(f"impala train exited with {p.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    return [(e[0] - s[0]) / (e[1] - s[1]) if s and e and e[1] > s[1] else float("nan") for s, e in zip(start, end)]


def main() -> int:
    argv = sys.argv[1:]
    train = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=lambda text: tuple(parse_jobs(n) for n in text.split(",")), default=(1, 2),
                   metavar="N,N,...",
                   help="how many runs at once, in turn (default: 1,2)")
    p.add_argument("--warmup", type=float, default=45.0, help="seconds before measuring (default: 45)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds measured (default: 60)")
    a = p.parse_args(argv)
    if not train:
        p.error("give the training options after -- (e.g. -- --agent rainbow --env MinAtar/Breakout-v1)")
    print(f"{os.cpu_count()} cores; impala train {' '.join(train)}; warm-up {a.warmup:g} s, measured {a.duration:g} s")
    print("| runs at once | frames/s of each run | sum | sum / one run alone |")
    print("| ---: | --- | ---: | ---: |")
    alone = None
    for n in a.jobs:
        fps = measure(n, train, a.warmup, a.duration)
        total = sum(fps)
        alone = alone or (total if n == 1 else None)
        ratio = f"{total / alone:.2f}" if alone else "-"
        print(f"| {n} | {', '.join(f'{f:.0f}' for f in fps)} | {total:.0f} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
