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


def test_every_evaluation_episode_ends_in_an_environment_that_never_does(tmp_path):
    """ImpalaTest/Endless-v0 never terminates and has no time limit (reward 1 per step): the
    hook's greedy episodes and `impala eval`'s stop at their step caps and say so."""
    cfg = TrainConfig.for_env("impala_test_envs:ImpalaTest/Endless-v0", backend="serial", num_actors=1,
                              envs_per_actor=2, total_frames=2000, run_dir=str(tmp_path / "run"), quiet=True,
                              log_interval=0.01, eval_interval=1000, eval_episodes=2, eval_max_steps=40)
    Trainer(cfg).run()
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        evals = [float(r["eval_return"]) for r in csv.DictReader(f) if r.get("eval_return")]
    assert evals and all(r == 40.0 for r in evals), evals
    lines = []
    result = evaluate(tmp_path / "run", episodes=3, max_steps=25, trust_env_module=True, progress=lines.append)
    assert result.lengths == [25, 25, 25] and result.returns == [25.0, 25.0, 25.0]
    assert len(lines) == 3 and all("stopped at the 25-step cap" in line for line in lines), lines
    assert lines[0].endswith("episode 1/3: return 25.00 in 25 steps (stopped at the 25-step cap)"), lines
    # Without --max-steps, the run's own cap (eval_max_steps) applies.
    assert evaluate(tmp_path / "run", episodes=1, trust_env_module=True).lengths == [40]


def test_eval_max_steps_must_not_be_negative():
    with pytest.raises(ConfigError, match="eval_max_steps must be >= 0"):
        TrainConfig(eval_max_steps=-1).validate()
