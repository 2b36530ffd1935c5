"""The learner's bfloat16 autocast (--learner-precision): close to float32 on a fixed batch,
float32 weights and optimiser state, and exactly today's learner where bfloat16 is not native."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from impala_rl.agents import make_agent
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.runtime import precision
from impala_rl.runtime.backends.serial import SerialBackend
from impala_rl.runtime.builders import build_learner, probe_env


def _cfg(env: str, **kw) -> TrainConfig:
    return TrainConfig(env=env, backend="serial", num_actors=1, envs_per_actor=4, batch_size=4, unroll_length=20,
                       total_frames=10**6, quiet=True, **kw).validate()


def _fixed_batch(cfg: TrainConfig):
    torch.manual_seed(0)
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    backend = SerialBackend(cfg, env_spec, model)
    try:
        batch, _ = backend.get_batch()
    finally:
        backend.close()
    return env_spec, model, batch


def _loss_and_grads(cfg, env_spec, model, batch, learner_precision):
    cfg = TrainConfig(**{**cfg.__dict__, "learner_precision": learner_precision}).validate()
    model = copy.deepcopy(model)
    learner = build_learner(cfg, env_spec, model)
    state = model.initial_state(batch["obs"].shape[1])
    out, new_state = learner.forward(obs=batch["obs"], last_action=batch["last_action"], last_reward=batch["reward"],
                                     first=batch["first"], core_state=state)
    assert all(s.dtype == torch.float32 for s in new_state)
    loss, metrics, _ = learner.agent.loss(learner.forward, {k: v.clone() for k, v in batch.items()})
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return out, loss.detach(), {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.dim() == 0}, grads


@pytest.mark.parametrize("env,kw", [("ALE/Pong-v5", {}), ("CartPole-v1", {"use_lstm": True, "torso": "mlp"})],
                         ids=["atari-conv", "mlp-lstm"])
def test_bfloat16_loss_and_gradients_stay_within_tolerance_of_float32(env, kw):
    # Stated tolerance (measured on the Pong batch: gradient cosine 0.9997, relative error
    # 2.9%, loss difference 0.9% of the summed loss terms' sizes): cosine >= 0.999,
    # relative gradient error <= 6%, loss within 2% of |pg| + |baseline| + |entropy|.
    cfg = _cfg(env, **kw)
    env_spec, model, batch = _fixed_batch(cfg)
    out32, loss32, m32, g32 = _loss_and_grads(cfg, env_spec, model, batch, "float32")
    out16, loss16, m16, g16 = _loss_and_grads(cfg, env_spec, model, batch, "bfloat16")
    assert out16.policy_params.dtype == out16.values.dtype == loss16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) >= 0.999
    assert (g16 - g32).norm() <= 0.06 * g32.norm()
    scale = abs(m32["pg_loss"]) + abs(m32["baseline_loss"]) + abs(m32["entropy_loss"])
    assert abs(float(loss16) - float(loss32)) <= 0.02 * scale
    assert not torch.equal(g16, g32)  # bfloat16 really ran


def test_a_bfloat16_step_keeps_float32_weights_and_optimizer_state():
    cfg = _cfg("CartPole-v1", torso="mlp", learner_precision="bfloat16")
    env_spec, model, batch = _fixed_batch(cfg)
    learner = build_learner(cfg, env_spec, model)
    assert learner.precision == "bfloat16"
    learner.step(batch)
    assert learner.version == 1
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())
    states = [t for s in learner.optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    assert states and all(t.dtype == torch.float32 for t in states)


def test_auto_without_native_bfloat16_is_exactly_float32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))  # no BF16 support
    cfg = _cfg("CartPole-v1", torso="mlp")
    env_spec, model, batch = _fixed_batch(cfg)
    learners = {}
    for p in ("float32", "auto"):
        c = TrainConfig(**{**cfg.__dict__, "learner_precision": p}).validate()
        learners[p] = build_learner(c, env_spec, copy.deepcopy(model))
        learners[p].step({k: v.clone() for k, v in batch.items()})
    assert learners["auto"].precision == "float32"
    assert learners["auto"].forward is learners["auto"].model  # no autocast wrapper at all
    for (k, a), b in zip(learners["float32"].model.state_dict().items(), learners["auto"].model.state_dict().values()):
        assert torch.equal(a, b), k
    assert precision.describe("auto", "float32") == "learner float32 (auto: no native bfloat16 here)"


def test_auto_picks_bfloat16_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert precision.resolve_precision("auto", torch.device("cpu")) == "bfloat16"
    assert precision.resolve_precision("float32", torch.device("cpu")) == "float32"
    assert precision.describe("auto", "bfloat16") == "learner bfloat16 (auto: native here)"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.resolve_precision("auto", torch.device("cpu")) == "bfloat16"


def test_an_unknown_precision_is_refused_with_the_accepted_values(tmp_path):
    with pytest.raises(ConfigError, match="learner_precision 'fp16' is not one of: float32, bfloat16, auto"):
        TrainConfig(env="CartPole-v1", learner_precision="fp16").validate()
    proc = subprocess.run([sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1",
                           "--learner-precision", "fp16", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "fp16" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_start_line_states_the_learner_precision(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1", "--backend",
                           "serial", "--total-frames", "2000", "--learner-precision", "bfloat16",
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "device cpu, learner bfloat16)" in proc.stderr


@pytest.mark.slow  # two compiles of the network: about 10-20 s
def test_a_compiled_learner_steps_as_the_eager_one_on_a_fixed_batch():
    """--compile (on in the Atari preset) changes the speed of the learner's step, not its result."""
    cfg = _cfg("CartPole-v1", torso="mlp", optimizer="adam")
    env_spec, model, batch = _fixed_batch(cfg)
    after = []
    for compiled in (False, True):
        learner = build_learner(TrainConfig(**{**cfg.__dict__, "compile": compiled}).validate(), env_spec,
                                copy.deepcopy(model))
        metrics = learner.step({k: v.clone() for k, v in batch.items()})
        after.append((metrics["total_loss"],
                      torch.cat([p.detach().flatten() for p in learner.model.parameters()])))
    (loss_eager, w_eager), (loss_compiled, w_compiled) = after
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-5)
    torch.testing.assert_close(w_compiled, w_eager, rtol=1e-5, atol=1e-6)
    assert not torch.equal(w_eager, torch.cat([p.detach().flatten() for p in model.parameters()]))  # it stepped


def test_without_a_cxx_compiler_the_learner_runs_uncompiled(monkeypatch, caplog):
    from impala_rl.runtime import learner as learner_module

    monkeypatch.setattr(learner_module.shutil, "which", lambda name: None)
    cfg = _cfg("CartPole-v1", torso="mlp", compile=True)
    learner = build_learner(cfg, probe_env(cfg))
    assert not learner.compiled and learner.forward is learner.model
    assert "no C++ compiler" in caplog.text
