"""Agent networks: the paper's shallow and deep (ResNet) torsos, an MLP torso for flat
observations, MinAtar's small conv torso, the optional LSTM core, and the policy and
value heads.

Imports torch and :mod:`impala_rl.core` only.
"""

from impala_rl.models import torsos
from impala_rl.models.inputs import net_inputs
from impala_rl.models.net import POLICY_TYPES, CoreState, ImpalaNet, NetConfig, NetOutput
from impala_rl.models.torsos import TORSOS, make_torso

__all__ = [
    "CoreState",
    "ImpalaNet",
    "NetConfig",
    "NetOutput",
    "POLICY_TYPES",
    "TORSOS",
    "make_torso",
    "net_inputs",
    "torsos",
]
