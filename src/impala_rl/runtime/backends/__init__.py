"""How actors run: backends by name (``--backend``).

Each entry builds a :class:`~impala_rl.runtime.backends.base.Backend` from
``(cfg, env_spec, learner)``; modules are imported only when their backend is chosen
(Ray stays optional).
"""

from __future__ import annotations

from typing import Callable


def _serial(cfg, env_spec, learner):
    from impala_rl.runtime.backends.serial import SerialBackend
    return SerialBackend(cfg, env_spec, learner.model)


def _local(cfg, env_spec, learner):
    from impala_rl.runtime.backends.local import LocalBackend
    return LocalBackend(cfg, env_spec, learner.model)


def _ray(cfg, env_spec, learner):
    if cfg.num_learners > 1:  # this process is learner 0 of N; wires the gradient all-reduce into `learner`
        from impala_rl.runtime.distributed import MultiLearnerBackend
        return MultiLearnerBackend(cfg, env_spec, learner)
    from impala_rl.runtime.backends.ray_backend import RayBackend
    return RayBackend(cfg, env_spec, learner.model, version=learner.version)


BACKEND_FACTORIES: dict[str, Callable] = {"serial": _serial, "local": _local, "ray": _ray}
"""name -> factory(cfg, env_spec, learner) -> Backend; ``--backend`` accepts these names."""


def check_backend(name: str) -> None:
    """Raise ConfigError unless ``name`` is a registered backend (``--backend`` is checked here, not
    in config.py, so that the names are defined once and config imports no runtime module)."""
    from impala_rl.config import ConfigError

    if name not in BACKEND_FACTORIES:
        raise ConfigError(f"backend '{name}' is not one of: {', '.join(BACKEND_FACTORIES)}")


def make_backend(cfg, env_spec, learner):
    """The backend ``cfg.backend`` names, feeding ``learner`` (its model's weights go to the actors)."""
    check_backend(cfg.backend)
    return BACKEND_FACTORIES[cfg.backend](cfg, env_spec, learner)
