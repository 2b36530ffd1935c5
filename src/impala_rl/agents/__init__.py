"""Agents: the algorithms that run on the shared runtime (see :mod:`impala_rl.agents.base`)."""

from impala_rl.agents.base import (AGENTS, Action, Agent, AgentBase, LossOutput, agent_class, agent_options,
                                   agent_presets, make_agent, resume_fixed)

__all__ = ["AGENTS", "Action", "Agent", "AgentBase", "LossOutput", "agent_class", "agent_options", "agent_presets",
           "make_agent", "resume_fixed"]
