"""runtime.play: the evaluation loop's hooks."""

import torch

from impala_rl.agents import make_agent
from impala_rl.config import TrainConfig
from impala_rl.runtime.builders import probe_env
from impala_rl.runtime.play import play


def test_watch_sees_the_environment_before_every_agent_step():
    cfg = TrainConfig(env="CartPole-v1", backend="serial").validate()
    spec = probe_env(cfg)
    agent = make_agent(cfg, spec)
    model = agent.build_model().eval()
    seen = []

    def watch(episode, env):
        seen.append((episode, tuple(env.unwrapped.state)))

    with torch.no_grad():
        returns, lengths = play(cfg, spec, agent, model, cfg.env, 0, 2, False, 7, 0, None, watch=watch)
    assert [e for e, _ in seen] == [0] * lengths[0] + [1] * lengths[1]  # one call per step, by episode
    assert len(set(seen)) == len(seen)  # each call saw the state of its own step
