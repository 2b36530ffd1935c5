"""Peak memory (PSS) of a whole process tree: a training run's learner and every actor process.

    python benchmarks/pss.py --pid PID [--seconds 120] [--interval 1]
    python benchmarks/pss.py -- impala train --env ALE/Pong-v5 --total-frames 2000000

Samples ``/proc/<pid>/smaps_rollup`` of the process and all its descendants every
``--interval`` seconds and prints the peak of their summed PSS (proportional set size:
shared pages, such as the rollout slots in shared memory and torch's libraries, counted once
across the processes that map them), with the per-process split at that peak. With a command
after ``--`` it starts the command and watches it to its end (or ``--seconds``).
Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "?"


def watch(pid: int, seconds: float, interval: float, proc: subprocess.Popen | None = None) -> None:
    peak, split = 0, {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and os.path.exists(f"/proc/{pid}") and (proc is None or proc.poll() is None):
        sizes = {p: pss_kib(p) for p in tree(pid)}
        total = sum(sizes.values())
        if total > peak:
            peak, split = total, {p: (s, name(p)) for p, s in sizes.items()}
        time.sleep(interval)
    print(f"peak PSS of the process tree of {pid}: {peak / 1024:.0f} MiB ({len(split)} processes)")
    for p, (s, cmd) in sorted(split.items(), key=lambda kv: -kv[1][0]):
        print(f"  {s / 1024:8.0f} MiB  pid {p}  {cmd}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if (args.pid is None) == (not command):
        p.error("give --pid PID or a command after --")
    if command:
        proc = subprocess.Popen(command)
        try:
            watch(proc.pid, args.seconds if args.seconds else float("inf"), args.interval, proc)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        return 0
    watch(args.pid, args.seconds, args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
