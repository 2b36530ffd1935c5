"""The ``impala`` command end to end, each call a subprocess with a tiny CartPole budget.

Covers what a run writes, ``eval`` / ``plot``, bad input (one line, exit code 2, nothing
on disk), and the runtime's behaviour under faults: an actor killed with SIGKILL, an
environment that raises, SIGTERM and Ctrl-C: the run ends cleanly, writes its
checkpoint and leaves no process and no shared memory behind.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

IMPALA = str(Path(sys.executable).with_name("impala"))
TEST_ENVS_DIR = Path(__file__).resolve().parents[1] / "runtime"  # impala_test_envs.py
SHM_PATTERN = re.compile(r"torch_|psm_|impala|mp-")  # mp-: multiprocessing semaphores (sem.mp-*)
TINY = ["--env", "CartPole-v1", "--envs-per-actor", "2", "--batch-size", "2", "--unroll-length", "5"]

pytestmark = pytest.mark.timeout(180)


def cli_env(**extra) -> dict:
    # One OpenMP thread: the learner otherwise spins against the actors on a small machine.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def impala(*args, cwd, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([IMPALA, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=cli_env(**env))


def shm_entries() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if SHM_PATTERN.search(p.name)}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def proc_info(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, cmdline) of a live process from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], cmd


def descendants(pid: int) -> dict[int, str]:
    """pid -> cmdline of every live descendant of ``pid``."""
    parent_of = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (info := proc_info(int(d.name))) and info[1] != "Z":
            parent_of[int(d.name)] = (info[0], info[2])
    out, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in parent_of.items() if ppid in frontier and p not in out}
        out.update({p: parent_of[p][1] for p in frontier})
    return out


def still_alive(processes: dict[int, str], grace: float = 5.0) -> dict[int, str]:
    """Those of ``processes`` (pid -> cmdline) still running after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        alive = {}
        for pid, cmd in processes.items():
            info = proc_info(pid)
            if info and info[1] != "Z" and info[2] == cmd:  # same cmdline: not a reused pid
                alive[pid] = cmd
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


class Training:
    """``impala train`` in the background; stderr is collected line by line."""

    def __init__(self, args, cwd, new_session=False, **env):
        # SIGINT back to its default in the child: a test suite started in the background
        # (`make test &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        self.proc = subprocess.Popen([IMPALA, "train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, cwd=cwd, env=cli_env(**env), start_new_session=new_session,
                                     preexec_fn=_default_sigint)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.seen_children: dict[int, str] = {}

    def _read(self):
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60, after: int = 0) -> re.Match:
        """The first stderr line from index ``after`` on that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if m := regex.search(line):
                        return m
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"process exited before {pattern!r}:\n" + self.stderr)
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {pattern!r} within {timeout}s:\n" + self.stderr)
                self._cond.wait(timeout=0.5)

    def snapshot_children(self) -> None:
        self.seen_children.update(descendants(self.proc.pid))

    def finish(self, timeout: float = 90) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise AssertionError(f"impala train did not exit within {timeout}s:\n" + self.stderr)
        self._reader.join(timeout=5)
        return code

    def kill_all(self) -> None:
        for pid in list(descendants(self.proc.pid)) + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def actor_pids(self) -> list[int]:
        return [int(m) for m in re.findall(r"actor \d+ started \(pid (\d+)\)", self.stderr)]


@pytest.fixture
def training(tmp_path):
    """Start runs with ``training(args)``; any run still going at teardown is killed."""
    runs = []

    def start(args, **kw):
        run = Training(args, cwd=tmp_path, **kw)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.kill_all()


def assert_clean_exit(run: Training, shm_before: set[str]) -> None:
    """No actor, resource tracker or other child left running; no shared memory left."""
    assert run.seen_children, "snapshot the children while the run is going"
    assert still_alive(run.seen_children) == {}
    # Actors known only from the log (e.g. started after the last snapshot).
    actors = {pid: info[2] for pid in run.actor_pids()
              if (info := proc_info(pid)) and info[1] != "Z" and "spawn_main" in info[2]}
    assert still_alive(actors) == {}
    assert shm_entries() <= shm_before


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ----------------------------------------------------------------------------- a normal run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny serial run, shared by the train / eval / plot tests."""
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    proc = impala("train", *TINY, "--backend", "serial", "--num-actors", "1", "--total-frames", "300",
                  "--log-interval", "0.2", "--run-dir", str(run_dir), cwd=root)
    return root, run_dir, proc


def test_train_exits_zero_and_says_where_the_run_is(trained):
    _, run_dir, proc = trained
    assert proc.returncode == 0, proc.stderr
    assert str(run_dir) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"frames\s+\S+/300", proc.stderr)  # a progress line


def test_train_writes_the_run_directory(trained):
    _, run_dir, _ = trained
    for name in ("config.json", "metrics.csv", "episodes.csv", "checkpoint.pt", "summary.json", "train.log"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "tb").stat().st_size > 0

    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"] == "CartPole-v1" and config["batch_size"] == 2 and config["total_frames"] == 300

    summary = read_summary(run_dir)
    assert summary["stop_reason"] == "done"
    assert summary["frames"] == 300
    assert summary["learner_steps"] == 30  # 300 frames / (5 steps x 2 unrolls)
    assert summary["actor_restarts"] == 0

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["frames"]) == 300
    assert all(float(r["total_loss"]) == float(r["total_loss"]) for r in rows if r["total_loss"])  # finite
    with open(run_dir / "episodes.csv", newline="") as f:
        episodes = list(csv.DictReader(f))
    assert episodes, "300 CartPole steps end some episodes"
    assert all(int(e["length"]) >= 1 and float(e["return"]) == int(e["length"]) for e in episodes)  # reward 1/step


def test_checkpoint_is_atomic_and_loads_with_weights_only(trained):
    _, run_dir, _ = trained
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["frames"] == 300 and state["version"] == 30
    assert state["config"]["env"] == "CartPole-v1"
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert state["optimizer"]["state"]  # RMSProp statistics are saved for resuming


def test_eval_prints_mean_return(trained):
    root, run_dir, _ = trained
    proc = impala("eval", str(run_dir), "--episodes", "2", cwd=root)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"greedy policy, 2 episodes: mean return (\d+\.\d+) \+- \d+\.\d+ \(min (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout
    assert float(m.group(1)) >= float(m.group(2)) >= 1  # CartPole pays 1 per step
    progress = [line for line in proc.stderr.splitlines() if "episode" in line]  # a line per episode
    assert [line.split(":")[0] for line in progress] == ["CartPole episode 1/2", "CartPole episode 2/2"], proc.stderr


def test_eval_refuses_a_negative_step_cap(trained):
    root, run_dir, _ = trained
    proc = impala("eval", str(run_dir), "--max-steps", "-1", cwd=root)
    assert proc.returncode == 2 and "--max-steps must be 0 (no cap) or positive, got -1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_video_writes_an_mp4(trained):
    root, run_dir, _ = trained
    video = root / "out.mp4"
    proc = impala("eval", str(run_dir), "--episodes", "1", "--video", str(video), "--max-steps", "30", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert video.stat().st_size > 1000
    assert video.read_bytes()[4:8] == b"ftyp"  # an MP4 container
    import cv2
    capture = cv2.VideoCapture(str(video))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    # One frame per step of the episode; CartPole pays 1 per step, so frames == return.
    episode_return = float(re.search(r"mean return (\d+\.\d+)", proc.stdout).group(1))
    assert frames == episode_return <= 30
    assert "video of episode 1 written to" in proc.stdout


def test_plot_writes_a_png(trained):
    root, run_dir, _ = trained
    png = root / "curve.png"
    proc = impala("plot", str(run_dir), "-o", str(png), cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


@pytest.mark.parametrize("flag, good, typo, message", [
    ("--metric", "entropy", "entropyy", "no column 'entropyy'; columns: elapsed_s,"),
    ("--x", "wall", "minutes", "unknown x axis 'minutes'; accepted: frames, wall"),
])
def test_plot_a_metric_or_wall_time_and_a_typo(trained, flag, good, typo, message):
    root, run_dir, _ = trained
    png = root / f"{good}.png"
    proc = impala("plot", str(run_dir), flag, good, "-o", str(png), cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = root / "bad.png"
    proc = impala("plot", str(run_dir), flag, typo, "-o", str(bad), cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert not bad.exists()


def test_version(tmp_path):
    proc = impala("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert re.fullmatch(r"impala-rl \d+\.\d+\.\d+\S*\n", proc.stdout)


def test_train_help_shows_field_help(tmp_path):
    proc = impala("train", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # undo argparse's line wrapping
    assert "V-trace rho-bar" in text
    assert "--batch-size INT Unrolls per learner batch B. (default: 32; presets: atari 32," in text
    assert "--resume RUN_DIR" in text
    assert "agent:" in proc.stdout and "optimiser:" in proc.stdout  # grouped by section


# ----------------------------------------------------------------------------- bad input
BAD_INPUTS = {
    "unknown-flag": (["--bogus"], r"unrecognized arguments: --bogus"),
    "not-an-int": (["--batch-size", "abc"], r"--batch-size: invalid int value: 'abc'"),
    "unknown-env": (["--env", "CartPolee-v1"], r"unknown environment id 'CartPolee-v1'; did you mean: CartPole-v1"),
    "zero-batch": (["--batch-size", "0"], r"batch_size must be positive, got 0"),
    "batch-over-slots": (["--num-slots", "10", "--batch-size", "1000"], r"batch_size \(1000\) is larger than"),
    "image-torso-on-vectors": (["--torso", "shallow"], r"torso 'shallow'.*shape \(4,\)"),
    "unknown-backend": (["--backend", "mpi"], r"backend 'mpi' is not one of: serial, local, ray"),
    "unknown-agent": (["--agent", "dqn"], r"agent 'dqn' is not one of: impala, merlin, rainbow \(or module:Class\); DQN is --agent rainbow"),
    "unknown-activation": (["--mlp-activation", "gelu"], r"mlp_activation 'gelu' is not one of: relu, tanh"),
    "separate-value-with-lstm": (["--value-torso", "separate", "--use-lstm"],
                                 r"value_torso 'separate' cannot be combined with --use-lstm"),
    "tasks-of-two-families": (["--env", "CartPole-v1,Pendulum-v1"],
                              r"one environment family.*CartPole-v1: classic_control, Pendulum-v1: continuous"),
    "unknown-suite": (["--suite", "atari99"], r"--suite atari99 is not one of: minatar5, minatar3, atari5"),
    "suite-and-env": (["--suite", "minatar3"], r"--suite names the run's environments: give it instead of --env"),
    "stop-at-return-not-a-number": (["--stop-at-return", "high"],
                                    r"stop_at_return must be one number or one per task \(1\), comma-separated; "
                                    r"got 'high'"),
    "fewer-envs-than-tasks": (["--env", "CartPole-v1,Acrobot-v1,MountainCar-v0", "--num-actors", "1",
                               "--envs-per-actor", "2", "--batch-size", "2"],
                              r"3 tasks need at least as many environments; got .* = 2"),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Every bad command line, run concurrently (each is mostly interpreter start-up)."""
    root = tmp_path_factory.mktemp("bad")
    procs = {}
    for name, (flags, _) in BAD_INPUTS.items():
        run_dir = root / name / "run"
        (root / name).mkdir()
        args = [IMPALA, "train", "--env", "CartPole-v1", "--total-frames", "100", "--run-dir", str(run_dir), *flags]
        procs[name] = (subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        cwd=root / name, env=cli_env()), run_dir)
    out = {}
    for name, (proc, run_dir) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = (proc.returncode, stdout, stderr, run_dir)
    return out


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_on_disk(bad_runs, name):
    code, stdout, stderr, run_dir = bad_runs[name]
    lines = stderr.splitlines()
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("impala: error: ")
    assert re.search(BAD_INPUTS[name][1], lines[0]), lines[0]
    assert "Traceback" not in stderr and stdout == ""
    assert not run_dir.exists()
    assert not (run_dir.parent / "runs").exists()


def test_train_refuses_to_overwrite_a_run(trained):
    root, run_dir, _ = trained
    before = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    proc = impala("train", *TINY, "--backend", "serial", "--total-frames", "100", "--run-dir", str(run_dir), cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "--resume" in proc.stderr
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == before


def test_a_run_written_by_another_version_is_refused_in_one_line(trained):
    root, run_dir, _ = trained
    foreign = root / "foreign"
    foreign.mkdir()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["config"]["from_a_later_version"] = 1
    torch.save(state, foreign / "checkpoint.pt")
    before = (foreign / "checkpoint.pt").read_bytes()
    for args in (["train", "--resume", str(foreign), "--total-frames", "1000"], ["eval", str(foreign)]):
        proc = impala(*args, cwd=root)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "cannot be loaded by this version of impala-rl: unknown config keys: from_a_later_version" in proc.stderr
    assert (foreign / "checkpoint.pt").read_bytes() == before and sorted(foreign.iterdir()) == [foreign / "checkpoint.pt"]


# ----------------------------------------------------------------------------- faults and signals
LOCAL = [*TINY, "--backend", "local", "--num-actors", "2", "--log-interval", "0.2"]
PROGRESS = r"frames\s+\S+/"


@pytest.mark.exclusive  # /dev/shm is checked machine-wide
def test_sigkilled_actor_is_restarted_and_the_run_finishes(training, tmp_path):
    shm_before = shm_entries()
    run_dir = tmp_path / "run"
    run = training([*LOCAL, "--total-frames", "6000", "--run-dir", str(run_dir)])
    pid = int(run.wait_for(r"actor 0 started \(pid (\d+)\)").group(1))
    run.wait_for(PROGRESS)  # learning has started
    run.snapshot_children()
    os.kill(pid, signal.SIGKILL)
    n = len(run.lines)
    run.wait_for(r"actor 0 died \(exit code -9\); restarting", after=n, timeout=30)
    run.wait_for(r"actor 0 started \(pid (\d+)\)", after=n, timeout=30)
    run.snapshot_children()
    code = run.finish()
    assert code == 0, run.stderr
    summary = read_summary(run_dir)
    assert summary["stop_reason"] == "done"
    assert summary["frames"] >= 6000
    assert summary["actor_restarts"] == 1
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["actor_restarts"] == 1
    assert len(run.actor_pids()) == 3  # two at the start, one restart
    assert_clean_exit(run, shm_before)


@pytest.mark.exclusive  # /dev/shm is checked machine-wide
def test_actor_whose_env_raises_stops_the_run_with_a_clear_message(training, tmp_path):
    shm_before = shm_entries()
    run_dir = tmp_path / "run"
    run = training(["--env", "impala_test_envs:ImpalaTest/Raising-v0", "--backend", "local", "--num-actors", "1",
                    "--envs-per-actor", "1", "--batch-size", "1", "--unroll-length", "5", "--total-frames", "1000",
                    "--log-interval", "0.2", "--run-dir", str(run_dir)],
                   PYTHONPATH=os.pathsep.join([str(TEST_ENVS_DIR), os.environ.get("PYTHONPATH", "")]))
    run.wait_for(r"actor 0 started")
    run.snapshot_children()
    code = run.finish(timeout=120)  # MAX_FAILED_STARTS tries, then a stop: never a hang
    assert code == 1, run.stderr
    assert "step failed on purpose" in run.stderr  # the actor's own traceback is logged
    assert re.search(r"stopping: actor 0 died 3 times before producing an unroll; "
                     r"last error: RuntimeError: step failed on purpose", run.stderr)
    assert not [line for line in run.lines if line.startswith("Exception in thread")]
    assert "finished (actor_failure)" in run.stderr
    assert "resource_tracker" not in run.stderr  # no leaked-resource warnings
    summary = read_summary(run_dir)
    assert summary["stop_reason"] == "actor_failure" and summary["frames"] == 0
    assert "step failed on purpose" in (run_dir / "train.log").read_text()
    assert len(run.actor_pids()) == 3
    assert_clean_exit(run, shm_before)


@pytest.mark.exclusive  # /dev/shm is checked machine-wide
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_signal_stops_the_run_with_a_checkpoint(training, tmp_path, how):
    """SIGTERM to the trainer, or Ctrl-C (SIGINT to the whole process group): exit 143 / 130
    (128 + the signal) after a final checkpoint; the actors (which ignore SIGINT) are
    stopped by the trainer."""
    shm_before = shm_entries()
    run_dir = tmp_path / "run"
    run = training([*LOCAL, "--total-frames", "10000000", "--run-dir", str(run_dir)], new_session=how == "ctrl-c")
    run.wait_for(PROGRESS)
    run.wait_for(r"actor 1 started")
    run.snapshot_children()
    assert len(run.seen_children) >= 2
    if how == "sigterm":
        run.proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(run.proc.pid, signal.SIGINT)
    code = run.finish(timeout=60)
    assert code == (143 if how == "sigterm" else 130), run.stderr
    assert "interrupted: writing a final checkpoint" in run.stderr
    summary = read_summary(run_dir)
    assert summary["stop_reason"] == "interrupted"
    assert 0 < summary["frames"] < 10_000_000
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["frames"] == summary["frames"]
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert "Traceback" not in run.stderr
    assert_clean_exit(run, shm_before)


def test_preset_is_applied_printed_and_can_be_turned_off(tmp_path):
    base = ("train", "--env", "CartPole-v1", "--backend", "serial", "--total-frames", "300", "--quiet")
    proc = impala(*base, "--run-dir", str(tmp_path / "preset"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "preset 'classic_control' for CartPole-v1" in proc.stderr and "optimizer=adam" in proc.stderr
    cfg = json.loads((tmp_path / "preset" / "config.json").read_text())
    assert (cfg["optimizer"], cfg["batch_size"], cfg["popart"]) == ("adam", 16, True)

    proc = impala(*base, "--no-preset", "--torso", "mlp", "--run-dir", str(tmp_path / "paper"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no preset" in proc.stderr
    cfg = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert (cfg["optimizer"], cfg["batch_size"], cfg["popart"], cfg["learning_rate"]) == ("rmsprop", 32, False, 6e-4)
