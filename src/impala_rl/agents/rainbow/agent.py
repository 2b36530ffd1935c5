"""Rainbow (Hessel et al., 2018) on the runtime, with Ape-X actors (Horgan et al., 2018).

Six components, each an agent option that can be switched off (``--agent-options
double=false,...``; all six off is DQN): ``double`` Q-learning, ``prioritized`` replay,
a ``dueling`` head, ``multistep`` targets (``n_step``), a ``distributional`` value (C51:
``atoms`` over ``[-v_max, v_max]``) and ``noisy`` nets. The maths is in
:mod:`impala_rl.core.qlearning`; the replay in :mod:`.replay`; the data source that feeds
the learner from it in :mod:`.source`.

How the runtime's pieces are used:

- **actors** run the same :class:`~impala_rl.runtime.actor.Actor` as IMPALA's. Each
  environment j of the run's N is an Ape-X actor with its own exploration rate
  ``eps_j = 0.4^(1 + 7 j / (N - 1))`` (none with noisy nets, whose noise explores: an
  actor's copy keeps its noisy layers sampling, a fresh draw every step). They record,
  per row, what the initial priority of a transition needs from their own copy of the
  network (``q_taken``: the taken action's Q-value, or its return distribution; ``q_greedy``:
  the greedy action's), so priorities come from the actor's network: when data arrives the
  learner's source only combines those records with the n-step window (the n-step return,
  and with C51 the projection onto the support), running no network;
- **the learner's batches** come from the agent's source, a prioritised replay of n-step
  transitions laid out as a two-row batch (row 0: x_t, row 1: x_{t+n}), with the n-step
  window's rewards beside it; the source keeps the replay ratio (updates per agent step)
  and the warm-up, and counts the fresh steps it took (``fresh_steps``);
- **the loss** returns each transition's new priority as a per-unroll output, which the
  learner hands back to the source (``feedback``);
- **the target network** is the agent's own state: checkpointed, restored by ``--resume``
  and copied by PBT's exploit; refreshed every ``target_update`` updates.

A truncated episode (time limit) bootstraps: the actor stores ``max_a Q`` of the real
final observation in the row's ``bootstrap`` (the runtime's contract), and the n-step
return adds ``gamma * bootstrap`` at that step and stops there; with C51 the target is the
point mass at that return.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch

from impala_rl.agents.base import (Action, AgentBase, Fields, LossOutput, agent_options, check_fits_in_memory,
                                   require_one_discrete_task)
from impala_rl.agents.impala.agent import resolve_torso
from impala_rl.agents.rainbow.network import RainbowNet, action_probs, q_values
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.core import qlearning
from impala_rl.envs import env_family
from impala_rl.envs.spec import EnvSpec
from impala_rl.envs.tasks import task_ids
from impala_rl.models import net_inputs
from impala_rl.models.noisy import NoisyLinear


@dataclasses.dataclass(frozen=True)
class RainbowOptions:
    """``--agent-options`` of ``--agent rainbow`` (defaults: the MinAtar Rainbow of
    Obando-Ceron and Castro 2021, "Revisiting Rainbow")."""

    double: bool = True
    prioritized: bool = True
    dueling: bool = True
    multistep: bool = True
    distributional: bool = True
    noisy: bool = True
    n_step: int = 3  # the multi-step horizon (1 when multistep=false)
    atoms: int = 51
    v_max: float = 0.0  # the support is [-v_max, v_max]; 0: by family (10 with clipped or small rewards, 100 otherwise)
    noisy_sigma: float = 0.5
    hidden: int = 0  # a hidden layer in the head (0: none; the torso ends in a ReLU layer already)
    replay_capacity: int = 100_000  # transitions (rows) the replay holds
    replay_ratio: float = 0.25  # learner updates per fresh agent step (Dopamine: one update every 4 steps)
    warmup: int = 1_000  # transitions stored before the first update
    target_update: int = 1_000  # learner updates between target-network copies
    alpha: float = 0.5  # priority exponent
    beta: float = 0.4  # importance-weight exponent at the start, annealed to 1 over the run's frames
    epsilon_base: float = 0.4  # Ape-X: eps_j = epsilon_base^(1 + epsilon_alpha j / (N - 1))
    epsilon_alpha: float = 7.0
    save_replay: bool = True  # write the replay beside each checkpoint (replay.npz), so that --resume restores it

    @property
    def horizon(self) -> int:
        return self.n_step if self.multistep else 1


COMPONENTS = ("double", "prioritized", "dueling", "multistep", "distributional", "noisy")
EVAL_EPSILON = 0.001  # `impala eval --sample` without noisy nets: Dopamine's evaluation epsilon


def rainbow_options(cfg: TrainConfig) -> RainbowOptions:
    """The options in ``cfg.agent_options``, checked, with ``v_max`` resolved for the environment."""
    opts = agent_options(cfg, RainbowOptions)
    checks = [("n_step", opts.n_step >= 1, ">= 1"), ("atoms", opts.atoms >= 2, ">= 2"),
              ("v_max", opts.v_max >= 0, ">= 0 (0: by environment family)"),
              ("replay_capacity", opts.replay_capacity >= 1, ">= 1"),
              ("replay_ratio", opts.replay_ratio > 0, "> 0 (learner updates per fresh agent step)"),
              ("warmup", opts.warmup >= 0, ">= 0"), ("target_update", opts.target_update >= 1, ">= 1"),
              ("alpha", opts.alpha >= 0, ">= 0"), ("beta", 0 <= opts.beta <= 1, "in [0, 1]"),
              ("epsilon_base", 0 <= opts.epsilon_base <= 1, "in [0, 1]"), ("noisy_sigma", opts.noisy_sigma >= 0, ">= 0"),
              ("hidden", opts.hidden >= 0, ">= 0")]
    for name, ok, accepted in checks:
        if not ok:
            raise ConfigError(f"agent option {name}={getattr(opts, name)}: must be {accepted}")
    # The replay keeps one ring of capacity // E rows per environment; a ring's last n rows are
    # not yet complete transitions, and a ring must hold a whole unroll and a frame stack.
    envs, stack = cfg.num_actors * cfg.envs_per_actor, 4 if cfg.is_atari else 1
    ring, horizon = opts.replay_capacity // envs, opts.n_step if opts.multistep else 1
    need = max(cfg.unroll_length + 1, horizon + stack + 1)
    if ring < need:
        raise ConfigError(f"agent option replay_capacity={opts.replay_capacity} gives each of the {envs} environments "
                          f"{ring} rows; each needs at least {need} (an unroll of {cfg.unroll_length} + 1): raise it "
                          f"to {need * envs} or more")
    usable = envs * (ring - horizon - stack)
    for name, value in (("agent option warmup", opts.warmup), ("--batch-size", cfg.batch_size)):
        if value > usable:
            raise ConfigError(f"{name}={value} exceeds the {usable} transitions the replay can hold (replay_capacity="
                              f"{opts.replay_capacity} over {envs} environments): it would never start learning")
    # The source takes data until one more update fits the ratio: a ratio the run's steps cannot
    # meet even once would keep the learner waiting past --total-frames.
    steps, warm = cfg.total_frames // cfg.frames_per_step, max(opts.warmup, cfg.batch_size)
    if steps <= warm:
        raise ConfigError(f"--total-frames {cfg.total_frames} gives {steps} agent steps, no more than the warm-up's {warm} "
                          f"transitions (agent option warmup, or --batch-size): lower warmup or raise --total-frames")
    if (steps - warm) * opts.replay_ratio < 1:
        unit = 10.0 ** (math.floor(math.log10(1 / (steps - warm))) - 2)  # the least ratio, rounded up to 3 digits
        least = math.ceil(1 / (steps - warm) / unit) * unit
        raise ConfigError(f"agent option replay_ratio={opts.replay_ratio:g} can never be met: the {steps - warm} agent "
                          f"steps after the warm-up earn no update; raise it to {least:.3g} or more, "
                          f"or raise --total-frames")
    refused = [(cfg.learner_minibatches > 1, "--learner-minibatches > 1 (a batch is 32 transitions; take a larger "
                                             "batch instead)"),
               (cfg.sync or cfg.sync_step, "--sync / --sync-step (the warm-up takes data before any update)"),
               (cfg.replay_proportion > 0, "--replay-proportion (IMPALA's replay; Rainbow has its own)"),
               (cfg.num_learners > 1, "--num-learners > 1 (one learner owns the replay)")]
    for bad, what in refused:
        if bad:
            raise ConfigError(f"--agent rainbow does not take {what}")
    if not opts.v_max:
        small = env_family(task_ids(cfg.env)[0]) in ("atari", "minatar") or cfg.reward_clip > 0
        opts = dataclasses.replace(opts, v_max=10.0 if small else 100.0)
    return opts


# lr_anneal: the runtime's linear anneal to 0 over the run (Dopamine keeps it constant; the results
# in docs/rainbow.md were measured with the anneal).
_COMMON = {"optimizer": "adam", "learning_rate": 1e-4, "adam_epsilon": 3.125e-4, "batch_size": 32,
           "unroll_length": 20, "learner_epochs": 1, "learner_minibatches": 1, "grad_norm_clip": 10.0,
           "discount": 0.99, "lr_anneal": True}
PRESETS = {
    "minatar": {**_COMMON, "torso": "minatar", "reward_clip": 0.0, "num_actors": 2, "envs_per_actor": 4,
                "total_frames": 5_000_000},
    "atari": {**_COMMON, "learning_rate": 6.25e-5, "adam_epsilon": 1.5e-4, "num_actors": 2, "envs_per_actor": 4,
              "total_frames": 10_000_000},
    "classic_control": {**_COMMON, "torso": "mlp", "mlp_sizes": (128, 128), "reward_clip": 0.0, "learning_rate": 1e-3,
                        "num_actors": 2, "envs_per_actor": 2, "unroll_length": 10, "total_frames": 200_000},
}


class RainbowAgent(AgentBase):
    """Rainbow / DQN on the runtime (see the module docstring)."""

    name = "rainbow"
    Options = RainbowOptions
    PRESETS = PRESETS
    RESUME_FIXED = ("torso", "mlp_sizes", "mlp_activation", "agent_options")

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, actor: int | None = None):
        super().__init__(cfg, env_spec, actor)
        require_one_discrete_task("rainbow", cfg, env_spec)
        self.opts = rainbow_options(cfg)
        self.num_actions = env_spec.action_dim
        o = self.opts
        self.support = torch.linspace(-o.v_max, o.v_max, o.atoms) if o.distributional else None
        total_envs = cfg.num_actors * cfg.envs_per_actor
        eps = [0.0] * total_envs if o.noisy else qlearning.ape_x_epsilons(total_envs, o.epsilon_base, o.epsilon_alpha)
        self.epsilons = torch.tensor(eps, dtype=torch.float32)
        self.target: torch.nn.Module | None = None
        self._target_state: dict | None = None  # a checkpoint's, until the target exists
        self.updates = 0
        self.frames = 0

    def check_resources(self) -> None:
        """The learner's replay must fit in this machine's memory (checked before a run starts)."""
        from impala_rl.agents.rainbow.source import replay_nbytes

        check_fits_in_memory(replay_nbytes(self), "the replay", "lower --agent-options replay_capacity")

    # ------------------------------------------------------------------ network and acting
    def torso(self) -> str:
        return resolve_torso(self.cfg, self.env_spec)  # IMPALA's choice for --torso auto

    def build_model(self) -> RainbowNet:
        o, cfg = self.opts, self.cfg
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                net = RainbowNet(tuple(self.env_spec.obs_shape), self.num_actions, self.torso(), self.support,
                                 dueling=o.dueling, noisy=o.noisy, noisy_sigma=o.noisy_sigma, hidden=o.hidden,
                                 mlp_sizes=tuple(cfg.mlp_sizes), activation=cfg.mlp_activation,
                                 channels_last=cfg.channels_last and self.env_spec.is_image)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        # Noise from the run's seed: the learner's (0), each actor's (1 + its number), the target's (-1).
        seed_noise(net, cfg.seed, 0 if self.actor is None else 1 + self.actor)
        return net

    def acting_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Noisy nets act with fresh noise every step (training mode); otherwise eval mode."""
        return model.train() if self.opts.noisy else model.eval()

    def record_fields(self) -> Fields:
        if not self.opts.prioritized:
            return {}
        shape = (self.opts.atoms,) if self.opts.distributional else ()
        return {"q_taken": (shape, torch.float32), "q_greedy": (shape, torch.float32)}

    def state_fields(self) -> Fields:
        return {}

    def q(self, policy_params: torch.Tensor) -> torch.Tensor:
        return q_values(policy_params, self.num_actions, self.support)

    def act(self, out, generator: torch.Generator, greedy: bool = False, task: torch.Tensor | None = None,
            streams: torch.Tensor | None = None) -> Action:
        params = out.policy_params[0]  # [N, P]
        q = self.q(params)
        best = q.argmax(-1)
        action = best
        if not greedy and not self.opts.noisy:
            n = q.shape[0]
            eps = self.epsilons[streams] if streams is not None else torch.full((n,), EVAL_EPSILON)
            explore = torch.rand(n, generator=generator) < eps
            random = torch.randint(self.num_actions, (n,), generator=generator)
            action = torch.where(explore, random, best)
        if not self.opts.prioritized:
            return Action(action, {})
        if self.opts.distributional:
            probs = action_probs(params, self.num_actions)  # [N, A, K]
            rows = torch.arange(probs.shape[0])
            record = {"q_taken": probs[rows, action], "q_greedy": probs[rows, best]}
        else:
            record = {"q_taken": q.gather(-1, action[:, None])[:, 0], "q_greedy": q.max(-1).values}
        return Action(action, record)

    def value(self, out, task: torch.Tensor | None = None) -> torch.Tensor:
        return out.values[0, :, 0]

    # ------------------------------------------------------------------ learning
    def make_source(self, backend):
        from impala_rl.agents.rainbow.source import PrioritizedSource

        return PrioritizedSource(self, backend)

    def set_progress(self, frames: int) -> None:
        self.frames = frames

    def beta(self) -> float:
        """The importance-weight exponent: ``beta`` at the start, linearly to 1 at the run's last frame."""
        done = min(1.0, self.frames / max(1, self.cfg.total_frames))
        return self.opts.beta + (1.0 - self.opts.beta) * done

    def before_updates(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        if self.target is None:
            self.target = copy.deepcopy(model).train()
            seed_noise(self.target, self.cfg.seed, -1)
            for p in self.target.parameters():
                p.requires_grad_(False)
            if self._target_state is not None:
                self.target.load_state_dict(self._target_state)
                self._target_state = None

    def n_step_targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(returns, discounts) ``[B]`` of the batch's n-step windows (rewards clipped as ``--reward-clip``)."""
        rewards = batch["window_rewards"]
        if self.cfg.reward_clip > 0:
            rewards = rewards.clamp(-self.cfg.reward_clip, self.cfg.reward_clip)
        rewards = rewards + self.cfg.discount * batch["window_bootstraps"]
        return qlearning.n_step_returns(rewards, batch["window_terminals"], self.cfg.discount)

    def loss(self, forward, batch: dict[str, torch.Tensor]) -> LossOutput:
        o = self.opts
        inputs = net_inputs(batch["obs"], batch["first"], batch["last_action"], batch["reward"], 0.0)
        out, _ = forward(**inputs)  # rows: x_t, x_{t+n}
        with torch.no_grad():
            target_out, _ = self.target(**net_inputs(batch["obs"][1:], batch["first"][1:], batch["last_action"][1:],
                                                     batch["reward"][1:], 0.0))
        returns, discounts = self.n_step_targets(batch)
        actions = batch["action"]
        online_next = out.policy_params[1].detach()
        target_next = target_out.policy_params[0]
        if o.distributional:
            select = self.q(online_next) if o.double else self.q(target_next)
            logits_t = out.policy_params[0].unflatten(-1, (self.num_actions, o.atoms))
            per_sample = qlearning.categorical_q_loss(logits_t, actions, returns, discounts,
                                                      action_probs(target_next, self.num_actions), select,
                                                      self.support.to(logits_t.device))
            priority = per_sample.detach()
        else:
            q_t = out.policy_params[0]
            next_values = qlearning.double_q_values(self.q(target_next), self.q(online_next) if o.double else None)
            td = qlearning.q_learning_td(q_t, actions, returns, discounts, next_values)
            per_sample = qlearning.huber(td)
            priority = td.detach().abs()
        weights = batch.get("weight")
        loss = (per_sample * weights).mean() if weights is not None else per_sample.mean()
        q_taken = self.q(out.policy_params[0].detach()).gather(-1, actions[:, None])[:, 0]
        metrics = {"q_loss": per_sample.detach().mean(), "q_taken": q_taken.mean(), "n_step_return": returns.mean(),
                   "priority": priority.mean()}
        return LossOutput(loss, metrics, {"priority": priority})

    def after_update(self, model: torch.nn.Module, output: LossOutput) -> dict[str, float]:
        self.updates += 1
        if self.updates % self.opts.target_update == 0:
            self.target.load_state_dict(model.state_dict())
        return {"target_updates": float(self.updates // self.opts.target_update)}

    # ------------------------------------------------------------------ the agent's own state
    def state_dict(self) -> dict:
        target = self.target.state_dict() if self.target is not None else self._target_state
        return {"target": target, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.updates = int(state.get("updates", 0))
        target = state.get("target")
        if target is None:
            return
        if self.target is not None:
            self.target.load_state_dict(target)
        else:
            self._target_state = target


def seed_noise(model: torch.nn.Module, seed: int, stream: int) -> None:
    """Give ``model``'s noisy layers one generator seeded from the run's ``seed`` and ``stream``
    (each copy of the network its own), so that ``--seed`` reproduces a serial run's noise."""
    layers = [m for m in model.modules() if isinstance(m, NoisyLinear)]
    if layers:
        generator = torch.Generator().manual_seed(hash((seed, stream)) & 0x7FFF_FFFF_FFFF)
        for layer in layers:
            layer.set_generator(generator)
