"""MERLIN (Wayne et al. 2018): a memory-based predictor trained by an ELBO beside IMPALA's V-trace policy."""

from impala_rl.agents.merlin.agent import MerlinAgent, MerlinOptions, merlin_options
from impala_rl.agents.merlin.network import MerlinConfig, MerlinNet, MerlinOutput, state_nbytes, state_spec

__all__ = ["MerlinAgent", "MerlinConfig", "MerlinNet", "MerlinOptions", "MerlinOutput", "merlin_options",
           "state_nbytes", "state_spec"]
