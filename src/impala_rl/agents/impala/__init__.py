"""IMPALA (Espeholt et al. 2018): V-trace actor-critic, the first agent on the runtime."""

from impala_rl.agents.impala.agent import ImpalaAgent, build_model, loss_inputs, resolve_torso

__all__ = ["ImpalaAgent", "build_model", "loss_inputs", "resolve_torso"]
