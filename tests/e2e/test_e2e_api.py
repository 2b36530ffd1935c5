"""The Python API and the visible presets, through real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from impala_rl.config import PRESETS, TrainConfig

TEST_ENVS_DIR = Path(__file__).resolve().parents[1] / "runtime"  # impala_test_envs.py
SCRIPT = """\
import impala_rl

result = impala_rl.train("CartPole-v1", total_frames=60_000, seed=1, run_dir="run", quiet=True)
print("RESULT", result.stop_reason, result.frames, result.mean_return)
print("EVAL", impala_rl.evaluate(result.run_dir, episodes=2).mean)
"""


def run(args, cwd, **env):
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_a_script_without_a_main_guard_trains_with_the_preset_and_evaluates(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)  # no `if __name__ == "__main__":` on purpose
    proc = run([sys.executable, "script.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = [line.split() for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert len(result) == 1 and result[0][1] == "done" and int(result[0][2]) >= 60_000  # trained once, not per actor
    assert any(line.startswith("EVAL") for line in proc.stdout.splitlines())
    assert "finished (done)" in (tmp_path / "run" / "train.log").read_text()
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["optimizer"] == "adam" and cfg["batch_size"] == PRESETS["classic_control"]["batch_size"]


def test_for_env_applies_the_same_preset_as_the_cli():
    cfg = TrainConfig.for_env("CartPole-v1", batch_size=8)
    assert cfg.batch_size == 8 and cfg.optimizer == "adam" and cfg.torso == "mlp"  # explicit wins, preset fills
    assert TrainConfig.for_env("CartPole-v1", preset=None).optimizer == "rmsprop"  # the paper's defaults
    assert TrainConfig.for_env("CartPole-v1", preset="minatar").torso == "minatar"
    # an agent with no preset for the family (Rainbow on a memory task): its flags' defaults, as `impala train`
    from impala_rl.agents import agent_presets
    from impala_rl.cli.train import config_with_preset

    api = TrainConfig.for_env("popgym/RepeatPreviousEasy-v0", presets=agent_presets("rainbow"), agent="rainbow")
    cli, note = config_with_preset({"env": "popgym/RepeatPreviousEasy-v0", "agent": "rainbow"})
    assert api == cli.validate() and "has no preset for memory environments" in note


def test_an_environment_can_add_values_to_its_familys_preset():
    """Pendulum-v1 gets discount 0.9 on top of the continuous preset; its family does not."""
    pendulum = TrainConfig.for_env("Pendulum-v1")
    assert pendulum.discount == 0.9 and pendulum.value_torso == "separate"
    assert TrainConfig.for_env("Pendulum-v1", discount=0.99).discount == 0.99  # explicit wins
    assert TrainConfig.for_env("Pendulum-v1", preset=None).discount == 0.99
    assert TrainConfig.for_env("MountainCarContinuous-v0").discount == 0.99
    walker = TrainConfig.for_env("Walker2d-v5")  # early termination: starts at std e^-1 (docs/learning.md)
    assert walker.init_log_std == -1.0 and walker.total_frames == 5_000_000 and walker.bounded_mean
    assert TrainConfig.for_env("HalfCheetah-v5").init_log_std == 0.0
    lunar = TrainConfig.for_env("LunarLander-v3")  # ReLU and batch 8 on top of the classic preset
    assert (lunar.batch_size, lunar.mlp_activation, lunar.total_frames) == (8, "relu", 5_000_000)
    assert TrainConfig.for_env("CartPole-v1").batch_size == 16


def test_presets_are_listed_and_can_be_named(tmp_path):
    proc = run([sys.executable, "-m", "impala_rl.cli", "presets"], tmp_path)
    assert proc.returncode == 0 and all(f"{family}:" in proc.stdout for family in PRESETS)
    assert "--learner-minibatches" in proc.stdout and "(paper default: 1)" in proc.stdout
    proc = run([sys.executable, "-m", "impala_rl.cli", "train", "--help"], tmp_path)
    assert "presets: atari 32, classic_control 16" in " ".join(proc.stdout.split())
    proc = run([sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1", "--preset", "continuous",
                "--backend", "serial", "--total-frames", "200", "--run-dir", "run", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "preset 'continuous'" in proc.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["mlp_activation"] == "tanh"
    proc = run([sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1", "--preset", "mujoco",
                "--run-dir", "run2"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--preset mujoco is not one of: atari" in proc.stderr
    assert not (tmp_path / "run2").exists()


def test_eval_does_not_import_a_run_s_env_module_unless_trusted(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(TEST_ENVS_DIR), os.environ.get("PYTHONPATH", "")])}
    proc = run([sys.executable, "-m", "impala_rl.cli", "train", "--env", "impala_test_envs:ImpalaTest/Counting-v0",
                "--backend", "serial", "--num-actors", "1", "--envs-per-actor", "1", "--batch-size", "1",
                "--total-frames", "100", "--run-dir", "run", "--quiet", "--torso", "mlp"], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    proc = run([sys.executable, "-m", "impala_rl.cli", "eval", "run", "--episodes", "1"], tmp_path, **env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "would import the module 'impala_test_envs'" in proc.stderr and "--trust-env-module" in proc.stderr
    proc = run([sys.executable, "-m", "impala_rl.cli", "eval", "run", "--episodes", "1", "--max-steps", "5",
                "--trust-env-module"], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
