"""The Rainbow agent."""

from impala_rl.agents.rainbow.agent import RainbowAgent, RainbowOptions

__all__ = ["RainbowAgent", "RainbowOptions"]
