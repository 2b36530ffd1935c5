"""The IMPALA agent reads its loss's parameter object from the TrainConfig fields (the flags
stay as they are), and a hyperparameter PBT changes reaches its loss."""

from __future__ import annotations

import numpy as np

from impala_rl.agents.impala.agent import ImpalaAgent, loss_config
from impala_rl.config import TrainConfig
from impala_rl.core.losses import LossConfig
from impala_rl.core.vtrace import VTraceParams
from impala_rl.envs.spec import EnvSpec

VECTOR = EnvSpec((4,), np.dtype(np.float32), "gaussian", 2, action_low=(-1.0, -2.0), action_high=(1.0, 2.0))


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

