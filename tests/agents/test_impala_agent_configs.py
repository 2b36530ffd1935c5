"""The IMPALA agent reads its network's and its loss's parameter objects from the TrainConfig
fields (the flags stay as they are), and a hyperparameter PBT changes reaches its loss."""

from __future__ import annotations

import numpy as np

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
