"""The agent seam: an agent defined outside the package (tests/runtime/reinforce_agent.py)
runs on the serial and local backends with no runtime code knowing of it."""

import csv

import numpy as np
import pytest
import torch

from impala_rl.agents import agent_class, make_agent
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.runtime.train import Trainer
from impala_rl.runtime.types import RolloutSpec

AGENT = "reinforce_agent:ReinforceAgent"
RANDOM_CARTPOLE = 22.0


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Trainer.run sets this process's torch threads: the tests run after these get theirs back
    (tests/runtime/conftest.py's fixture did this while these tests lived there)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def cfg_for(tmp_path, backend, **kw):
    base = dict(env="CartPole-v1", agent=AGENT, backend=backend, num_actors=2, envs_per_actor=4, batch_size=8,
                unroll_length=20, total_frames=100_000, optimizer="adam", learning_rate=3e-3, lr_anneal=False,
                reward_clip=0.0, seed=1, run_dir=str(tmp_path / "run"), quiet=True, log_interval=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_the_layout_carries_the_agents_records_and_state():
    env_spec = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
    agent = make_agent(TrainConfig(agent=AGENT), env_spec)
    spec = RolloutSpec.for_agent(5, env_spec, agent)
    assert spec.row_fields()["logp"] == ((), torch.float32) and "policy_params" not in spec.row_fields()
    assert spec.state_names == ("steps",) and set(spec.slot_fields()) == {"version", "task", "stream", "steps"}
    assert spec.allocate(3)["logp"].shape == (3, 6)


def test_unknown_agents_are_refused_with_what_is_accepted():
    with pytest.raises(ConfigError, match=r"agent 'dqn' is not one of: impala, merlin, rainbow \(or module:Class\); DQN is --agent rainbow "
                       r"--agent-options double=false,"):
        agent_class("dqn")
    with pytest.raises(ConfigError, match=r"agent 'nowhere:Agent' cannot be loaded \(ModuleNotFoundError"):
        agent_class("nowhere:Agent")


# Slow: trains to 4x a random policy's return (100k frames). Exclusive on the local backend: the
# policy lag (the logged logp drift) and so the result depend on the machine's load.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["serial", pytest.param("local", marks=pytest.mark.exclusive)])
def test_a_second_agent_learns_through_the_seams(tmp_path, backend):
    # One learner thread: the seams are under test, not the learner's threading. With a thread per
    # core, a serial run on a busy 2-core machine slowed from seconds to minutes (10k frames:
    # 1.8 s with one thread, 31-55 s with two), and the test ran into its 600 s timeout.
    result = Trainer(cfg_for(tmp_path, backend, learner_threads=1)).run()
    assert result.stop_reason == "done" and result.frames >= 100_000
    assert result.mean_return >= 4 * RANDOM_CARTPOLE, result.mean_return
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # The agent's own metrics are logged (columns come from what was recorded).
    assert all(r["reinforce_loss"] != "" for r in rows)
    drift = [float(r["reinforce_logp_drift"]) for r in rows]
    if backend == "serial":  # no policy lag: the recorded log-probabilities are the learner's own
        assert max(drift) < 1e-4, drift
    else:  # actors lag behind the learner
        assert max(drift) > 0


def test_an_agent_declares_its_own_options():
    env_spec = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
    assert make_agent(TrainConfig(agent=AGENT), env_spec).options.entropy_bonus == 0.0
    agent = make_agent(TrainConfig(agent=AGENT, agent_options="entropy_bonus=0.25"), env_spec)
    assert agent.options.entropy_bonus == 0.25
    with pytest.raises(ConfigError, match=r"agent option 'gamma=0.9' is not KEY=VALUE with KEY one of: entropy_bonus"):
        make_agent(TrainConfig(agent=AGENT, agent_options="gamma=0.9"), env_spec)
    with pytest.raises(ConfigError, match=r"agent option entropy_bonus=lots: expected a float"):
        make_agent(TrainConfig(agent=AGENT, agent_options="entropy_bonus=lots"), env_spec)
    with pytest.raises(ConfigError, match=r"agent 'impala' takes no --agent-options"):
        make_agent(TrainConfig(agent_options="entropy_bonus=0.1"), env_spec)


def test_the_agents_option_changes_its_loss(tmp_path):
    """The entropy bonus reaches the loss: the same batch gives a lower loss with it."""
    env_spec = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
    plain = make_agent(TrainConfig(agent=AGENT), env_spec)
    bonus = make_agent(TrainConfig(agent=AGENT, agent_options="entropy_bonus=1.0"), env_spec)
    model = plain.build_model()
    T, B = 4, 3
    g = torch.Generator().manual_seed(0)
    batch = {"obs": torch.randn(T + 1, B, 4, generator=g), "last_action": torch.zeros(T + 1, B, dtype=torch.long),
             "reward": torch.ones(T + 1, B), "first": torch.zeros(T + 1, B, dtype=torch.bool),
             "steps": torch.zeros(B), "action": torch.randint(0, 2, (T + 1, B), generator=g),
             "terminal": torch.zeros(T + 1, B, dtype=torch.bool), "logp": torch.zeros(T + 1, B)}
    loss0, m0, _ = plain.loss(model, batch)
    loss1, m1, _ = bonus.loss(model, batch)
    assert float(m0["reinforce_entropy"]) > 0.5  # near log 2 for a fresh policy
    assert loss1.detach().item() == pytest.approx(loss0.detach().item() - float(m1["reinforce_entropy"]), abs=1e-6)


def test_an_agent_declares_its_own_presets():
    from impala_rl.agents import agent_presets
    from impala_rl.cli.train import config_with_preset
    from impala_rl.config import PRESETS, TrainConfig

    assert agent_presets("impala")[0] is PRESETS  # IMPALA's are the project's tuned values
    agent = "reinforce_agent:ReinforceAgent"
    cfg, note = config_with_preset({"env": "CartPole-v1", "agent": agent})
    # its classic_control values, and none of IMPALA's (whose preset gives CartPole an MLP torso and batch 16)
    assert (cfg.optimizer, cfg.batch_size, cfg.reward_clip) == ("adam", 4, 0.0)
    assert cfg.torso == TrainConfig().torso and "batch_size=4" in note
    acrobot, _ = config_with_preset({"env": "Acrobot-v1", "agent": agent, "batch_size": 2})
    assert (acrobot.discount, acrobot.batch_size) == (0.995, 2)  # by env id on top; flags given win
    api = TrainConfig.for_env("CartPole-v1", presets=agent_presets(agent), agent=agent)
    assert (api.optimizer, api.batch_size) == ("adam", 4)


def test_an_agent_whose_act_predates_streams_still_runs(tmp_path):
    cfg = cfg_for(tmp_path, "serial", agent="reinforce_agent:ActWithoutStreams", total_frames=1_600, learner_threads=1)
    result = Trainer(cfg).run()
    assert result.stop_reason == "done" and result.frames >= 1_600
