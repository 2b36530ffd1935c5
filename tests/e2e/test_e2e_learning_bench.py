"""The learning benchmark's arithmetic and its command line (the suites themselves are
benchmarks, run by hand: BENCHMARKS.md)."""

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from impala_rl import learning_bench
from impala_rl.agents.rainbow import agent as rainbow_agent
from impala_rl.learning_bench import (DQN, RAINBOW_COMPONENTS, SUITES, TASKS, aggregate, format_report, format_table,
                                      frames_to_threshold, run_task, summarise, summarise_seeds)

ROOT = Path(__file__).resolve().parents[2]


def test_frames_to_threshold_needs_a_full_window_at_the_threshold():
    frames = np.arange(1, 301) * 1000.0
    returns = np.r_[np.zeros(150), np.full(150, 10.0)]
    # The trailing 100-episode mean first reaches 5 when 50 of the last 100 episodes score 10.
    assert frames_to_threshold(frames, returns, 5.0) == frames[199]
    assert frames_to_threshold(frames, returns, 10.0) == frames[249]
    assert math.isnan(frames_to_threshold(frames, returns, 10.5))
    assert math.isnan(frames_to_threshold(frames[:50], returns[:50] + 100, 5.0))  # never a full window


def test_every_suite_names_known_tasks():
    assert set(SUITES["quick"]) <= set(TASKS) and SUITES["atari"] == ("pong", "breakout", "spaceinvaders")
    assert set(SUITES["all"]) | set(SUITES["rainbow"]) | set(SUITES["memory"]) | set(SUITES["rainbow-ablation"]) == set(TASKS)
    assert not any(TASKS[name].flags for name in SUITES["all"])  # IMPALA's tasks with its presets
    beside = [name for name in SUITES["rainbow"] if TASKS[name].flags[:2] != ("--agent", "rainbow")]
    assert beside == ["minatar-breakout", "minatar-spaceinvaders"]  # IMPALA's preset on Rainbow's MinAtar tasks
    assert all(TASKS[name].env == TASKS[f"rainbow-{name}"].env and not TASKS[name].flags for name in beside)
    assert RAINBOW_COMPONENTS == rainbow_agent.COMPONENTS
    ablation = {name: TASKS[name].flags[-1] for name in SUITES["rainbow-ablation"]}
    assert len(ablation) == 14 and ablation["breakout2m-dqn"] == DQN[-1]
    assert ablation["breakout2m-rainbow-no-noisy"] == ("double=true,prioritized=true,dueling=true,multistep=true,"
                                                      "distributional=true,noisy=false")
    assert ablation["breakout2m-dqn-plus-multistep"] == ("double=false,prioritized=false,dueling=false,multistep=true,"
                                                        "distributional=false,noisy=false")
    assert len(SUITES["memory"]) == 16 and {TASKS[n].flags for n in SUITES["memory"]} == {
        ("--no-use-lstm",), (), ("--agent", "merlin", "--agent-options", "mbp_loss=false"), ("--agent", "merlin")}
    assert "mountaincar" not in {name for suite, names in SUITES.items() if suite != "all" for name in names}
    assert all(t.random < t.threshold for t in TASKS.values())  # a normalised score of 1 is above random's 0


def test_the_cli_parser_can_import_the_suites_without_torch():
    """cli/parser.py imports this module for every command: it must not pull torch in (1.5 s)."""
    code = "import sys, impala_rl.learning_bench; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_summarise_reads_a_run_directory(tmp_path):
    run = tmp_path / "cartpole-seed0"
    run.mkdir()
    rows = ["frames,return,length"] + [f"{1000 * i},{min(500, 5 * i)},{min(500, 5 * i)}" for i in range(1, 201)]
    (run / "episodes.csv").write_text("\n".join(rows) + "\n")
    (run / "summary.json").write_text(json.dumps({"frames": 200_000, "fps": 1234.5, "elapsed_s": 60.0}))
    result = summarise("cartpole", TASKS["cartpole"], 0, run, 60.0)
    assert result.final_mean == 500.0 and result.seed == 0
    # Episodes 69..168: (5 * (69 + ... + 100) + 68 * 500) / 100 = 475.2, the first full window >= 475.
    assert result.frames_to_threshold == 168_000.0
    table = format_table([result])
    assert "| cartpole | CartPole-v1 | 0.20M |" in table and "0.17M" in table
    assert format_report([result], summarise_seeds([result]), None) == table  # one run: its row, no aggregate


# Two tasks x three seeds of constant returns: a run's final 100-episode mean is its constant,
# and a run at or above the threshold reaches it with its first full window (episode 100).
FINALS = {"cartpole": (400.0, 500.0, 480.0), "acrobot": (-90.0, -150.0, -300.0)}


def fake_run(out: Path, task: str, seed: int, value: float, episodes: int = 200) -> None:
    run = out / f"{task}-seed{seed}"
    run.mkdir(parents=True)
    rows = ["frames,return,length"] + [f"{1000 * i},{value},{i}" for i in range(1, episodes + 1)]
    (run / "episodes.csv").write_text("\n".join(rows) + "\n")
    (run / "summary.json").write_text(json.dumps({"frames": 1000 * episodes, "fps": 2000.0, "elapsed_s": 600.0}))


@pytest.fixture
def fake_suite(tmp_path):
    for task, finals in FINALS.items():
        for seed, value in enumerate(finals):
            fake_run(tmp_path, task, seed, value)
    # As main_learning runs them, seed by seed; finished run directories are summarised, not re-run.
    results = [run_task(task, tmp_path, seed, []) for seed in range(3) for task in FINALS]
    return results, summarise_seeds(results)


def test_each_task_is_summarised_over_its_seeds(fake_suite):
    _, (cartpole, acrobot) = fake_suite
    assert (cartpole.task, acrobot.task) == ("cartpole", "acrobot") and cartpole.seeds == [0, 1, 2]
    assert cartpole.finals == [400.0, 500.0, 480.0]
    assert (cartpole.mean, cartpole.min, cartpole.max) == (460.0, 400.0, 500.0)
    assert (acrobot.mean, acrobot.min, acrobot.max) == (-180.0, -300.0, -90.0)
    assert (cartpole.met, acrobot.met) == (2, 1)
    # The median counts a seed that never reached the threshold as never: two of three did by 100k frames.
    assert cartpole.median_frames_to_threshold == 100_000.0 and math.isnan(acrobot.median_frames_to_threshold)
    assert cartpole.wall_s == 1800.0 and cartpole.frames == 200_000.0
    assert cartpole.normalised == pytest.approx([(v - 22) / (475 - 22) for v in FINALS["cartpole"]])
    assert acrobot.normalised == pytest.approx([1.025, 0.875, 0.5])  # (final + 500) / 400


def test_the_iqm_of_normalised_scores_and_its_bootstrap_interval(fake_suite):
    _, tasks = fake_suite
    agg = aggregate(tasks)
    scores = sorted(s for t in tasks for s in t.normalised)
    assert (agg["runs"], agg["met"], agg["tasks"], agg["seeds"]) == (6, 3, 2, 3)
    assert agg["iqm"] == pytest.approx(np.mean(scores[1:-1]))  # six scores: the middle four
    assert scores[0] <= agg["iqm"] <= scores[-1]
    lo, hi = agg["iqm_ci"]
    assert lo <= agg["iqm"] <= hi and lo < hi
    np.random.seed(1)
    assert aggregate(tasks) == agg  # a fixed bootstrap seed: the same interval every time ...
    assert np.random.randint(1 << 30) == np.random.RandomState(1).randint(1 << 30)  # ... and numpy's left as it was


def test_the_table_over_seeds_and_the_aggregate_lines(fake_suite):
    results, tasks = fake_suite
    text = format_report(results, tasks, aggregate(tasks))
    assert ("| cartpole | CartPole-v1 | 3 | 0.20M | 460.0 | 400.0 | 500.0 | 475 | 2 of 3 | 0.10M | 30.0 min | "
            "400.0, 500.0, 480.0 |") in text
    assert "| acrobot | Acrobot-v1 | 3 | 0.20M | -180.0 | -300.0 | -90.0 | -100 | 1 of 3 | not reached |" in text
    assert "targets met: 3 of 6 runs (50%)" in text
    assert "IQM of normalised scores, tasks x seeds = 2 x 3: " in text and "95% CI [" in text


def test_without_rliable_the_aggregate_says_so_in_one_line(fake_suite, monkeypatch):
    _, tasks = fake_suite
    monkeypatch.setitem(sys.modules, "rliable", None)  # `import rliable` raises ImportError
    agg = aggregate(tasks)
    assert agg["iqm"] is None and agg["met"] == 3
    text = format_report(*fake_suite, agg)
    assert text.splitlines()[-1] == "IQM not computed: the rliable package is not installed (pip install rliable)"


def test_cli_runs_a_task_over_seeds_reusing_finished_runs(tmp_path):
    for seed, value in enumerate(FINALS["cartpole"]):
        fake_run(tmp_path, "cartpole", seed, value)
    proc = subprocess.run([sys.executable, "-m", "impala_rl.cli", "bench", "--learning", "cartpole",
                           "--seeds", "0,1,2", "--learning-out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| cartpole | CartPole-v1 | 3 |" in proc.stdout
    assert "IQM of normalised scores, tasks x seeds = 1 x 3: " in proc.stdout
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["seed"] for r in saved["runs"]] == [0, 1, 2] and saved["tasks"][0]["met"] == 2
    assert saved["aggregate"]["runs"] == 3
    assert (tmp_path / "cartpole.png").read_bytes()[:4] == b"\x89PNG"  # one figure, a curve per seed


def test_cli_refuses_an_unknown_suite_and_tuning_flags(tmp_path):
    def bench(*args):
        return subprocess.run([sys.executable, "-m", "impala_rl.cli", "bench", *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)

    proc = bench("--learning", "quik")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "quick" in proc.stderr
    proc = bench("--learning", "quick", "--learning-rate", "0.1")
    assert proc.returncode == 2 and "--learning-rate" in proc.stderr and "benchmarks/learning.py" in proc.stderr
    for bad in ("0,x", "0,0", "-1", ""):
        proc = bench("--learning", "quick", "--seeds", bad)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "--seeds" in proc.stderr and "e.g. 0,1,2" in proc.stderr
    proc = bench("--learning", "quick", "--seed", "1", "--seeds", "0,1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not both" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_task_whose_run_fails_ends_the_suite_in_one_line(tmp_path):
    stray = tmp_path / "cartpole-seed0"
    stray.mkdir(parents=True)
    (stray / "train.log").write_text("a run that died before its first checkpoint\n")
    proc = subprocess.run([sys.executable, "benchmarks/learning.py", "cartpole", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "already holds files but no checkpoint" in proc.stderr
    assert lines[-1] == ("[learning] cartpole-seed0: impala train exited with 2 (its message is above); "
                         "the suite stops here")


def test_time_to_score_reads_the_learning_benchmarks_runs(tmp_path):
    from impala_rl.bench import time_to_score

    assert "no finished run of CartPole-v1" in time_to_score("CartPole-v1", tmp_path, 1000.0)
    assert "no target for Hopper-v5" in time_to_score("Hopper-v5", tmp_path, 1000.0)
    fake_run(tmp_path, "cartpole", 0, 500.0)  # reaches 475 with its first full window: 100,000 frames
    fake_run(tmp_path, "cartpole", 1, 10.0)
    metrics = ["frames,elapsed_s"] + [f"{f},{f / 2000}" for f in (0, 50_000, 200_000)]  # 2,000 frames/s
    (tmp_path / "cartpole-seed0" / "metrics.csv").write_text("\n".join(metrics) + "\n")
    line = time_to_score("CartPole-v1", tmp_path, 1000.0)
    assert "seed 0 0.1M frames, 0.8 min in its run, 1.7 min at this train speed" in line  # 50 s; 100 s
    assert "seed 1 not reached in 0.2M frames" in line


class FakeTrain:
    """Stands in for ``impala train`` in run_task (``subprocess.run``): writes a finished run
    directory, or exits with ``fail[run]``; counts how many runs are in flight at once. With a
    ``barrier`` every run waits for another to have started (it breaks, after a timeout, unless
    runs overlap); ``hold[run]`` seconds keep a run going."""

    def __init__(self, out: Path, barrier=None, fail=(), hold=None):
        self.out, self.barrier, self.fail, self.hold = out, barrier, set(fail), hold or {}
        self.lock = threading.Lock()
        self.running = self.peak = 0
        self.started: list[str] = []

    def run(self, cmd):
        name = Path(cmd[cmd.index("--run-dir") + 1]).name
        with self.lock:
            self.started.append(name)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            time.sleep(self.hold.get(name, 0.0))
            if name in self.fail:
                return subprocess.CompletedProcess(cmd, 2)
            task, seed = name.rsplit("-seed", 1)
            fake_run(self.out, task, int(seed), FINALS[task][int(seed)])
            return subprocess.CompletedProcess(cmd, 0)
        finally:
            with self.lock:
                self.running -= 1


def fake_train(monkeypatch, out, **kw) -> FakeTrain:
    fake = FakeTrain(out, **kw)
    monkeypatch.setattr(learning_bench, "subprocess", SimpleNamespace(run=fake.run))
    return fake


RUNS = [(task, seed) for seed in range(2) for task in FINALS]  # seed by seed, as main_learning orders them


def test_jobs_runs_several_at_once_and_keeps_the_suites_order(tmp_path, monkeypatch):
    # Two at once: every run meets another at the barrier (it would break if they ran one by one).
    # The first run is held longest, so runs finish out of order; the results keep the suite's.
    fake = fake_train(monkeypatch, tmp_path, barrier=threading.Barrier(2, timeout=20), hold={"cartpole-seed0": 0.3})
    results = learning_bench.run_tasks(RUNS, tmp_path, [], jobs=2)
    assert fake.peak == 2 and sorted(fake.started) == sorted(f"{t}-seed{s}" for t, s in RUNS)
    assert [(r.task, r.seed) for r in results] == RUNS
    assert [r.final_mean for r in results] == [400.0, -90.0, 500.0, -150.0]


def test_one_job_runs_one_at_a_time(tmp_path, monkeypatch):
    fake = fake_train(monkeypatch, tmp_path, hold={name: 0.05 for name in ("cartpole-seed0", "acrobot-seed0")})
    results = learning_bench.run_tasks(RUNS, tmp_path, [], jobs=1)
    assert fake.peak == 1 and fake.started == [f"{t}-seed{s}" for t, s in RUNS]
    assert [(r.task, r.seed) for r in results] == RUNS


def test_a_failed_run_with_jobs_starts_no_more_and_lets_the_running_one_finish(tmp_path, monkeypatch):
    # cartpole-seed0 fails while acrobot-seed0 runs: the two seed-1 runs never start, acrobot-seed0 finishes.
    fake = fake_train(monkeypatch, tmp_path, fail={"cartpole-seed0"},
                      hold={"cartpole-seed0": 0.2, "acrobot-seed0": 0.6})
    with pytest.raises(learning_bench.TaskFailed, match="cartpole-seed0: impala train exited with 2"):
        learning_bench.run_tasks(RUNS, tmp_path, [], jobs=2)
    assert sorted(fake.started) == ["acrobot-seed0", "cartpole-seed0"]
    assert (tmp_path / "acrobot-seed0" / "summary.json").exists()


def test_cli_jobs_is_a_positive_integer_with_learning(tmp_path):
    def bench(*args):
        return subprocess.run([sys.executable, "-m", "impala_rl.cli", "bench", *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)

    for bad in ("0", "-2", "two", ""):
        proc = bench("--learning", "quick", "--jobs", bad)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "--jobs" in proc.stderr and "positive integer" in proc.stderr
    proc = bench("--jobs", "2", "--env", "CartPole-v1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--learning SUITE" in proc.stderr
    assert not (tmp_path / "runs").exists()
