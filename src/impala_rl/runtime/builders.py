"""Build environments, the agent's network, rollout layout and actors from a :class:`TrainConfig`.

Used by every backend (and by ``impala eval``) so an actor is the same object wherever
it runs.
"""

from __future__ import annotations

import torch

from impala_rl.agents import make_agent
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.envs import AtariOptions, EnvSpec, describe, make_env
from impala_rl.envs.tasks import combine_specs, env_tasks, make_task_env_group, task_ids
from impala_rl.envs.vector import make_env_group
from impala_rl.models import net_inputs
from impala_rl.runtime.actor import Actor, ActorGroup
from impala_rl.runtime.learner import Learner
from impala_rl.runtime.types import RolloutSpec


def resolve_device(name: str) -> torch.device:
    """The learner's device for ``--device`` (auto: CUDA when torch sees one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def atari_options(cfg: TrainConfig) -> AtariOptions | None:
    if not cfg.is_atari:
        return None
    return AtariOptions(repeat_action_probability=cfg.sticky_actions, full_action_space=cfg.full_action_space,
                        noop_max=cfg.noop_max, max_episode_frames=cfg.max_episode_frames,
                        episodic_life=cfg.episodic_life)


def probe_env(cfg: TrainConfig) -> EnvSpec:
    """Open one environment of each task to read its spaces (raises for unknown ids or
    unsupported spaces, and for tasks whose spaces cannot be reconciled)."""
    ids = task_ids(cfg.env)
    specs = []
    for env_id in ids:
        env = make_env(env_id, seed=cfg.seed, atari=atari_options(cfg))
        try:
            specs.append(describe(env))
        finally:
            env.close()
    return specs[0] if len(ids) == 1 else combine_specs(ids, specs)


def rollout_spec(cfg: TrainConfig, env_spec: EnvSpec) -> RolloutSpec:
    """The rollout slot layout: the environment's columns and the agent's records and state."""
    return RolloutSpec.for_agent(cfg.unroll_length, env_spec, make_agent(cfg, env_spec))


def check_network(agent, spec: RolloutSpec, model: torch.nn.Module) -> None:
    """Step ``model`` once on two environments as an actor does and check the network
    contract (:class:`impala_rl.agents.base.Network`); ConfigError names what is missing."""
    name = type(agent).__name__
    missing = [a for a in ("initial_state", "policy_param_size", "num_values") if not hasattr(model, a)]
    if missing:
        raise ConfigError(f"agent {name}'s network lacks {', '.join(missing)} (the network contract: "
                          f"impala_rl.agents.base.Network)")
    row = {k: v[:, 0] for k, v in spec.allocate(2).items() if v.dim() > 1}  # one row of two environments
    state = model.initial_state(2)
    shapes = [tuple(s.shape[1:]) for s in state]
    if shapes != [shape for shape, _ in agent.state_fields().values()]:
        raise ConfigError(f"agent {name}: initial_state gives shapes {shapes}, its state_fields declare "
                          f"{[shape for shape, _ in agent.state_fields().values()]}")
    with torch.no_grad():
        out, _ = model(core_state=state, **net_inputs(row["obs"][None], row["first"][None], row["last_action"][None],
                                                      row["reward"][None], 0.0))
    want = {"policy_params": (1, 2, int(model.policy_param_size)), "values": (1, 2, int(model.num_values))}
    got = {k: tuple(getattr(out, k).shape) if hasattr(out, k) else None for k in want}
    if got != want:
        raise ConfigError(f"agent {name}'s network returned {got} for one step of two environments; the network "
                          f"contract wants {want}")


def build_learner(cfg: TrainConfig, env_spec: EnvSpec, model: torch.nn.Module | None = None,
                  device: torch.device | str = "cpu") -> Learner:
    """A learner for the agent ``cfg.agent`` (a fresh network unless ``model`` is given),
    its network checked against the contract first."""
    agent = make_agent(cfg, env_spec)
    agent.check_resources()  # what it will allocate fits, before the network is built or anything written
    model = agent.build_model() if model is None else model
    spec = RolloutSpec.for_agent(cfg.unroll_length, env_spec, agent)
    check_network(agent, spec, model)
    return Learner(cfg, spec, model, torch.device(device), agent)


def build_actor(cfg: TrainConfig, env_spec: EnvSpec, actor_id: int, restart: int = 0,
                forward=None) -> Actor | ActorGroup:
    """An actor with ``cfg.envs_per_actor`` fresh environments and its own CPU model copy.

    With ``cfg.env_groups`` > 1 the environments are split into that many groups stepped
    alternately (one steps while the actor computes on another) behind the same interface.
    ``forward`` replaces the local model for inference (central inference).
    """
    seed = cfg.seed + 10_007 * (actor_id + 1) + 1_000_003 * restart
    agent = make_agent(cfg, env_spec, actor=actor_id)
    model = agent.acting_model(agent.build_model())
    spec = RolloutSpec.for_agent(cfg.unroll_length, env_spec, agent)
    sizes = [len(part) for part in _split(cfg.envs_per_actor, cfg.env_groups)]
    actors, first_env = [], actor_id * cfg.envs_per_actor
    for g, size in enumerate(sizes):
        streams = range(first_env, first_env + size)
        if env_spec.tasks:  # environment j of the run plays task j % K
            envs = make_task_env_group(env_spec, env_tasks(size, first_env, env_spec.num_tasks), seed + 101 * g,
                                       atari=atari_options(cfg), native=cfg.native_env)
        else:
            envs = make_env_group(cfg.env, size, seed + 101 * g, atari=atari_options(cfg), native=cfg.native_env)
        first_env += size
        actors.append(Actor(spec, model, agent, envs, seed=seed + 101 * g,
                            reward_clip=cfg.reward_clip, episodic_life=cfg.episodic_life, forward=forward,
                            local_bootstrap=cfg.sync_step and forward is not None, streams=streams))
    return actors[0] if len(actors) == 1 else ActorGroup(actors)


def _split(n: int, parts: int) -> list[range]:
    bounds = [n * i // parts for i in range(parts + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]
