"""The IMPALA agent reads its network's and its loss's parameter objects from the TrainConfig
fields (the flags stay as they are), and a hyperparameter PBT changes reaches its loss."""

from __future__ import annotations

import numpy as np
import pytest

from impala_rl.agents.impala.agent import ImpalaAgent, build_model, loss_config, net_config
from impala_rl.config import TrainConfig
from impala_rl.core.losses import LossConfig
from impala_rl.core.vtrace import VTraceParams
from impala_rl.envs.spec import EnvSpec
from impala_rl.models import NetConfig

VECTOR = EnvSpec((4,), np.dtype(np.float32), "gaussian", 2, action_low=(-1.0, -2.0), action_high=(1.0, 2.0))
IMAGE = EnvSpec((4, 84, 84), np.dtype(np.uint8), "categorical", 6, is_image=True)


def test_loss_config_takes_each_field_from_its_flag():
    cfg = TrainConfig(correction="1step_is", baseline_cost=0.3, entropy_cost=0.02, clip_rho_threshold=0.5,
                      clip_c_threshold=0.6, clip_pg_rho_threshold=0.7, vtrace_lambda=0.8, normalize_advantages=True)
    assert loss_config(cfg) == LossConfig(correction="1step_is", baseline_cost=0.3, entropy_cost=0.02,
                                          vtrace=VTraceParams(rho=0.5, c=0.6, pg_rho=0.7, lambda_=0.8),
                                          normalize_advantages=True)
    assert loss_config(TrainConfig()) == LossConfig()  # the flags' defaults are the paper's


def test_a_changed_config_reaches_the_agents_loss():
    agent = ImpalaAgent(TrainConfig(), VECTOR)
    assert agent.loss_config.entropy_cost == 0.01
    agent.update_config(TrainConfig(entropy_cost=0.5))
    assert agent.loss_config == LossConfig(entropy_cost=0.5)


def test_net_config_takes_each_field_from_its_flag():
    cfg = TrainConfig(torso="mlp", mlp_sizes=[32, 16], mlp_activation="tanh", init="torch", channels_last=True,
                      popart=True, popart_beta=1e-3, normalize_observations=True, value_torso="separate",
                      init_log_std=-0.5, bounded_mean=True)
    assert net_config(cfg, VECTOR) == NetConfig(torso="mlp", mlp_sizes=(32, 16), activation="tanh", init="torch",
                                                 popart=True, popart_beta=1e-3, normalize_observations=True,
                                                 separate_value_torso=True, init_log_std=-0.5)  # no channels_last
    net = build_model(cfg, VECTOR)
    assert net.config == net_config(cfg, VECTOR) and net.bounded_mean
    assert net.mean_half_range.tolist() == [1.0, 2.0]
    lstm = TrainConfig(torso="shallow", use_lstm=True, lstm_size=64, channels_last=True)
    assert net_config(lstm, IMAGE) == NetConfig(torso="shallow", use_lstm=True, lstm_size=64, channels_last=True)


def test_the_entropy_bonus_anneals_over_its_frames_and_survives_a_changed_config():
    constant = ImpalaAgent(TrainConfig(entropy_cost=0.02), VECTOR)
    constant.set_progress(10**9)
    assert constant.loss_config.entropy_cost == 0.02  # no schedule: constant
    agent = ImpalaAgent(TrainConfig(entropy_cost=0.02, entropy_anneal_frames=1000), VECTOR)
    assert agent.loss_config.entropy_cost == 0.02
    agent.set_progress(250)
    assert agent.loss_config.entropy_cost == pytest.approx(0.015)
    agent.update_config(TrainConfig(entropy_cost=0.04, entropy_anneal_frames=1000))  # PBT: the schedule goes on
    assert agent.loss_config.entropy_cost == pytest.approx(0.03)
    agent.set_progress(5000)
    assert agent.loss_config.entropy_cost == 0.0  # then 0


def test_the_learner_tells_the_agent_its_progress_before_the_updates():
    import torch

    from impala_rl.runtime.builders import build_learner

    cfg = TrainConfig(env="CartPole-v1", torso="mlp", batch_size=2, unroll_length=5, entropy_cost=0.01,
                      entropy_anneal_frames=40, reward_clip=0.0).validate()
    spec = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
    learner = build_learner(cfg, spec, ImpalaAgent(cfg, spec).build_model())
    T, B = 5, 2
    batch = {"obs": torch.randn(T + 1, B, 4), "first": torch.zeros(T + 1, B, dtype=torch.bool),
             "last_action": torch.zeros(T + 1, B, dtype=torch.long), "reward": torch.ones(T + 1, B),
             "bootstrap": torch.zeros(T + 1, B), "terminal": torch.zeros(T + 1, B, dtype=torch.bool),
             "action": torch.zeros(T + 1, B, dtype=torch.long), "task": torch.zeros(B, dtype=torch.long),
             "policy_params": torch.zeros(T + 1, B, 2), "version": torch.zeros(B, dtype=torch.long)}
    # 2 unrolls x 5 steps = 10 frames a batch: the bonus is 0.01 x (1 - 10/40), then x (1 - 20/40)
    assert learner.step(batch)["entropy_cost"] == pytest.approx(0.0075)
    assert learner.step(batch)["entropy_cost"] == pytest.approx(0.005)
