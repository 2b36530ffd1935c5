"""Failures a user can meet, through the real CLI in a subprocess: each is one line on
stderr, exit 2 for bad input (nothing written), and run directories stay consistent."""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

IMPALA = [sys.executable, "-m", "impala_rl.cli"]
TINY = ["--env", "CartPole-v1", "--backend", "serial", "--num-actors", "1", "--envs-per-actor", "2",
        "--batch-size", "2", "--quiet"]


def impala(*args, cwd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*IMPALA, *args], capture_output=True, text=True, cwd=cwd, timeout=180, env=env, **kw)


def one_line_error(proc, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("impala: error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    proc = impala("train", *TINY, "--total-frames", "400", "--run-dir", str(root / "run"), cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, root / "run"


def test_run_dir_that_is_a_file_or_unwritable(tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_line_error(impala("train", *TINY, "--total-frames", "100", "--run-dir", "afile", cwd=tmp_path))
    assert "--run-dir afile is an existing file" in line
    line = one_line_error(impala("train", *TINY, "--total-frames", "100", "--run-dir", "/proc/x/run", cwd=tmp_path))
    assert "cannot write the run directory /proc/x/run" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_directory_left_without_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("frames\n1\n")
    line = one_line_error(impala("train", *TINY, "--total-frames", "100", "--run-dir", "run", cwd=tmp_path))
    assert "already holds files but no checkpoint" in line
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.csv"]


@pytest.mark.parametrize("kind", ["truncated", "random", "not-a-run", "untrusted"])
def test_bad_checkpoints_are_one_line_for_eval_and_resume(run, tmp_path, kind):
    _, run_dir = run
    bad = tmp_path / kind
    bad.mkdir()
    good = (run_dir / "checkpoint.pt").read_bytes()
    if kind == "truncated":
        (bad / "checkpoint.pt").write_bytes(good[: len(good) // 2])
    elif kind == "random":
        (bad / "checkpoint.pt").write_bytes(os.urandom(4096))
    elif kind == "not-a-run":
        torch.save({"weights": torch.zeros(3)}, bad / "checkpoint.pt")
    else:
        state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        state["config"] = argparse.Namespace(env="CartPole-v1")  # an arbitrary Python object in the pickle
        torch.save(state, bad / "checkpoint.pt")
    expected = {"truncated": "may be truncated or corrupt", "random": "not an impala-rl checkpoint",
                "not-a-run": "not an impala-rl run checkpoint (missing: config",
                "untrusted": "not a trusted impala-rl checkpoint"}[kind]
    for args in (["eval", str(bad)], ["train", "--resume", str(bad), "--total-frames", "1000"]):
        line = one_line_error(impala(*args, cwd=tmp_path))
        assert expected in line and "weights_only" not in line, line
    assert [p.name for p in bad.iterdir()] == ["checkpoint.pt"]


def test_resume_refuses_other_network_flags_and_another_run_dir(run, tmp_path):
    root, run_dir = run
    before = (run_dir / "checkpoint.pt").read_bytes()
    line = one_line_error(impala("train", "--resume", str(run_dir), "--total-frames", "1000",
                                 "--mlp-sizes", "128", "128", "--use-lstm", cwd=root))
    assert "--mlp-sizes (run: 64 64, given: 128 128)" in line and "--use-lstm (run: False, given: True)" in line
    line = one_line_error(impala("train", "--resume", str(run_dir), "--run-dir", str(tmp_path / "other"),
                                 "--total-frames", "1000", cwd=root))
    assert "--run-dir cannot be combined with --resume" in line
    assert not (tmp_path / "other").exists() and (run_dir / "checkpoint.pt").read_bytes() == before


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_failing_disk_ends_in_one_line_with_the_reason_in_summary(tmp_path):
    """Files cannot grow past 20 kB (RLIMIT_FSIZE stands in for a full disk without root)."""
    proc = impala("train", *TINY, "--total-frames", "2000", "--run-dir", "run", cwd=tmp_path,
                  preexec_fn=_limit_file_size)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    # 20 kB is less than a CartPole checkpoint: none could be written, and the line says so.
    assert line.startswith("impala: error: the run stopped: File too large"), line
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and "no checkpoint was written; remove" in line, line
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"stop_reason": "crashed"' in summary
    assert "crashed" in (tmp_path / "run" / "train.log").read_text()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MB tmpfs (a disk that really fills up: ENOSPC); needs root, skipped otherwise."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE test stands in for a full disk")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_keeps_the_checkpoint_and_resume_continues_once_space_is_freed(small_tmpfs):
    run_dir = small_tmpfs / "run"
    proc = impala("train", *TINY, "--total-frames", "400", "--run-dir", str(run_dir), cwd=small_tmpfs)
    assert proc.returncode == 0, proc.stderr
    before = (run_dir / "checkpoint.pt").read_bytes()
    filler = small_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
        for chunk in (65536, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    proc = impala("train", "--resume", str(run_dir), "--total-frames", "2000", cwd=small_tmpfs)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("impala: error: the run stopped: No space left on device"), line
    assert "is intact, --resume it once fixed" in line, line
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    proc = impala("train", "--resume", str(run_dir), "--total-frames", "2000", cwd=small_tmpfs)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] == "done"


def test_resume_continues_every_file_from_the_checkpoint(tmp_path):
    proc = impala("train", *TINY, "--total-frames", "400", "--log-interval", "0.01", "--run-dir", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    with open(run_dir / "metrics.csv", newline="") as f:
        last_elapsed = float(list(csv.DictReader(f))[-1]["elapsed_s"])
    # One clock: no row is later than the final checkpoint, so a resumed run's rows come after them all
    # (CI saw elapsed_s go backwards when the logs' clock started before the checkpoint's).
    assert last_elapsed <= ckpt["counters"]["elapsed_s"] + 1e-5, (last_elapsed, ckpt["counters"])
    # What a run killed after its checkpoint leaves behind: rows past the checkpoint's frames.
    with open(run_dir / "metrics.csv", "a") as f:
        f.write(f"{ckpt['frames'] + 1000}" + "," * (len(open(run_dir / "metrics.csv").readline().split(",")) - 1) + "\n")
    with open(run_dir / "episodes.csv", "a") as f:
        f.write(f"{ckpt['frames'] + 1000},5,5\n")
    proc = impala("train", "--resume", "run", "--total-frames", "800", "--log-interval", "0.01", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("metrics.csv", "episodes.csv"):
        with open(run_dir / name, newline="") as f:
            frames = [float(r["frames"]) for r in csv.DictReader(f)]
        assert frames == sorted(frames) and ckpt["frames"] + 1000 not in frames, (name, frames)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(float(r["learner_steps"])) for r in rows]
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert steps == sorted(steps) and elapsed == sorted(elapsed) and steps[-1] > ckpt["version"]


def test_eval_video_is_h264_at_real_speed_or_one_clear_line(run, tmp_path):
    import av

    root, run_dir = run
    for path, expected in (("clip.avi", "give a name ending in .mp4"), ("/proc/x/clip.mp4", "cannot write there")):
        line = one_line_error(impala("eval", str(run_dir), "--episodes", "1", "--video", path, cwd=tmp_path))
        assert expected in line
    proc = impala("eval", str(run_dir), "--episodes", "1", "--max-steps", "40", "--video", "clip.mp4", cwd=tmp_path)
    assert proc.returncode == 0 and "XDG_RUNTIME_DIR" not in proc.stderr, proc.stderr
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate) == 50  # CartPole steps 0.02 s: 50 frames per second is real speed
        steps = float(proc.stdout.split("mean return ")[1].split()[0])  # CartPole pays 1 per step
        assert stream.frames == steps <= 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_background_thread_failing_after_the_log_closed_prints_no_traceback(tmp_path, capsys):
    """A TensorBoard writer thread can hit the full disk after train.log was closed: the
    hook must not raise a second error (CI saw one in the full-disk test)."""
    import logging
    import threading

    from impala_rl.cli import thread_exception

    handler = logging.FileHandler(tmp_path / "train.log")
    logger = logging.getLogger("impala_rl")
    logger.addHandler(handler)
    try:
        def fail():
            raise OSError(28, "No space left on device")

        threading.excepthook = thread_exception
        t = threading.Thread(target=fail, name="writer")
        t.start(); t.join()
        assert "background thread writer" in (tmp_path / "train.log").read_text()
        handler.close()  # stream is now None
        t = threading.Thread(target=fail, name="writer")
        t.start(); t.join()
    finally:
        threading.excepthook = threading.__excepthook__
        logger.removeHandler(handler)
    assert "Traceback" not in capsys.readouterr().err
