"""MERLIN through the runtime: short runs on the local backend (actor processes, the
memory state travelling per unroll), ``--resume`` and ``impala eval`` of a MERLIN run, and the
one-line refusals of the CLI. (The serial run and the network's own tests are in
test_merlin_agent.py; the Ray backend's test file runs MERLIN through Ray actors.)"""

from __future__ import annotations


import pytest
from cli_refusals import assert_train_refuses

from impala_rl.checkpoint import load_checkpoint
from impala_rl.config import TrainConfig
from impala_rl.runtime.evaluate import evaluate
from impala_rl.runtime.train import Trainer


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(env="CartPole-v1", agent="merlin", backend="local", torso="mlp", mlp_sizes=(32,), num_actors=2,
                envs_per_actor=2, unroll_length=10, batch_size=4, optimizer="adam", learning_rate=1e-3,
                reward_clip=0.0, total_frames=800, seed=2, quiet=True, log_interval=100.0,
                agent_options="z_size=8,memory_slots=16,mbp_hidden=32,policy_hidden=32,decoder_hidden=32",
                run_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw}).validate()


def test_a_local_run_resumes_from_its_checkpoint_and_plays_in_eval(tmp_path):
    cfg = _cfg(tmp_path)
    first = Trainer(cfg).run()
    assert first.stop_reason == "done" and first.frames >= 800
    assert {"kl", "mbp_loss"} <= set(first.last_metrics)  # the ELBO was trained
    state = load_checkpoint(tmp_path / "run")
    resumed = Trainer(TrainConfig(**{**cfg.__dict__, "total_frames": 1600}), resume_state=state)
    assert resumed.learner.version == first.version
    second = resumed.run()
    assert second.stop_reason == "done" and second.frames >= 1600 and second.version > first.version
    played = evaluate(tmp_path / "run", episodes=2, seed=4)
    again = evaluate(tmp_path / "run", episodes=2, seed=4)
    assert played.policy == "greedy" and played.returns == again.returns  # eval mode: z is the posterior mean


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_rl_mem_runs_without_the_elbo(tmp_path, backend):
    cfg = _cfg(tmp_path, backend=backend, learner_threads=1,
               agent_options="z_size=8,memory_slots=16,mbp_hidden=32,policy_hidden=32,mbp_loss=false")
    trainer = Trainer(cfg)
    model = trainer.learner.model  # RL-MEM: the same network without the decoders
    assert type(model).__name__ == "MerlinNet" and not hasattr(model, "obs_decoder")
    result = trainer.run()
    assert result.stop_reason == "done" and result.version >= 1 and "kl" not in result.last_metrics


@pytest.mark.parametrize("flags, message", [
    (["--env", "Pendulum-v1"], "--agent merlin needs discrete actions; Pendulum-v1 has a continuous"),
    (["--env", "CartPole-v1", "--agent-options", "slots=3"], "agent option 'slots=3' is not KEY=VALUE"),
    (["--env", "CartPole-v1", "--agent-options", "memory_slots=100000000"], "MERLIN's state in"),
])
def test_bad_input_is_one_line_and_exit_2_and_leaves_no_run_directory(tmp_path, flags, message):
    assert_train_refuses(tmp_path, ["--agent", "merlin", *flags], message)


def test_the_cli_resumes_a_merlin_run_and_evaluates_it(tmp_path):
    import json
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    options = "z_size=8,memory_slots=16,mbp_hidden=32,policy_hidden=32,decoder_hidden=32"
    cli = [sys.executable, "-m", "impala_rl.cli"]
    first = [*cli, "train", "--agent", "merlin", "--env", "CartPole-v1", "--backend", "serial", "--learner-threads", "1",
             "--num-actors", "1", "--envs-per-actor", "2", "--batch-size", "2", "--unroll-length", "10",
             "--total-frames", "400", "--agent-options", options, "--quiet", "--run-dir", str(run_dir)]
    proc = subprocess.run(first, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = json.loads((run_dir / "summary.json").read_text())["learner_steps"]
    proc = subprocess.run([*cli, "train", "--resume", str(run_dir), "--total-frames", "800", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "resuming" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "done" and summary["frames"] >= 800 and summary["learner_steps"] > steps
    proc = subprocess.run([*cli, "eval", str(run_dir), "--episodes", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "greedy" in proc.stdout, proc.stderr[-2000:]
