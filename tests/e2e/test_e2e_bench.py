"""`impala bench` runs every stage and reports the ratio (figures themselves are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_json_has_every_stage_and_a_consistent_ratio():
    proc = subprocess.run(
        [sys.executable, "-m", "impala_rl.cli", "bench", "--env", "CartPole-v1", "--duration", "1",
         "--warmup", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    for key in ("env_fps", "learner_fps", "inference_fps", "bound_fps", "train_fps", "ratio"):
        assert result[key] > 0, key
    expected_bound = 1 / (1 / result["env_fps"] + 1 / result["learner_fps"] + 1 / result["inference_fps"])
    assert abs(result["bound_fps"] - expected_bound) < 1e-6 * expected_bound
    assert abs(result["ratio"] - result["train_fps"] / result["bound_fps"]) < 1e-9
    assert set(result["learner_breakdown"]) >= {"wait_batch", "forward", "backward", "optimizer", "publish"}
    assert set(result["actor_breakdown"]) >= {"env", "inference", "wait_slots"}
    # the local backend's two actor processes and the learner, each with its CPU share
    assert set(result["cpu_share"]) == {"learner", "actor 0", "actor 1"}
    assert all(0 < v < 4 for v in result["cpu_share"].values()), result["cpu_share"]
    assert result["policy_lag"] >= 0


def test_bench_table_and_bad_input():
    proc = subprocess.run([sys.executable, "-m", "impala_rl.cli", "bench", "--env", "CartPole-v1",
                           "--duration", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("impala: error:")


def test_cpu_seconds_counts_this_process_and_is_nan_for_no_process():
    import math
    import os

    from impala_rl.bench import cpu_seconds

    before = cpu_seconds(os.getpid())
    x = 0
    for i in range(3_000_000):  # about 0.1-0.3 s of CPU
        x += i
    assert cpu_seconds(os.getpid()) > before
    assert math.isnan(cpu_seconds(2**22 + 12345))  # above Linux's pid_max
