"""The learning benchmark's arithmetic and its command line (the suites themselves are
benchmarks, run by hand: BENCHMARKS.md)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from impala_rl.learning_bench import SUITES, TASKS, format_table, frames_to_threshold, summarise


def test_frames_to_threshold_needs_a_full_window_at_the_threshold():
    frames = np.arange(1, 301) * 1000.0
    returns = np.r_[np.zeros(150), np.full(150, 10.0)]
    # The trailing 100-episode mean first reaches 5 when 50 of the last 100 episodes score 10.
    assert frames_to_threshold(frames, returns, 5.0) == frames[199]
    assert frames_to_threshold(frames, returns, 10.0) == frames[249]
    assert math.isnan(frames_to_threshold(frames, returns, 10.5))
    assert math.isnan(frames_to_threshold(frames[:50], returns[:50] + 100, 5.0))  # never a full window


def test_every_suite_names_known_tasks():
    assert set(SUITES["quick"]) <= set(TASKS) and SUITES["atari"] == ("pong",)
    assert set(SUITES["all"]) == set(TASKS)


def test_summarise_reads_a_run_directory_and_draws_its_curve(tmp_path):
    run = tmp_path / "cartpole-seed0"
    run.mkdir()
    rows = ["frames,return,length"] + [f"{1000 * i},{min(500, 5 * i)},{min(500, 5 * i)}" for i in range(1, 201)]
    (run / "episodes.csv").write_text("\n".join(rows) + "\n")
    (run / "summary.json").write_text(json.dumps({"frames": 200_000, "fps": 1234.5, "elapsed_s": 60.0}))
    result = summarise("cartpole", TASKS["cartpole"], run, 60.0)
    assert result.final_mean == 500.0
    # Episodes 69..168: (5 * (69 + ... + 100) + 68 * 500) / 100 = 475.2, the first full window >= 475.
    assert result.frames_to_threshold == 168_000.0
    assert (tmp_path / "cartpole.png").read_bytes()[:4] == b"\x89PNG"
    table = format_table([result])
    assert "| cartpole | CartPole-v1 | 0.20M |" in table and "0.17M" in table


def test_cli_refuses_an_unknown_suite_and_tuning_flags(tmp_path):
    def bench(*args):
        return subprocess.run([sys.executable, "-m", "impala_rl.cli", "bench", *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)

    proc = bench("--learning", "quik")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "quick" in proc.stderr
    proc = bench("--learning", "quick", "--learning-rate", "0.1")
    assert proc.returncode == 2 and "--learning-rate" in proc.stderr and "benchmarks/learning.py" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_task_whose_run_fails_ends_the_suite_in_one_line(tmp_path):
    stray = tmp_path / "cartpole-seed0"
    stray.mkdir(parents=True)
    (stray / "train.log").write_text("a run that died before its first checkpoint\n")
    proc = subprocess.run([sys.executable, "benchmarks/learning.py", "cartpole", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "already holds files but no checkpoint" in proc.stderr
    assert lines[-1] == "[learning] cartpole: impala train exited with 2 (its message is above); the suite stops here"
