"""The agent seam: what an agent declares so the runtime can run it.

The runtime (actors, transports, the learner, the training loop) is generic; an agent
fills in what is specific to one algorithm:

- **its network**, :meth:`Agent.build_model`: a module with the contract of
  :class:`Network` (``forward(obs, last_action, last_reward, first, core_state) ->
  (NetOutput, new_state)``, ``initial_state``, ``policy_param_size``, ``num_values``), so
  that actors, central inference and evaluation can step it;
- **what its actors record** per step beyond the environment's columns,
  :meth:`Agent.record_fields` (IMPALA: the behaviour policy's parameters; a Q-learning
  agent: its Q-values; a multi-task agent: the task id), and **its recurrent state** as
  named tensors, :meth:`Agent.state_fields` (stored per unroll, before row 0);
- **how it acts**, :meth:`Agent.act`: from the network's output to actions and the
  recorded extras, and :meth:`Agent.value` for bootstrapping a truncated episode;
- **its config section**: IMPALA's is the ``agent`` section of :class:`TrainConfig` (flags
  of ``impala train``); an agent defined elsewhere declares an ``Options`` dataclass on its
  class and reads it with :func:`agent_options` from ``--agent-options key=value,...``;
- **its loss**, :meth:`Agent.loss`: ``(forward, batch) ->`` :class:`LossOutput` (the
  scalar loss, scalar metrics to log, and per-unroll tensors such as PopArt's value
  targets or a replay buffer's new priorities, which the learner gathers back into the
  batch's unroll order across minibatches and hands to the data source and the hooks),
  plus two optional hooks around the optimiser step (:meth:`Agent.before_updates`,
  :meth:`Agent.after_update`) for statistics that live in the network (observation
  normalisation, PopArt).

The environment's columns (``ENV_ROW_FIELDS`` in :mod:`impala_rl.runtime.types`) and
the unroll contract are the runtime's. ``--agent`` names an agent: a registered name
(``impala``) or ``package.module:Class`` for one defined anywhere importable, which is
how a new agent runs without touching runtime code (tests/agents/test_agent_seam.py).

An agent object is built from ``(cfg, env_spec, actor)`` (``actor``: the actor it acts
for, None for the learner) and must pickle: actor processes and Ray workers rebuild it from
those. Agents inherit :class:`AgentBase`, which gives the optional parts their defaults:
the agent's own state (checkpointed, copied by PBT's exploit), its tunable
hyperparameters and resume-fixed fields, and how an actor's copy of the network acts.
Building a network seeds its initialisation from the config without touching the
process's random state.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch

from impala_rl.config import ConfigError, TrainConfig

if TYPE_CHECKING:
    from impala_rl.envs.spec import EnvSpec

Fields = dict[str, tuple[tuple, torch.dtype]]
"""name -> (shape of one entry, dtype)."""

AGENTS: dict[str, str] = {"impala": "impala_rl.agents.impala:ImpalaAgent",
                          "merlin": "impala_rl.agents.merlin:MerlinAgent",
                          "rainbow": "impala_rl.agents.rainbow:RainbowAgent"}
"""Registered agents: name -> ``module:Class``. ``--agent`` also takes ``module:Class`` directly."""


class Action(NamedTuple):
    """What :meth:`Agent.act` returns for N environments.

    Attributes:
        action: int64 ``[N]`` (discrete) or float32 ``[N, A]`` (continuous).
        record: the per-row extras the agent declared in :meth:`Agent.record_fields`,
            each ``[N, *shape]``.
    """

    action: torch.Tensor
    record: dict[str, torch.Tensor]


class Network(Protocol):
    """The network contract: what actors, central inference, evaluation and the learner
    need of an agent's network (checked when a learner is built,
    :func:`impala_rl.runtime.builders.check_network`).

    Attributes:
        policy_param_size: P, the width of ``policy_params`` (the actors' inference server
            allocates its responses from it).
        num_values: the width of ``values`` (one per task for a multi-task agent).
    """

    policy_param_size: int
    num_values: int

    def initial_state(self, batch_size: int, device=None) -> tuple[torch.Tensor, ...]:
        """The recurrent state before an episode's first step for ``batch_size`` environments,
        one tensor per :meth:`Agent.state_fields` entry, in that order (``()`` without one)."""

    def forward(self, obs: torch.Tensor, last_action: torch.Tensor, last_reward: torch.Tensor, first: torch.Tensor,
                core_state: tuple = ()) -> tuple[Any, tuple]:
        """``[T, B, ...]`` inputs -> (an output with ``policy_params [T, B, P]`` and
        ``values [T, B, num_values]``, such as :class:`impala_rl.models.NetOutput`; the
        state after step T - 1)."""


class LossOutput(NamedTuple):
    """What :meth:`Agent.loss` returns for a (mini)batch of B' unrolls.

    Attributes:
        loss: the scalar to minimise.
        metrics: scalar tensors, logged (averaged over a batch's minibatches).
        per_unroll: tensors whose first dimension is the B' unrolls, in the order of the
            (mini)batch given; the learner gathers them into the whole batch's order
            (``[B, ...]``, the last pass's values) for the data source and the hooks.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    per_unroll: dict[str, torch.Tensor] = {}


class Agent(Protocol):
    """An algorithm on the shared runtime (see the module docstring)."""

    name: str

    def build_model(self) -> torch.nn.Module:
        """A fresh network (seeded from the config), on the CPU."""

    def record_fields(self) -> Fields:
        """Per-row extras the actors record beside the environment's columns."""

    def state_fields(self) -> Fields:
        """The recurrent state, by name, in the order of the network's ``core_state`` tuple."""

    def act(self, out: Any, generator: torch.Generator, greedy: bool = False,
            task: torch.Tensor | None = None, streams: torch.Tensor | None = None) -> Action:
        """Actions and recorded extras from the network's output for one step ([1, N, ...]);
        ``greedy`` (``impala eval``) takes the most likely action instead of sampling;
        ``task`` (int64 ``[N]``) is each environment's task (:mod:`impala_rl.envs.tasks`);
        ``streams`` (int64 ``[N]``) the run's numbers of the environments (None: evaluation)."""

    def value(self, out: Any, task: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``[N]``: the state values in ``out`` (one step) of each env's ``task``, in reward units."""

    def loss(self, forward, batch: dict[str, torch.Tensor]) -> LossOutput:
        """The loss of a batch ([T+1, B] rows), its scalar metrics and its per-unroll outputs."""

    def before_updates(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        """Once per batch, before its gradient steps."""

    def set_progress(self, frames: int) -> None:
        """Once per batch, before its gradient steps: the environment frames trained on so far,
        this batch's included (for schedules: an annealed loss weight, an exploration rate)."""

    def after_update(self, model: torch.nn.Module, output: LossOutput) -> dict[str, float]:
        """After each optimiser step, with that step's :class:`LossOutput`; returns extra metrics to log."""


class AgentBase:
    """The optional parts of :class:`Agent`, with their defaults; an agent inherits this and
    overrides what it needs (the runtime calls every method below on every agent).

    Attributes:
        HYPERPARAMETERS: the config fields its loss reads that population based training
            may change while training (with the learner's own: the learning rate, the
            optimiser's epsilon, the gradient-norm clip).
        RESUME_FIXED: the config fields a resumed run cannot change because they define
            what its network's weights and its own state mean (with the runtime's: the
            environment, the agent, the optimiser).
        PRESETS: its values by environment family (``impala_rl.envs.env_family``: atari,
            classic_control, continuous, minatar, memory), applied by ``impala train --agent NAME``
            to the fields not given; an empty dict: none (the flags' defaults).
        ENV_PRESETS: its values by environment id, on top of the family's.
    """

    HYPERPARAMETERS: tuple[str, ...] = ()
    RESUME_FIXED: tuple[str, ...] = ()
    PRESETS: dict[str, dict[str, Any]] = {}
    ENV_PRESETS: dict[str, dict[str, Any]] = {}

    def __init__(self, cfg: TrainConfig, env_spec: "EnvSpec", actor: int | None = None):
        self.cfg = cfg
        self.env_spec = env_spec
        self.actor = actor  # the actor it acts for (None: the learner, evaluation)

    def actor_envs(self) -> range:
        """The run's environment numbers this agent's actor steps (empty for the learner)."""
        if self.actor is None:
            return range(0)
        return range(self.actor * self.cfg.envs_per_actor, (self.actor + 1) * self.cfg.envs_per_actor)

    def acting_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """An actor's copy of the network, made ready to act (default: eval mode; an agent with
        noisy layers would keep them sampling)."""
        return model.eval()

    def update_config(self, cfg: TrainConfig) -> None:
        """The config in force changed (PBT changed a hyperparameter): the loss reads the new one."""
        self.cfg = cfg

    def before_updates(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        pass

    def set_progress(self, frames: int) -> None:
        pass

    def after_update(self, model: torch.nn.Module, output: LossOutput) -> dict[str, float]:
        return {}

    def check_resources(self) -> None:
        """Called when a learner is built (before its network, before anything is written): raise
        ConfigError, one line, if what the agent will allocate cannot fit on this machine
        (Rainbow's replay, MERLIN's state). Evaluation does not call it."""

    def make_source(self, backend) -> Any:
        """The data source the learner trains from (:mod:`impala_rl.runtime.sources`), or None
        for the runtime's own choice from the config (fresh unrolls, or ``--replay-proportion``'s
        mixed replay). Rainbow returns its prioritised replay."""
        return None

    def state_dict(self) -> dict:
        """The agent's own state beside the network's (a target network, counters); checkpointed
        with the learner and copied by PBT's exploit."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"agent {type(self).__name__} keeps no state of its own, got {sorted(state)}")


def require_one_discrete_task(agent: str, cfg: TrainConfig, env_spec: "EnvSpec") -> None:
    """Refuse (ConfigError, one line) a continuous action space or several tasks: what a
    value-based or memory agent (Rainbow, MERLIN) does not take."""
    if env_spec.policy_type != "categorical":
        raise ConfigError(f"--agent {agent} needs discrete actions; {cfg.env} has a continuous (Box) action space "
                          f"(use --agent impala there)")
    if env_spec.tasks:
        raise ConfigError(f"--agent {agent} trains on one environment; several comma-separated ids are for "
                          f"--agent impala")


def check_fits_in_memory(nbytes: int, what: str, remedy: str) -> None:
    """Refuse (ConfigError, one line) an allocation of ``nbytes`` that would take more than 80%
    of this machine's memory: ``what`` needs it, ``remedy`` says what to lower."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > 0.8 * total:
        raise ConfigError(f"{what} needs {nbytes / 2**30:.1f} GiB but this machine has {total / 2**30:.1f} GiB "
                          f"of memory; {remedy}")


RUNTIME_RESUME_FIXED = ("env", "agent", "full_action_space", "optimizer")
"""Config fields no resumed run may change, whatever its agent (see AgentBase.RESUME_FIXED)."""


def agent_presets(name: str) -> tuple[dict, dict]:
    """(presets by family, presets by environment id) the agent ``name`` declares."""
    cls = agent_class(name)
    return cls.PRESETS, cls.ENV_PRESETS


def resume_fixed(cfg: TrainConfig) -> tuple[str, ...]:
    """The fields a resumed run of ``cfg`` keeps: the runtime's and its agent's."""
    return RUNTIME_RESUME_FIXED + tuple(agent_class(cfg.agent).RESUME_FIXED)


def agent_class(name: str) -> type:
    """The class ``--agent name`` refers to: a registered name or ``module:Class``."""
    target = AGENTS.get(name, name)
    if ":" not in target:
        hint = ("; DQN is --agent rainbow --agent-options double=false,prioritized=false,dueling=false,"
                "multistep=false,distributional=false,noisy=false" if name.lower() == "dqn" else "")
        raise ConfigError(f"agent '{name}' is not one of: {', '.join(AGENTS)} (or module:Class){hint}")
    module_name, _, class_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"agent '{name}' cannot be loaded ({type(e).__name__}: {e}); give a registered name "
                          f"({', '.join(AGENTS)}) or an importable module:Class") from None


def agent_options(cfg: TrainConfig, options_cls: type) -> Any:
    """An agent's own config section: ``options_cls`` (a dataclass whose fields have defaults)
    filled from ``--agent-options key=value,...`` (``cfg.agent_options``), each value read as
    its field's type (bool: true/false/1/0). Raises ConfigError naming the bad key or value
    and what is accepted."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    values: dict[str, Any] = {}
    for item in (s.strip() for s in cfg.agent_options.split(",")):
        if not item:
            continue
        key, sep, raw = (p.strip() for p in item.partition("="))
        if not sep or key not in fields:
            raise ConfigError(f"agent option '{item}' is not KEY=VALUE with KEY one of: "
                              f"{', '.join(fields) or '(none)'} (agent {cfg.agent})")
        kind = type(fields[key].default)
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("true", "1")
            else:
                values[key] = kind(raw)
        except ValueError:
            raise ConfigError(f"agent option {key}={raw}: expected a {kind.__name__}") from None
    return options_cls(**values)


def make_agent(cfg: TrainConfig, env_spec: "EnvSpec", actor: int | None = None) -> Agent:
    """The agent ``cfg.agent`` names, for ``env_spec``, acting for actor ``actor`` (None: the
    learner or an evaluation). An agent with options of its own declares them as a
    dataclass ``Options`` on its class and reads them with :func:`agent_options`; options
    given to an agent without one are refused."""
    cls = agent_class(cfg.agent)
    if cfg.agent_options.strip() and not dataclasses.is_dataclass(getattr(cls, "Options", None)):
        raise ConfigError(f"agent '{cfg.agent}' takes no --agent-options (its settings are the flags of the "
                          f"agent section; see impala train --help)")
    return cls(cfg, env_spec, actor=actor)
