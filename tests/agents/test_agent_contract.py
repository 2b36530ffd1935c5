"""The agent contract's optional parts (agents.base.AgentBase): an agent knows its actor,
keeps its own state (checkpointed, restored on resume, copied by PBT's exploit), declares
its tunable hyperparameters and resume-fixed fields, and building its network leaves the
process's random state alone."""

from __future__ import annotations

import pytest
import torch

from impala_rl.agents import make_agent, resume_fixed
from impala_rl.checkpoint import load_checkpoint
from impala_rl.config import TrainConfig
from impala_rl.pbt.member import exploit
from impala_rl.runtime.builders import build_actor, build_learner, probe_env
from impala_rl.runtime.learner import mutable_hyperparameters
from impala_rl.runtime.train import Trainer

AGENT = "reinforce_agent:ReinforceAgent"


def _cfg(tmp_path=None, **kw):
    base = dict(env="CartPole-v1", agent=AGENT, backend="serial", num_actors=2, envs_per_actor=4, batch_size=8,
                unroll_length=10, total_frames=800, optimizer="adam", reward_clip=0.0, seed=5, quiet=True,
                log_interval=100.0, run_dir=str(tmp_path / "run") if tmp_path else "")
    return TrainConfig(**{**base, **kw}).validate()


@pytest.mark.parametrize("agent", ["impala", AGENT])
def test_building_a_network_leaves_the_process_random_state_alone(agent):
    cfg = _cfg(agent=agent)
    env_spec = probe_env(cfg)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = make_agent(cfg, env_spec).build_model()
    assert torch.equal(torch.rand(3), expected)  # as if no network had been built
    b = make_agent(cfg, env_spec).build_model()
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name  # still seeded from the config


@pytest.mark.parametrize("agent", ["impala", AGENT])
def test_an_actor_agent_knows_its_actor_and_environments(agent):
    cfg = _cfg(agent=agent)
    env_spec = probe_env(cfg)
    actor = build_actor(cfg, env_spec, actor_id=1)
    try:
        assert actor.agent.actor == 1 and actor.agent.actor_envs() == range(4, 8)
        assert not actor.model.training  # the agent's acting_model: eval mode for these two
    finally:
        actor.envs.close()
    learner = build_learner(cfg, env_spec)
    assert learner.agent.actor is None and learner.agent.actor_envs() == range(0)


def test_the_agents_own_state_is_checkpointed_restored_and_copied_by_exploit(tmp_path):
    cfg = _cfg(tmp_path)
    result = Trainer(cfg).run()
    assert result.stop_reason == "done"
    state = load_checkpoint(tmp_path / "run")
    assert state["agent"] == {"updates": result.version} and result.version == 10  # 800 frames / 80 per batch
    resumed = Trainer(TrainConfig(**{**cfg.__dict__, "total_frames": 1600}), resume_state=state)
    assert resumed.learner.agent.updates == 10
    other = build_learner(_cfg(seed=9), probe_env(cfg))
    assert other.agent.updates == 0
    exploit(other, state)
    assert other.agent.updates == 10


def test_an_agent_without_state_refuses_a_foreign_one():
    cfg = _cfg(agent="impala")
    learner = build_learner(cfg, probe_env(cfg))
    assert learner.state_dict()["agent"] == {}
    with pytest.raises(ValueError, match="keeps no state of its own"):
        learner.agent.load_state_dict({"target": 1})


def test_each_agent_declares_what_may_change_while_training_and_on_resume():
    impala, reinforce = _cfg(agent="impala"), _cfg()
    assert {"learning_rate", "entropy_cost", "baseline_cost"} <= set(mutable_hyperparameters(impala))
    assert "discount" in mutable_hyperparameters(reinforce)
    assert "entropy_cost" not in mutable_hyperparameters(reinforce)  # its loss has no such weight
    learner = build_learner(reinforce, probe_env(reinforce))
    learner.set_hyperparameters(discount=0.5, learning_rate=1e-4)
    assert learner.agent.cfg.discount == 0.5 and learner.hyperparameters()["discount"] == 0.5
    with pytest.raises(ValueError, match="cannot change entropy_cost while training"):
        learner.set_hyperparameters(entropy_cost=0.1)
    assert {"env", "agent", "optimizer", "torso", "use_lstm", "popart"} <= set(resume_fixed(impala))
    assert set(resume_fixed(reinforce)) == {"env", "agent", "full_action_space", "optimizer"}


def test_a_network_that_breaks_the_contract_is_refused_in_one_line():
    import reinforce_agent

    from impala_rl.config import ConfigError

    cfg = _cfg()
    env_spec = probe_env(cfg)

    class NoValues(reinforce_agent.PolicyNet):
        def __init__(self, *a):
            super().__init__(*a)
            del self.num_values

    with pytest.raises(ConfigError, match="network lacks num_values .*impala_rl.agents.base.Network"):
        build_learner(cfg, env_spec, model=NoValues(4, 2))

    class Narrow(reinforce_agent.PolicyNet):
        def __init__(self, *a):
            super().__init__(*a)
            self.policy_param_size = 3  # but it returns 2 logits

    with pytest.raises(ConfigError, match=r"returned .*'policy_params': \(1, 2, 2\).*wants .*\(1, 2, 3\)"):
        build_learner(cfg, env_spec, model=Narrow(4, 2))


def test_the_test_agent_runs_with_central_inference(tmp_path):
    # the inference server allocates its responses from the contract's policy_param_size and num_values
    cfg = _cfg(tmp_path, backend="local", inference="central", total_frames=2400, num_actors=2)
    result = Trainer(cfg).run()
    assert result.stop_reason == "done" and result.frames >= 2400
    assert load_checkpoint(tmp_path / "run")["agent"]["updates"] == result.version
