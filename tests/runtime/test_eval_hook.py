"""``--eval-interval``: the evaluation hook plays greedy episodes with the learner's current
weights every N frames and logs ``eval_return``."""

import csv
import json

import pytest

from impala_rl.config import ConfigError, TrainConfig
from impala_rl.runtime.train import Trainer
from impala_rl.runtime.evaluate import evaluate


def test_evaluation_rows_are_logged_every_interval_and_match_impala_eval(tmp_path):
    cfg = TrainConfig.for_env("CartPole-v1", backend="serial", num_actors=1, envs_per_actor=4, total_frames=12_000,
                              run_dir=str(tmp_path / "run"), quiet=True, log_interval=0.01, seed=3,
                              eval_interval=4000, eval_episodes=2)
    Trainer(cfg).run()
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    evals = [(int(r["frames"]), float(r["eval_return"])) for r in rows if r.get("eval_return")]
    # One evaluation at the first update at or past each multiple of 4000 frames (the last update
    # passes 12000 and ends the run).
    per_batch = cfg.frames_per_batch
    assert [f // 4000 for f, _ in evals] == [1, 2, 3] and all(f % 4000 < per_batch for f, _ in evals), evals
    # The last one played the final weights: `impala eval` with its seed gets the same greedy episodes.
    again = evaluate(tmp_path / "run", episodes=2, seed=3 * 1_000_003 + 7919 * 2)
    assert again.mean == evals[-1][1]


def test_evaluation_is_off_by_default_and_bad_values_are_refused(tmp_path):
    cfg = TrainConfig.for_env("CartPole-v1", backend="serial", num_actors=1, envs_per_actor=2, total_frames=2000,
                              run_dir=str(tmp_path / "run"), quiet=True, log_interval=0.01)
    Trainer(cfg).run()
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "eval_return" not in header
    assert json.loads((tmp_path / "run" / "config.json").read_text())["eval_interval"] == 0
    with pytest.raises(ConfigError, match="eval_interval must be >= 0"):
        TrainConfig(eval_interval=-1).validate()
    with pytest.raises(ConfigError, match="eval_episodes must be positive"):
        TrainConfig(eval_episodes=0).validate()
