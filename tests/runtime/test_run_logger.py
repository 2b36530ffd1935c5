"""RunLogger: metrics.csv columns come from what was recorded; nothing is dropped."""

import csv

import numpy as np
import pytest

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


def test_a_resume_drops_what_was_logged_past_the_checkpoint_and_continues_the_counters(tmp_path):
    log = RunLogger(tmp_path, total_frames=100, interval=1e9, quiet=True, tensorboard=False)
    for frames in (10, 20, 30, 40):  # the checkpoint was at 20; 30 and 40 were logged before a SIGKILL
        log.record(frames, {"pg_loss": 1.0}, [EpisodeStats(float(frames), 1)], {})
        log.flush(frames)
    log.close()
    log = RunLogger(tmp_path, total_frames=100, start_frames=20, interval=1e9, quiet=True, tensorboard=False,
                    start_steps=2, start_elapsed=100.0)
    log.record(30, {"pg_loss": 2.0}, [EpisodeStats(99.0, 1)], {})
    log.flush(30)
    log.close()
    rows = read(tmp_path / "metrics.csv")
    assert [r["frames"] for r in rows] == ["10", "20", "30"]
    assert rows[-1]["learner_steps"] == "3" and float(rows[-1]["elapsed_s"]) >= 100.0
    episodes = read(tmp_path / "episodes.csv")
    assert [(e["frames"], e["return"]) for e in episodes] == [("10", "10"), ("20", "20"), ("30", "99")]


def test_a_multitask_run_logs_each_tasks_returns_and_human_normalised_scores(tmp_path):
    log = RunLogger(tmp_path, total_frames=100, interval=1e9, quiet=True, tensorboard=False,
                    tasks=("ALE/Pong-v5", "ALE/Breakout-v5"))
    log.record(10, {}, [EpisodeStats(14.6, 9, task=0), EpisodeStats(-20.7, 9, task=0), EpisodeStats(30.5, 5, task=1)],
               {})
    row = log.flush(10)
    log.close()
    assert row["return_Pong"] == -3.05 and row["episodes_Pong"] == 2 and row["return_Breakout"] == 30.5
    assert row["hns_Pong"] == pytest.approx(50.0) and row["hns_Breakout"] == pytest.approx(100.0)
    assert row["hns_median"] == pytest.approx(75.0) and row["hns_capped_mean"] == pytest.approx(75.0)
    episodes = read(tmp_path / "episodes.csv")
    assert [e["task"] for e in episodes] == ["Pong", "Pong", "Breakout"]
    assert read(tmp_path / "metrics.csv")[0]["return_Breakout"] == "30.5"


def test_a_single_atari_game_gets_its_human_normalised_score(tmp_path):
    log = RunLogger(tmp_path, total_frames=100, interval=1e9, quiet=True, tensorboard=False, tasks=("ALE/Pong-v5",))
    log.record(10, {}, [EpisodeStats(-3.05, 9)], {})
    assert log.flush(10)["hns"] == pytest.approx(50.0)
    log.close()


def test_the_episodes_header_is_on_disk_at_once_and_an_empty_file_gets_one_on_resume(tmp_path):
    """A run killed before its buffered rows reached the disk leaves an empty episodes.csv
    (seen with a PBT member SIGKILLed early): its resume must still write the header."""
    log = RunLogger(tmp_path, total_frames=100, interval=1e9, quiet=True, tensorboard=False)
    assert (tmp_path / "episodes.csv").read_text().startswith("frames,return,length")  # before any close
    log.close()
    (tmp_path / "episodes.csv").write_text("")
    log = RunLogger(tmp_path, total_frames=100, start_frames=10, interval=1e9, quiet=True, tensorboard=False)
    log.record(20, {}, [EpisodeStats(9.0, 4)], {})
    log.close()
    assert read(tmp_path / "episodes.csv") == [{"frames": "20", "return": "9", "length": "4"}]


def test_an_episodes_file_without_its_header_is_a_clear_error(tmp_path):
    from impala_rl.plot import read_episodes

    (tmp_path / "episodes.csv").write_text("120,9,4\n")
    with pytest.raises(ValueError, match="has no header line with frames and return"):
        read_episodes(tmp_path)


def test_plot_colours_the_seeds_of_one_setting_alike():
    from impala_rl.plot import run_colours

    labels = ["merlin-task-seed0", "merlin-task-seed1", "lstm-task-seed0", "lstm-task-seed1", "other", "merlin-task-seed2"]
    assert run_colours(labels) == ["C0", "C0", "C1", "C1", "C2", "C0"]
    assert run_colours(["a", "b"]) == ["C0", "C1"]  # runs without seeds: one colour each, as before


def test_plot_draws_raw_returns_only_where_they_stay_readable(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from impala_rl.plot import RAW_TRACE_MAX_POINTS, _draw

    rng = np.random.default_rng(0)
    few, many = 50, RAW_TRACE_MAX_POINTS + 1
    data = [(str(tmp_path / "few"), np.arange(few), rng.integers(0, 2, few).astype(float)),
            (str(tmp_path / "many"), np.arange(many), rng.integers(0, 2, many).astype(float))]
    fig, ax = plt.subplots()
    _draw(ax, data, 10, "return")
    lengths = sorted(len(line.get_xdata()) for line in ax.lines)
    plt.close(fig)
    # the short run: raw trace and moving average; the long one: its moving average alone
    assert lengths == [few, few, many]


def test_wall_minutes_follow_the_logged_elapsed_time(tmp_path):
    from impala_rl.runfiles import wall_minutes

    (tmp_path / "metrics.csv").write_text("frames,elapsed_s,fps\n100,60,1.7\n300,180,1.7\n700,240,6.7\n")
    got = wall_minutes(tmp_path, np.array([0.0, 50.0, 100.0, 200.0, 500.0, 700.0]))
    # 0 at frame 0, linear between logged rows: 50 frames into the first 100 took half its minute
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 2.0, 3.5, 4.0])


def test_plot_against_wall_time_and_a_wrong_axis(tmp_path):
    from impala_rl.plot import plot_runs

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("frames,elapsed_s\n1000,30\n2000,90\n")
    (run / "episodes.csv").write_text("frames,return,length\n500,1,5\n1500,3,5\n2000,4,5\n")
    png = plot_runs([str(run)], tmp_path / "wall.png", window=2, x="wall")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown x axis 'time'; accepted: frames, wall"):
        plot_runs([str(run)], tmp_path / "bad.png", x="time")
    assert not (tmp_path / "bad.png").exists()
    (run / "metrics.csv").write_text("frames,fps\n1000,30\n")  # a file without the elapsed time
    with pytest.raises(ValueError, match="no column 'elapsed_s'"):
        plot_runs([str(run)], tmp_path / "bad.png", x="wall")
    assert not (tmp_path / "bad.png").exists()
