"""Build environments: any registered Gymnasium id, with the paper's pipeline for Atari.

Atari (``ALE/...`` ids) follows the IMPALA paper's preprocessing: the emulator runs
with ``frameskip=1`` and :class:`gymnasium.wrappers.AtariPreprocessing` repeats each
action ``frame_skip`` times, max-pools the last two frames, converts to 84x84 grayscale
and applies up to 30 no-ops at reset; :class:`gymnasium.wrappers.FrameStackObservation`
stacks 4 frames into a uint8 ``[4, 84, 84]`` observation. Rewards are passed through
unclipped (clipping is the learner's business) and a life loss never ends the episode;
with ``episodic_life=True`` it is reported in ``info['life_lost']`` instead.

Episode statistics (unclipped return, length) are kept by the actor, which sees every
reward, so no statistics wrapper runs on the hot path.

MinAtar (``MinAtar/<Game>-v0|v1`` ids; Young & Tian 2019) steps the env as the
``minatar`` package makes it (sticky actions 0.1, difficulty ramping) and turns its
``[10, 10, C]`` bool observations into float32 ``[C, 10, 10]`` images of 0s and 1s
(:class:`~impala_rl.envs.wrappers.BinaryImageChannelFirst`). float32 rather than uint8:
the image torsos divide uint8 images by 255, and a float image is taken as scaled already.

ale-py registers the ``ALE/`` ids only when asked; that happens lazily, on the first
call that needs the registry, so ``import impala_rl.envs`` has no side effects. The
``MinAtar/`` ids are registered the same way, but only when a ``MinAtar/`` id (or an
unknown id, for suggestions) is checked: importing ``minatar`` takes about a second
(it imports matplotlib and seaborn), which other environments should not pay.

Memory tasks (:mod:`impala_rl.envs.memory_tasks`, docs/memory_tasks.md): POPGym's
(``popgym/<Task><Level>-v0``, e.g. ``popgym/RepeatPreviousEasy-v0``) observations become
one float32 vector (one-hot per discrete component) and MiniGrid's (``MiniGrid-MemoryS11-v0``)
a float32 one-hot image ``[20, 7, 7]``; both are registered on request like MinAtar's, and
are of the ``memory`` family.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import (
    AtariPreprocessing,
    FrameStackObservation,
)

from impala_rl.envs.memory_tasks import (
    is_minigrid,
    is_popgym,
    make_memory_env,
    memory_kind,
    register_minigrid,
    register_popgym,
)
from impala_rl.envs.spec import describe
from impala_rl.envs.wrappers import (
    BinaryImageChannelFirst,
    ClipActionToBounds,
    FlattenBoxAction,
    Float32Observation,
    LifeLossInfo,
    StackedFramesChannelFirst,
)

__all__ = [
    "AtariOptions",
    "UnknownEnvError",
    "FAMILIES",
    "check_env_id",
    "env_family",
    "frames_per_step",
    "is_atari",
    "is_minatar",
    "is_memory_task",
    "make_env",
]

_ATARI_PREFIX = "ALE/"
_MINATAR_PREFIX = "MinAtar/"
_ALE_ENTRY_POINT = "ale_py.env:AtariEnv"
_EXAMPLE_IDS = "CartPole-v1, ALE/Pong-v5"


class UnknownEnvError(ValueError):
    """An environment id that is not in the Gymnasium registry."""


@dataclass(frozen=True)
class AtariOptions:
    """Atari preprocessing; the defaults are the standard IMPALA / DQN settings.

    Attributes:
        frame_skip: action repeat; the observation max-pools the last two emulator
            frames. One agent step is ``frame_skip`` emulator frames.
        screen_size: observations are resized to ``screen_size x screen_size``.
        grayscale: grayscale frames (``[stack, H, W]``); ``False`` gives RGB stacked as
            ``[3 * stack, H, W]``.
        frame_stack: number of most recent frames in one observation.
        noop_max: at reset, a uniformly random number in ``[1, noop_max]`` of no-op
            emulator frames (0 disables).
        repeat_action_probability: ALE sticky actions; 0 turns them off (the paper's
            setting). Machado et al. (2018) recommend 0.25 for evaluation.
        full_action_space: use all 18 Atari actions instead of the game's minimal set.
        max_episode_frames: truncate an episode after this many emulator frames
            (108,000 = 30 minutes of play = 27,000 agent steps at ``frame_skip=4``);
            ``None`` for no cap.
        episodic_life: report life losses in ``info['life_lost']`` (see
            :class:`~impala_rl.envs.wrappers.LifeLossInfo`); the episode goes on.
    """

    frame_skip: int = 4
    screen_size: int = 84
    grayscale: bool = True
    frame_stack: int = 4
    noop_max: int = 30
    repeat_action_probability: float = 0.0
    full_action_space: bool = False
    max_episode_frames: int | None = 108_000
    episodic_life: bool = False

    def __post_init__(self) -> None:
        for name in ("frame_skip", "screen_size", "frame_stack"):
            if getattr(self, name) < 1:
                raise ValueError(f"AtariOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.noop_max < 0:
            raise ValueError(f"AtariOptions.noop_max must be >= 0, got {self.noop_max}")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise ValueError(
                "AtariOptions.repeat_action_probability must be in [0, 1], "
                f"got {self.repeat_action_probability}"
            )
        if self.max_episode_frames is not None and self.max_episode_frames < 1:
            raise ValueError(
                "AtariOptions.max_episode_frames must be >= 1 or None (no cap), "
                f"got {self.max_episode_frames}"
            )


# make_env keyword arguments that the Atari pipeline sets itself -> the AtariOptions
# field to use instead.
_ATARI_OWNED_KWARGS = {
    "frameskip": "frame_skip",
    "repeat_action_probability": "repeat_action_probability",
    "full_action_space": "full_action_space",
    "max_num_frames_per_episode": "max_episode_frames",
    "obs_type": "grayscale",
}


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` gets the Atari pipeline (ids of the form ``ALE/<Game>-v5``)."""
    return env_id.startswith(_ATARI_PREFIX)


def is_minatar(env_id: str) -> bool:
    """Whether ``env_id`` is a MinAtar game (ids of the form ``MinAtar/<Game>-v1``).

    These ids exist once :func:`check_env_id` (or :func:`make_env`) has registered them.
    """
    return env_id.rpartition(":")[2].startswith(_MINATAR_PREFIX)


def is_memory_task(env_id: str) -> bool:
    """Whether ``env_id`` is a POPGym or MiniGrid task (:mod:`impala_rl.envs.memory_tasks`),
    registering its package's ids if needed (False for an unknown id)."""
    name = env_id.rpartition(":")[2]
    if is_popgym(name):
        register_popgym()
    elif is_minigrid(name):
        register_minigrid()
    return memory_kind(name) is not None


FAMILIES = ("atari", "minatar", "continuous", "classic_control", "memory")
"""Environment families, each with its own training preset (``impala_rl.config.PRESETS``)."""


@functools.cache
def env_family(env_id: str) -> str:
    """``'atari'`` (``ALE/`` ids), ``'minatar'``, ``'memory'`` (POPGym and MiniGrid ids,
    :mod:`impala_rl.envs.memory_tasks`), ``'continuous'`` (a ``Box`` action space:
    Pendulum, MuJoCo, ...) or ``'classic_control'`` (any other id: discrete actions).

    Raises :class:`UnknownEnvError` for an unregistered id (other ids are opened once to
    read their action space). Several comma-separated ids (a multi-task run) must all be
    of one family (ValueError otherwise).
    """
    if "," in env_id:
        ids = [part.strip() for part in env_id.split(",") if part.strip()]
        families = [env_family(i) for i in ids]
        if len(set(families)) > 1:
            raise ValueError("the tasks of one run must be of one environment family (one preset, one "
                             "observation kind); got " + ", ".join(f"{i}: {f}" for i, f in zip(ids, families)))
        return families[0]
    if is_atari(env_id):
        return "atari"
    check_env_id(env_id)
    if is_minatar(env_id):
        return "minatar"
    if is_memory_task(env_id):
        return "memory"
    env = gym.make(env_id)
    try:
        return "continuous" if isinstance(env.action_space, spaces.Box) else "classic_control"
    finally:
        env.close()


def frames_per_step(env_id: str, atari: AtariOptions | None = None) -> int:
    """Environment frames per agent step: the action repeat for Atari, else 1.

    Throughput in frames is agent steps times this (the paper's "frames").
    """
    return (atari or AtariOptions()).frame_skip if is_atari(env_id) else 1


@functools.cache
def _register_ale() -> None:
    """Add the ``ALE/`` ids to the Gymnasium registry (once, on first use)."""
    import ale_py

    gym.register_envs(ale_py)


@functools.cache
def _register_minatar() -> bool:
    """Add the ``MinAtar/`` ids to the Gymnasium registry (once); False if minatar is missing."""
    try:
        import minatar.gym
    except ImportError:
        return False
    if f"{_MINATAR_PREFIX}Breakout-v1" not in gym.registry:  # the user may have done it already
        minatar.gym.register_envs()
    return True


def check_env_id(env_id: str) -> None:
    """Raise :class:`UnknownEnvError` unless ``env_id`` is a registered Gymnasium id.

    ``module:EnvId`` imports ``module`` first (as :func:`gymnasium.make` does), so that
    third-party packages can register their envs. The error suggests close matches.
    Several comma-separated ids (a multi-task run) are each checked.
    """
    if "," in env_id:
        for part in env_id.split(","):
            check_env_id(part.strip())
        return
    _register_ale()
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UnknownEnvError(
                f"environment id {env_id!r} names module {module!r}, which cannot be "
                f"imported: {err}"
            ) from None
    if is_minatar(name) and not _register_minatar():
        raise UnknownEnvError(
            f"environment id {env_id!r} is a MinAtar game, but the minatar package is not "
            "installed: pip install minatar"
        )
    for named, register, package in ((is_popgym, register_popgym, "popgym"),
                                     (is_minigrid, register_minigrid, "minigrid")):
        if named(name) and not register():
            raise UnknownEnvError(
                f"environment id {env_id!r} is a {package} task, but the {package} package is not "
                f"installed: pip install {package}"
            )
    if name in gym.registry:
        return
    # So that suggestions cover MinAtar, POPGym and MiniGrid ids too.
    _register_minatar()
    register_popgym()
    register_minigrid()
    by_lower = {known.lower(): known for known in gym.registry}
    close = [by_lower[m] for m in difflib.get_close_matches(name.lower(), by_lower, n=3)]
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise UnknownEnvError(
        f"unknown environment id {env_id!r}{hint} "
        f"(any registered Gymnasium id is accepted, e.g. {_EXAMPLE_IDS})"
    )


def make_env(
    env_id: str,
    seed: int | None = None,
    atari: AtariOptions | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Make one environment ready for an actor.

    Args:
        env_id: a registered Gymnasium id; ``ALE/<Game>-v5`` gets the Atari pipeline
            and ``MinAtar/<Game>-v1`` float32 ``[C, 10, 10]`` observations (see the
            module docstring), any other id a plain :func:`gymnasium.make` that keeps its
            ``TimeLimit`` (so episodes end with ``truncated=True``).
        seed: if given, the env is reset once with ``reset(seed=seed)`` and its action
            space seeded, so the episodes that follow (the caller's plain ``reset()``
            included) are reproducible.
        atari: Atari preprocessing options (default :class:`AtariOptions`); ignored for
            non-Atari ids.
        **kwargs: passed to :func:`gymnasium.make` (e.g. ``max_episode_steps``,
            ``render_mode``; for MinAtar also ``sticky_action_prob`` and
            ``difficulty_ramping``; for MiniGrid e.g. ``max_steps``). For Atari, the keys that
            :class:`AtariOptions` controls are refused.

    Non-Atari envs are adapted to what :func:`describe` accepts: vector observations are
    cast to float32, ``Box`` actions take a flat vector and are clipped to their bounds
    (the env sees the clipped action; the learner keeps the unclipped Gaussian sample).
    POPGym and MiniGrid observations are one-hot encoded (module docstring).

    Raises:
        UnknownEnvError: the id is not registered (with suggestions).
        ValueError: the env's spaces are not supported, or a legacy Atari id is used.
    """
    check_env_id(env_id)
    if is_atari(env_id):
        env = _make_atari(env_id, atari or AtariOptions(), kwargs)
    elif is_minatar(env_id):
        env = BinaryImageChannelFirst(gym.make(env_id, **kwargs))
    else:
        _reject_legacy_atari(env_id)
        env = _make_generic(env_id, kwargs)
    try:
        describe(env)
    except ValueError as err:
        env.close()
        raise ValueError(f"{env_id}: {err}") from None
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _make_atari(env_id: str, options: AtariOptions, kwargs: dict[str, Any]) -> gym.Env:
    clashes = sorted(set(kwargs) & _ATARI_OWNED_KWARGS.keys())
    if clashes:
        fields = ", ".join(f"{k} -> AtariOptions.{_ATARI_OWNED_KWARGS[k]}" for k in clashes)
        raise ValueError(f"set these through AtariOptions, not make_env kwargs: {fields}")
    env = gym.make(
        env_id,
        frameskip=1,  # AtariPreprocessing repeats actions and max-pools frames
        repeat_action_probability=options.repeat_action_probability,
        full_action_space=options.full_action_space,
        max_num_frames_per_episode=options.max_episode_frames,
        # AtariPreprocessing reads the screen from the emulator itself; asking ALE for
        # grayscale frames only saves it copying RGB on every emulator frame.
        obs_type="grayscale" if options.grayscale else "rgb",
        **kwargs,
    )
    env = AtariPreprocessing(
        env,
        noop_max=options.noop_max,
        frame_skip=options.frame_skip,
        screen_size=options.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=options.grayscale,
        scale_obs=False,
    )
    env = FrameStackObservation(env, options.frame_stack)  # [S, H, W] or [S, H, W, 3]
    if not options.grayscale:
        env = StackedFramesChannelFirst(env)  # [3 * S, H, W]
    if options.episodic_life:
        env = LifeLossInfo(env)
    return env


def _make_generic(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    env = make_memory_env(env_id, kwargs) if memory_kind(env_id) else gym.make(env_id, **kwargs)
    obs_space = env.observation_space
    if isinstance(obs_space, spaces.Box) and obs_space.dtype != np.float32:
        is_uint8_image = len(obs_space.shape) == 3 and obs_space.dtype == np.uint8
        if not is_uint8_image:
            env = Float32Observation(env)
    if isinstance(env.action_space, spaces.Box):
        if len(env.action_space.shape) != 1:
            env = FlattenBoxAction(env)
        env = ClipActionToBounds(env)
    return env


def _reject_legacy_atari(env_id: str) -> None:
    """Point pre-v5 Atari ids (``PongNoFrameskip-v4``) to their ``ALE/`` id.

    They would otherwise skip the Atari pipeline and yield raw [210, 160, 3] frames.
    """
    spec = gym.registry[env_id.rpartition(":")[2]]
    if spec.entry_point != _ALE_ENTRY_POINT:
        return
    game = spec.kwargs.get("game")
    current = [
        known
        for known, other in gym.registry.items()
        if is_atari(known) and other.kwargs.get("game") == game
    ]
    raise ValueError(
        f"{env_id!r} is a legacy Atari id; use {' or '.join(current) or 'an ALE/ id'} "
        "(make_env applies the Atari preprocessing to ALE/ ids)"
    )
