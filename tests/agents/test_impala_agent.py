"""The IMPALA agent itself (agents/impala/agent.py): what its actors record, how it acts (a
sample or the most likely action, never one its task lacks), its values, and a loss that
weighs the network's policy against the recorded behaviour policy."""

import numpy as np
import pytest
import torch

from impala_rl.agents import make_agent
from impala_rl.agents.impala import ImpalaAgent
from impala_rl.config import TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.envs.tasks import MASKED_LOGIT
from impala_rl.models import NetOutput, net_inputs

CARTPOLE = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
TWO_TASKS = EnvSpec((3,), np.dtype(np.float32), "categorical", 3, tasks=("A-v0", "B-v0"), task_actions=(2, 3))


def test_it_records_the_behaviour_policy_and_its_lstm_state():
    agent = make_agent(TrainConfig(), CARTPOLE)
    assert isinstance(agent, ImpalaAgent)
    assert agent.record_fields() == {"policy_params": ((2,), torch.float32)}  # the logits
    assert agent.state_fields() == {}
    lstm = ImpalaAgent(TrainConfig(use_lstm=True, lstm_size=16), CARTPOLE)
    assert lstm.state_fields() == {"core_h": ((16,), torch.float32), "core_c": ((16,), torch.float32)}
    gaussian = EnvSpec((3,), np.dtype(np.float32), "gaussian", 2, (-1.0, -1.0), (1.0, 1.0))
    assert ImpalaAgent(TrainConfig(), gaussian).record_fields() == {"policy_params": ((4,), torch.float32)}


def test_it_samples_from_its_policy_or_takes_the_most_likely_action():
    agent = ImpalaAgent(TrainConfig(), CARTPOLE)
    logits = torch.tensor([[[3.0, -3.0], [-3.0, 3.0], [0.0, 0.1]]])  # [1, N=3, A=2]
    out = NetOutput(logits, torch.zeros(1, 3, 1))
    greedy = agent.act(out, torch.Generator().manual_seed(0), greedy=True)
    assert greedy.action.tolist() == [0, 1, 1]
    assert torch.equal(greedy.record["policy_params"], logits[0])  # what the learner's V-trace needs
    near_tie = NetOutput(torch.tensor([0.0, 0.1]).expand(1, 50, 2), torch.zeros(1, 50, 1))
    assert (agent.act(near_tie, torch.Generator().manual_seed(0), greedy=True).action == 1).all()
    again = [agent.act(out, torch.Generator().manual_seed(7)).action for _ in range(2)]
    assert torch.equal(*again)  # the actor's generator decides
    ones = torch.stack([agent.act(out, torch.Generator().manual_seed(s)).action for s in range(400)]).float().mean(0)
    assert ones[0] < 0.03 and ones[1] > 0.97 and 0.4 < ones[2] < 0.65  # P(1) = 0.0025, 0.9975, 0.525


def test_a_task_never_takes_an_action_it_lacks():
    agent = ImpalaAgent(TrainConfig(env="A-v0,B-v0"), TWO_TASKS)
    logits = torch.tensor([[[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]]])  # both prefer action 2, which task 0 lacks
    out, task = NetOutput(logits, torch.zeros(1, 2, 2)), torch.tensor([0, 1])
    greedy = agent.act(out, torch.Generator(), greedy=True, task=task)
    assert greedy.action.tolist() == [0, 2]
    assert greedy.record["policy_params"][0, 2] == MASKED_LOGIT and greedy.record["policy_params"][1, 2] == 9.0
    sampled = torch.stack([agent.act(out, torch.Generator().manual_seed(s), task=task).action for s in range(100)])
    assert (sampled[:, 0] != 2).all() and (sampled[:, 1] == 2).float().mean() > 0.9
    with pytest.raises(ValueError, match="needs each environment's task"):
        agent.act(out, torch.Generator())


def test_value_is_each_environments_own_tasks():
    agent = ImpalaAgent(TrainConfig(env="A-v0,B-v0"), TWO_TASKS)
    values = torch.tensor([[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]])  # [1, N=3, K=2]
    value = agent.value(NetOutput(torch.zeros(1, 3, 3), values), task=torch.tensor([1, 0, 1]))
    assert value.tolist() == [10.0, 2.0, 30.0]


def test_the_loss_weighs_the_policy_against_the_recorded_behaviour_policy():
    cfg = TrainConfig(reward_clip=0.0)
    agent = ImpalaAgent(cfg, CARTPOLE)
    model = agent.build_model()
    T, B = 5, 3
    g = torch.Generator().manual_seed(0)
    batch = {"obs": torch.randn(T + 1, B, 4, generator=g), "first": torch.zeros(T + 1, B, dtype=torch.bool),
             "last_action": torch.randint(0, 2, (T + 1, B), generator=g), "reward": torch.ones(T + 1, B),
             "bootstrap": torch.zeros(T + 1, B), "terminal": torch.zeros(T + 1, B, dtype=torch.bool),
             "action": torch.randint(0, 2, (T + 1, B), generator=g), "task": torch.zeros(B, dtype=torch.long)}
    with torch.no_grad():
        out, _ = model(**net_inputs(batch["obs"], batch["first"], batch["last_action"], batch["reward"], 0.0))
    on_policy = dict(batch, policy_params=out.policy_params)
    loss, metrics, _ = agent.loss(model, on_policy)  # a LossOutput
    assert loss.requires_grad and float(metrics["mean_rho"]) == pytest.approx(1.0, abs=1e-5)
    # An older behaviour policy mu (action 0's logit raised by 1): the importance weights are
    # pi(a) / mu(a) of the actions taken (rows 0..T-1), the network's policy over the recorded one.
    older = dict(batch, policy_params=out.policy_params + torch.tensor([1.0, 0.0]))
    loss_older, metrics_older, _ = agent.loss(model, older)
    taken = batch["action"][:-1, :, None]
    pi = torch.softmax(out.policy_params[:-1], -1).gather(-1, taken)
    mu = torch.softmax(older["policy_params"][:-1], -1).gather(-1, taken)
    assert float(metrics_older["mean_rho"]) == pytest.approx(float((pi / mu).mean()), rel=1e-5)
    assert float(metrics_older["mean_rho"]) != pytest.approx(1.0, abs=1e-2)
    assert float(loss_older.detach()) != pytest.approx(float(loss.detach()), abs=1e-6)
