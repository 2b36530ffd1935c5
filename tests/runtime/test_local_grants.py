"""The local backend keeps actors busy while the learner waits for a batch larger than
what the actors may hold at once (regression: it used to grant slots only in get_batch)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_batch_larger_than_the_actors_hold_at_once(tmp_path):
    run_dir = tmp_path / "run"
    # 1 actor x 4 envs holds at most 8 slots; a batch needs 16 full ones.
    proc = subprocess.run(
        [sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1", "--num-actors", "1",
         "--envs-per-actor", "4", "--batch-size", "16", "--total-frames", "6400", "--run-dir", str(run_dir),
         "--quiet"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "done" and summary["frames"] >= 6400
