"""RunLogger: metrics.csv columns come from what was recorded; nothing is dropped."""

import csv

from impala_rl.logging import PROGRESS_COLUMNS, RunLogger
from impala_rl.runtime.actor import EpisodeStats


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_recorded_metric_becomes_a_column_even_one_that_appears_later(tmp_path):
    log = RunLogger(tmp_path, total_frames=100, interval=1e9, quiet=True, tensorboard=False)
    log.record(10, {"pg_loss": 1.0, "my_agent_metric": 2.0}, [EpisodeStats(5.0, 3)], {"actor_restarts": 0.0})
    log.flush(10)
    log.record(20, {"pg_loss": 3.0, "my_agent_metric": 4.0, "popart_mu": 7.0}, [], {"actor_restarts": 0.0})
    log.flush(20)
    log.close()
    rows = read(tmp_path / "metrics.csv")
    assert list(rows[0])[:len(PROGRESS_COLUMNS)] == list(PROGRESS_COLUMNS)
    assert {"pg_loss", "my_agent_metric", "actor_restarts", "popart_mu"} <= set(rows[0])
    assert [r["my_agent_metric"] for r in rows] == ["2", "4"]
    assert [r["popart_mu"] for r in rows] == ["", "7"]  # widened: the first row has it empty
    assert rows[0]["episode_return"] == "5"

    # A resumed run appends under the same header.
    log = RunLogger(tmp_path, total_frames=100, start_frames=20, interval=1e9, quiet=True, tensorboard=False)
    log.record(30, {"pg_loss": 5.0, "my_agent_metric": 6.0, "popart_mu": 8.0}, [], {"actor_restarts": 0.0})
    log.flush(30)
    log.close()
    rows = read(tmp_path / "metrics.csv")
    assert [r["frames"] for r in rows] == ["10", "20", "30"] and rows[2]["popart_mu"] == "8"
