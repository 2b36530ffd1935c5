"""Learning tests: the README's promise that a run learns, with fixed seeds and budgets,
each run with its family's preset (no tuning flags) through the real CLI. Each run stops
as soon as its threshold is reached (``--stop-at-return``: the 100-episode mean, as the
targets are stated) and must do so within its budget of frames (``stop_reason`` 'target',
not 'done'). This file holds the Pendulum, MinAtar Breakout and two-task tests;
tests/e2e/test_e2e_learning_cartpole.py the CartPole (serial, local, replay) and Acrobot ones.

- CartPole-v1 (random policy: mean return about 22) must reach a mean episode return of
  at least 400 over the last 100 episodes within the classic-control preset's 500k
  frames, in serial mode and with the asynchronous local backend (several actor
  processes). The local run must also really be off-policy: batches with policy lag > 0.
- Pendulum-v1 (diagonal Gaussian policy; random: about -1200) must reach -400 within 700k
  frames of a 1M-frame run (the learning rate anneals over the 1M), serially. Seeds 0-4 on
  an Intel Xeon (2026-12-05) reached -400 at 0.31, 0.34, 0.40, 0.37 and 0.34M frames (ended at -184 to -213 at 1M): the
  budget leaves 1.75x the slowest. (The old test, -400 within a 400k-frame run, failed on
  that CPU: with the schedule ending at 400k, seeds 0-4 ended at -858 to -978; the serial run
  is deterministic on one CPU, not across CPUs.)
- MinAtar Breakout (the conv torso; random: 0.5) must reach 4 within 500k frames, on the
  local backend: seeds 0-4 on an Intel Xeon (2026-12-05) reached it at 0.09-0.135M (3.7x margin).
- Rainbow on MinAtar Breakout (``--agent rainbow``, its MinAtar preset: the conv torso, the
  replay, all six components), serially with one learner thread, must reach 2.0 (4x random)
  within a 100k-frame run: seeds 0-4 on an Intel Xeon (2026-12-07, these runs without the
  stop) reached it at 32, 42, 25, 45 and 29k frames (2.2x margin) and ended at 1.75-3.35.
- CartPole-v1 with experience replay (``--replay-proportion 0.5``: half of every batch
  replayed, policy lag in the hundreds of updates) must reach 400 within the preset's 500k
  frames, serially.
- Two tasks whose rewards are 1000x apart (CartPole, and CartPole with every reward
  multiplied by 1000, a wrapper in tests/runtime/impala_test_envs.py), one agent with
  ``--popart``: each task's 100-episode mean must reach 300 steps (random: about 22)
  within 600k frames in all, serially: seeds 0-4 (Intel Xeon, 2026-12-05) reached it at
  0.18-0.20M (3x margin).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

THRESHOLD = 400.0

# Slow: each test trains to a return threshold. Exclusive: a serial run's learner takes every
# core (2 threads here), so it slows several-fold when another test shares the 2 cores (the
# serial Pendulum run: 66 s alone, over 5 min beside another learning test); on the local
# backend (MinAtar Breakout) the policy lag, and so the result, depends on the machine's load.
pytestmark = [pytest.mark.slow, pytest.mark.exclusive]


TEST_ENVS_DIR = Path(__file__).resolve().parents[1] / "runtime"  # impala_test_envs.py


def _train(tmp_path: Path, *flags: str, env: str = "CartPole-v1", seed: int = 1) -> tuple[dict, list[dict]]:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "impala_rl.cli", "train", "--env", env, "--seed", str(seed),
           "--run-dir", str(run_dir), "--quiet", "--log-interval", "2", *flags]
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TEST_ENVS_DIR),
                                                                           os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=environ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return summary, rows


@pytest.mark.parametrize("env,total_frames,threshold,within,backend", [
    # Serial: on the local backend the result varied with the machine's load; the serial run
    # is deterministic on one CPU.
    ("Pendulum-v1", 1_000_000, -400.0, 700_000, "serial"),
    ("MinAtar/Breakout-v1", 500_000, 4.0, 500_000, "local"),
])
def test_gaussian_and_conv_policies_learn(tmp_path, env, total_frames, threshold, within, backend):
    summary, _ = _train(tmp_path, "--total-frames", str(total_frames), "--backend", backend, "--stop-at-return",
                        str(threshold), env=env, seed=0)
    assert_reached(summary, threshold, within)


def test_rainbow_learns_minatar_breakout(tmp_path):
    summary, rows = _train(tmp_path, "--agent", "rainbow", "--backend", "serial", "--learner-threads", "1",
                           "--total-frames", "100000", "--stop-at-return", "2.0", env="MinAtar/Breakout-v1", seed=0)
    assert_reached(summary, 2.0, 100_000)
    assert float(rows[-1]["target_updates"]) >= 1  # the target network was refreshed on the way


def assert_reached(summary: dict, threshold: float, frames: int) -> None:
    """The run stopped because its 100-episode mean reached ``threshold``, within ``frames``."""
    assert summary["stop_reason"] == "target" and summary["frames"] <= frames, summary
    assert summary["mean_return"] >= threshold, summary


def test_two_tasks_with_rewards_a_thousand_times_apart_both_learn_with_popart(tmp_path):
    env = "CartPole-v1,impala_test_envs:ImpalaTest/CartPoleX1000-v1"
    summary, rows = _train(tmp_path, "--popart", "--total-frames", "600000", "--backend", "serial",
                           "--stop-at-return", "300,300000", env=env, seed=0)
    assert summary["stop_reason"] == "target" and summary["frames"] <= 600_000, summary
    last = rows[-1]
    steps = {"CartPole": float(last["return_CartPole"]), "CartPoleX1000": float(last["return_CartPoleX1000"]) / 1000}
    assert min(steps.values()) >= 300, steps
    sigma = float(last["popart_sigma_CartPoleX1000"]) / float(last["popart_sigma_CartPole"])
    assert 100 < sigma < 10_000, sigma  # each task's statistics follow its own reward scale
