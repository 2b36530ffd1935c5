"""Resuming a run: ``impala train --resume RUN_DIR --total-frames B`` continues frames,
policy version, optimiser state and the learning-rate schedule where the checkpoint left
them, and appends to the run's logs."""

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from impala_rl.checkpoint import load_checkpoint
from impala_rl.runtime.backends import make_backend
from impala_rl.runtime.rundirs import load_run
from impala_rl.runtime.train import Trainer

IMPALA = str(Path(sys.executable).with_name("impala"))
TINY = ["--env", "CartPole-v1", "--backend", "serial", "--num-actors", "1", "--envs-per-actor", "2",
        "--batch-size", "2", "--unroll-length", "5", "--quiet", "--log-interval", "0.1"]
A, B = 100, 200  # frames: first leg, resumed total (10 frames per learner step)

pytestmark = pytest.mark.timeout(180)


def impala(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([IMPALA, *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=env)


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run stopped at A frames, its checkpoint kept aside, resumed to B; and one unbroken run to B."""
    root = tmp_path_factory.mktemp("resume")
    resumed, unbroken = root / "resumed", root / "unbroken"
    first = impala("train", *TINY, "--total-frames", str(A), "--run-dir", str(resumed), cwd=root)
    assert first.returncode == 0, first.stderr
    shutil.copy(resumed / "checkpoint.pt", root / "checkpoint_at_A.pt")
    episodes_at_a = len(csv_rows(resumed / "episodes.csv"))
    metrics_at_a = len(csv_rows(resumed / "metrics.csv"))
    second = impala("train", "--resume", str(resumed), "--total-frames", str(B), cwd=root)
    assert second.returncode == 0, second.stderr
    whole = impala("train", *TINY, "--total-frames", str(B), "--run-dir", str(unbroken), cwd=root)
    assert whole.returncode == 0, whole.stderr
    return dict(root=root, resumed=resumed, unbroken=unbroken, second=second, episodes_at_a=episodes_at_a,
                metrics_at_a=metrics_at_a)


def test_resumed_run_ends_where_an_unbroken_run_ends(runs):
    resumed = json.loads((runs["resumed"] / "summary.json").read_text())
    unbroken = json.loads((runs["unbroken"] / "summary.json").read_text())
    assert resumed["stop_reason"] == unbroken["stop_reason"] == "done"
    assert resumed["frames"] == unbroken["frames"] == B
    assert resumed["learner_steps"] == unbroken["learner_steps"] == B // 10
    resumed_state = load_checkpoint(runs["resumed"])
    assert resumed_state["frames"] == B and resumed_state["version"] == B // 10
    assert resumed_state["config"]["total_frames"] == B
    assert json.loads((runs["resumed"] / "config.json").read_text())["total_frames"] == B


def test_resume_says_what_it_overrides(runs):
    assert f"resuming {runs['resumed']} with overrides: {{'total_frames': {B}}}" in runs["second"].stderr


def test_resume_appends_to_the_logs(runs):
    metrics = csv_rows(runs["resumed"] / "metrics.csv")  # one header: DictReader would see a second as a row
    assert len(metrics) > runs["metrics_at_a"]
    frames = [int(r["frames"]) for r in metrics]
    assert frames == sorted(frames) and frames[0] <= A < frames[-1] == B
    assert len(csv_rows(runs["resumed"] / "episodes.csv")) > runs["episodes_at_a"]


def test_resume_restores_optimizer_state_and_continues_the_lr_schedule(runs):
    torch.set_num_threads(1)
    state = load_checkpoint(runs["root"] / "checkpoint_at_A.pt")
    cfg = dataclasses.replace(load_run(runs["resumed"])[0], total_frames=B, run_dir=str(runs["root"] / "x"))
    trainer = Trainer(cfg, resume_state=state)
    learner = trainer.learner
    assert learner.frames == A and learner.version == A // 10

    saved = state["optimizer"]["state"]
    restored = learner.optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys() and len(saved) == len(list(learner.model.parameters()))
    second_moment = {"rmsprop": "square_avg", "adam": "exp_avg_sq", "rmsprop_tf": "mean_square"}[cfg.optimizer]
    for i in saved:
        assert saved[i][second_moment].abs().sum() > 0  # real statistics, not a fresh optimiser
        assert torch.equal(restored[i][second_moment], saved[i][second_moment])
        assert int(restored[i]["step"]) == int(saved[i]["step"]) == A // 10
    for k, v in state["model"].items():
        assert torch.equal(learner.model.state_dict()[k], v), k

    assert learner.learning_rate() == pytest.approx(cfg.learning_rate * (1 - A / B))
    backend = make_backend(cfg, trainer.env_spec, learner)
    try:
        batch, _ = backend.get_batch()
    finally:
        backend.close()
    metrics = learner.step(batch)
    assert metrics["learning_rate"] == pytest.approx(cfg.learning_rate * (1 - learner.frames / B))
    assert learner.version == A // 10 + 1
    assert not (runs["root"] / "x").exists()  # building a Trainer writes nothing


def test_resume_of_a_finished_run_needs_more_frames(runs):
    proc = impala("train", "--resume", str(runs["resumed"]), cwd=runs["root"])
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("impala: error: ") and "--total-frames" in lines[0]


def test_resume_of_a_missing_run_is_a_usage_error(tmp_path):
    proc = impala("train", "--resume", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("impala: error: no checkpoint at") and len(proc.stderr.splitlines()) == 1
