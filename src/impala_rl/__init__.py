"""impala-rl: IMPALA (Espeholt et al., ICML 2018) in PyTorch.

The algorithm lives in :mod:`impala_rl.core` (pure functions over tensors); networks in
:mod:`impala_rl.models`; agents in :mod:`impala_rl.agents`; environments in
:mod:`impala_rl.envs`; actors, learner and the backends that run them in
:mod:`impala_rl.runtime`. The Python API (:mod:`impala_rl.api`): :func:`train`,
:func:`evaluate`, :class:`TrainConfig` (``TrainConfig.for_env`` applies the presets).
"""

__version__ = "0.1.0"

from impala_rl.api import evaluate, train  # noqa: E402
from impala_rl.config import PRESETS, TrainConfig  # noqa: E402

__all__ = ["PRESETS", "TrainConfig", "evaluate", "train", "__version__"]
