"""impala-rl: IMPALA (Espeholt et al., ICML 2018) in PyTorch.

The algorithm lives in :mod:`impala_rl.core` (pure functions over tensors); networks in
:mod:`impala_rl.models`; environments in :mod:`impala_rl.envs`; actors, learner and the
backends that run them in :mod:`impala_rl.runtime`.
"""

__version__ = "0.1.0"
