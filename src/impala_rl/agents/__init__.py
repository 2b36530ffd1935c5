"""Agents: the algorithms that run on the shared runtime (see :mod:`impala_rl.agents.base`)."""

from impala_rl.agents.base import AGENTS, Action, Agent, LossOutput, agent_class, agent_options, make_agent

__all__ = ["AGENTS", "Action", "Agent", "LossOutput", "agent_class", "agent_options", "make_agent"]
