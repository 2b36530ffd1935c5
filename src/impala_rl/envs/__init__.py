"""Environments: a Gymnasium factory with the IMPALA Atari pipeline, and env specs.

Only :mod:`impala_rl.runtime` and the CLI import this package. It depends on
numpy and gymnasium (ale-py is imported lazily, on the first Atari or registry call;
minatar on the first ``MinAtar/`` id, popgym and minigrid on the first id of theirs).
"""

from impala_rl.envs.factory import (
    FAMILIES,
    AtariOptions,
    UnknownEnvError,
    check_env_id,
    env_family,
    frames_per_step,
    is_atari,
    is_memory_task,
    is_minatar,
    make_env,
)
from impala_rl.envs.spec import EnvSpec, describe
from impala_rl.envs.wrappers import LifeLossInfo

__all__ = [
    "FAMILIES",
    "AtariOptions",
    "EnvSpec",
    "LifeLossInfo",
    "UnknownEnvError",
    "check_env_id",
    "describe",
    "env_family",
    "frames_per_step",
    "is_atari",
    "is_memory_task",
    "is_minatar",
    "make_env",
]
