"""Build environments, the network and actors from a :class:`TrainConfig`.

Used by every backend (and by ``impala eval``) so an actor is the same object wherever
it runs.
"""

from __future__ import annotations

import torch

from impala_rl.config import ConfigError, TrainConfig
from impala_rl.core import distributions
from impala_rl.envs import AtariOptions, EnvSpec, describe, is_minatar, make_env
from impala_rl.envs.vector import make_env_group
from impala_rl.models import ImpalaNet
from impala_rl.runtime.actor import Actor, ActorGroup
from impala_rl.runtime.types import RolloutSpec, numpy_to_torch_dtype


def atari_options(cfg: TrainConfig) -> AtariOptions | None:
    if not cfg.is_atari:
        return None
    return AtariOptions(repeat_action_probability=cfg.sticky_actions, full_action_space=cfg.full_action_space,
                        noop_max=cfg.noop_max, max_episode_frames=cfg.max_episode_frames,
                        episodic_life=cfg.episodic_life)


def probe_env(cfg: TrainConfig) -> EnvSpec:
    """Open one environment to read its spaces (raises for unknown ids / unsupported spaces)."""
    env = make_env(cfg.env, seed=cfg.seed, atari=atari_options(cfg))
    try:
        return describe(env)
    finally:
        env.close()


def resolve_torso(cfg: TrainConfig, env_spec: EnvSpec) -> str:
    if cfg.torso == "auto":
        if is_minatar(cfg.env):
            return "minatar"
        return "shallow" if env_spec.is_image else "mlp"
    return cfg.torso


def build_model(cfg: TrainConfig, env_spec: EnvSpec) -> ImpalaNet:
    torch.manual_seed(cfg.seed)
    try:
        return ImpalaNet(tuple(env_spec.obs_shape), env_spec.action_dim, policy_type=env_spec.policy_type,
                         torso=resolve_torso(cfg, env_spec), use_lstm=cfg.use_lstm, lstm_size=cfg.lstm_size,
                         mlp_sizes=tuple(cfg.mlp_sizes), channels_last=cfg.channels_last and env_spec.is_image,
                         init=cfg.init, popart=cfg.popart, popart_beta=cfg.popart_beta,
                         normalize_observations=cfg.normalize_observations, activation=cfg.mlp_activation,
                         separate_value_torso=cfg.value_torso == "separate",
                         mean_bounds=((env_spec.action_low, env_spec.action_high)
                                      if cfg.bounded_mean and env_spec.policy_type == "gaussian" else None))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def rollout_spec(cfg: TrainConfig, env_spec: EnvSpec) -> RolloutSpec:
    return RolloutSpec(
        unroll_length=cfg.unroll_length,
        obs_shape=tuple(env_spec.obs_shape),
        obs_dtype=numpy_to_torch_dtype(env_spec.obs_dtype),
        policy_type=env_spec.policy_type,
        action_dim=env_spec.action_dim,
        num_policy_params=distributions.num_params(env_spec.policy_type, env_spec.action_dim),
        core_size=cfg.lstm_size if cfg.use_lstm else 0,
    )


def build_actor(cfg: TrainConfig, env_spec: EnvSpec, actor_id: int, restart: int = 0,
                forward=None) -> Actor | ActorGroup:
    """An actor with ``cfg.envs_per_actor`` fresh environments and its own CPU model copy.

    With ``cfg.env_groups`` > 1 the environments are split into that many groups stepped
    alternately (one steps while the actor computes on another) behind the same interface.
    ``forward`` replaces the local model for inference (central inference).
    """
    seed = cfg.seed + 10_007 * (actor_id + 1) + 1_000_003 * restart
    model = build_model(cfg, env_spec)
    model.eval()
    spec = rollout_spec(cfg, env_spec)
    sizes = [len(part) for part in _split(cfg.envs_per_actor, cfg.env_groups)]
    actors = []
    for g, size in enumerate(sizes):
        envs = make_env_group(cfg.env, size, seed + 101 * g, atari=atari_options(cfg), native=cfg.native_env)
        actors.append(Actor(spec, model, envs, seed=seed + 101 * g,
                            reward_clip=cfg.reward_clip, episodic_life=cfg.episodic_life, forward=forward))
    return actors[0] if len(actors) == 1 else ActorGroup(actors)


def _split(n: int, parts: int) -> list[range]:
    bounds = [n * i // parts for i in range(parts + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]
