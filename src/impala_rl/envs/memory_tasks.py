"""Memory tasks: POPGym's games (``popgym/<Task><Level>-v0``) and MiniGrid (``MiniGrid-...``).

Both packages are optional at import time and registered on request, as MinAtar is
(:mod:`impala_rl.envs.factory`): :func:`register_popgym` when a ``popgym`` id is checked,
:func:`register_minigrid` (which imports ``minigrid``; it registers its ids on import)
when a ``MiniGrid-`` id is; both for the suggestions of an unknown id.

POPGym (Morad et al., 2023) registers ``popgym-<Task><Level>-v0`` ids when it is imported;
ours are ``popgym/<Task><Level>-v0`` (a Gymnasium namespace), registered here with the
same classes, for every task POPGym registers (``popgym.envs.ALL``). The tasks the
project documents and tests are RepeatPrevious, Autoencode and Concentration
(docs/memory_tasks.md). Their observations (``Discrete``, ``MultiDiscrete``, ``Tuple``,
``Box``) become one float32 vector (:class:`~impala_rl.envs.wrappers.OneHotObservation`);
a ``MultiDiscrete`` action space (Battleship, MineSweeper) becomes one ``Discrete`` of
all combinations (:class:`~impala_rl.envs.wrappers.FlattenMultiDiscreteAction`).

MiniGrid (Chevalier-Boisvert et al., 2023): the agent's 7x7 egocentric view of
(object, colour, state) codes becomes a float32 one-hot image ``[20, 7, 7]``
(:class:`~impala_rl.envs.wrappers.OneHotImageChannels`: 11 object, 6 colour and 3 state
channels); the heading (``direction``) and the text ``mission`` are dropped. That loses
nothing on ``MiniGrid-Memory*`` (its mission is constant and the view is egocentric) but
makes tasks whose mission varies (Fetch, GoToDoor, PutNear, ...) unsolvable.
"""

from __future__ import annotations

import functools
from importlib.util import find_spec
from typing import Any, Literal

import gymnasium as gym
from gymnasium import spaces

from impala_rl.envs.wrappers import FlattenMultiDiscreteAction, OneHotImageChannels, OneHotObservation

__all__ = [
    "MINIGRID_PREFIX",
    "POPGYM_PREFIX",
    "is_minigrid",
    "is_popgym",
    "make_memory_env",
    "memory_kind",
    "register_minigrid",
    "register_popgym",
]

POPGYM_PREFIX = "popgym/"
MINIGRID_PREFIX = "MiniGrid-"
_POPGYM_NATIVE_PREFIX = "popgym-"  # POPGym's own ids


def _name(env_id: str) -> str:
    return env_id.rpartition(":")[2]


def is_popgym(env_id: str) -> bool:
    """Whether ``env_id`` names a POPGym task: ``popgym/<Task>-v0`` (ours) or ``popgym-<Task>-v0``
    (POPGym's own, registered when ``popgym`` is imported). Read off the id alone."""
    return _name(env_id).startswith((POPGYM_PREFIX, _POPGYM_NATIVE_PREFIX))


def is_minigrid(env_id: str) -> bool:
    """Whether ``env_id`` names a MiniGrid task (``MiniGrid-<Task>-v0``). Read off the id alone."""
    return _name(env_id).startswith(MINIGRID_PREFIX)


def memory_kind(env_id: str) -> Literal["popgym", "minigrid"] | None:
    """``'popgym'`` or ``'minigrid'`` for a registered id whose environment comes from that
    package (by its entry point, so ids registered under other names count too), else None."""
    spec = gym.registry.get(_name(env_id))
    if spec is None:
        return None
    entry = spec.entry_point
    module = entry.partition(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "") or ""
    for package in ("popgym", "minigrid"):
        if module == package or module.startswith(package + "."):
            return package  # type: ignore[return-value]
    return None


@functools.cache
def register_popgym() -> bool:
    """Add ``popgym/<Task>-v0`` for every task of ``popgym.envs.ALL`` (once); False if popgym is
    missing. Importing ``popgym`` (about 0.2 s) also registers its own ``popgym-`` ids."""
    if find_spec("popgym") is None:
        return False
    import popgym.envs

    for cls, options in popgym.envs.ALL.items():
        native = options["id"]
        ours = POPGYM_PREFIX + native.removeprefix(_POPGYM_NATIVE_PREFIX)
        if ours not in gym.registry:
            extra = {k: v for k, v in options.items() if k != "id"}
            gym.register(ours, entry_point=f"{cls.__module__}:{cls.__name__}", **extra)
    return True


@functools.cache
def register_minigrid() -> bool:
    """Import ``minigrid``, which registers its ids (once); False if it is missing."""
    if find_spec("minigrid") is None:
        return False
    import minigrid  # noqa: F401  (registration is the import's side effect)

    return True


@functools.cache
def _minigrid_channel_sizes() -> tuple[int, int, int]:
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

    return len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX)


def make_memory_env(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    """``gym.make(env_id)`` for a POPGym or MiniGrid id (:func:`memory_kind`), with the
    observation (and action) encoding of the module docstring."""
    kind = memory_kind(env_id)
    env = gym.make(env_id, **kwargs)
    if kind == "minigrid":
        return OneHotImageChannels(env, _minigrid_channel_sizes(), key="image")
    if kind == "popgym":
        env = OneHotObservation(env)
        if isinstance(env.action_space, spaces.MultiDiscrete):
            env = FlattenMultiDiscreteAction(env)
        return env
    env.close()
    raise ValueError(f"{env_id!r} is neither a POPGym nor a MiniGrid environment")
