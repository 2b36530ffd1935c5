"""The IMPALA agent: the paper's network, a sampled policy, and the V-trace loss.

Everything algorithmic is in :mod:`impala_rl.core` (V-trace, the losses, PopArt, the
policy distributions); this module says how the runtime's rows feed them:

- actors record the behaviour policy's parameters ``policy_params`` (float32 ``[P]``)
  beside each action, and the LSTM state ``core_h``, ``core_c`` before row 0;
- the loss unrolls the network over the batch from that state, turns rows into rewards
  and discounts (:func:`loss_inputs`) and calls :func:`~impala_rl.core.losses.impala_loss`;
- with ``--popart`` the network's PopArt statistics are updated after each optimiser
  step and the value head rescaled to preserve its outputs; with several tasks
  (:mod:`impala_rl.envs.tasks`) the network has one value output per task, each with its
  own statistics, and the actions a task lacks are masked out of its policy; with
  ``--normalize-observations`` the observation statistics are updated once per batch.
"""

from __future__ import annotations

import dataclasses

import torch

from impala_rl.agents.base import Action, AgentBase, Fields, LossOutput
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.core import distributions
from impala_rl.core.losses import LossConfig, impala_loss
from impala_rl.core.vtrace import VTraceParams
from impala_rl.envs import is_minatar
from impala_rl.envs.spec import EnvSpec
from impala_rl.envs.tasks import MASKED_LOGIT, action_mask, task_ids, task_labels
from impala_rl.models import ImpalaNet, NetConfig, net_inputs
from impala_rl.presets import ENV_PRESETS, PRESETS


SMALL_IMAGE = 36
"""Images narrower than this (MinAtar's 10 x 10, MiniGrid's 7 x 7 view) take the MinAtar torso:
the shallow torso's 8 x 8 stride-4 convolutions need at least 36 pixels."""


def resolve_torso(cfg: TrainConfig, env_spec: EnvSpec) -> str:
    """``--torso auto``: the MinAtar torso for MinAtar and other small images, the shallow
    torso for other images, an MLP for vectors."""
    if cfg.torso == "auto":
        if is_minatar(task_ids(cfg.env)[0]):
            return "minatar"
        if env_spec.is_image:
            return "minatar" if min(env_spec.obs_shape[1:]) < SMALL_IMAGE else "shallow"
        return "mlp"
    return cfg.torso


def net_config(cfg: TrainConfig, env_spec: EnvSpec) -> NetConfig:
    """The network architecture ``cfg`` asks for on ``env_spec``'s observations."""
    return NetConfig(torso=resolve_torso(cfg, env_spec), use_lstm=cfg.use_lstm, lstm_size=cfg.lstm_size,
                     mlp_sizes=tuple(cfg.mlp_sizes), activation=cfg.mlp_activation, init=cfg.init,
                     channels_last=cfg.channels_last and env_spec.is_image, popart=cfg.popart,
                     popart_beta=cfg.popart_beta, normalize_observations=cfg.normalize_observations,
                     separate_value_torso=cfg.value_torso == "separate", init_log_std=cfg.init_log_std)


def build_model(cfg: TrainConfig, env_spec: EnvSpec) -> ImpalaNet:
    """The network the config describes, its initialisation seeded with ``cfg.seed`` (the
    process's random state is left as it was)."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return ImpalaNet(tuple(env_spec.obs_shape), env_spec.action_dim, env_spec.policy_type,
                             net_config(cfg, env_spec), num_values=env_spec.num_tasks,
                             mean_bounds=((env_spec.action_low, env_spec.action_high)
                                          if cfg.bounded_mean and env_spec.policy_type == "gaussian" else None))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def loss_config(cfg: TrainConfig) -> LossConfig:
    """The settings of :func:`~impala_rl.core.losses.impala_loss` in ``cfg`` (V-trace's from
    ``clip_rho_threshold``, ``clip_c_threshold``, ``clip_pg_rho_threshold``, ``vtrace_lambda``)."""
    vtrace = VTraceParams(rho=cfg.clip_rho_threshold, c=cfg.clip_c_threshold, pg_rho=cfg.clip_pg_rho_threshold,
                          lambda_=cfg.vtrace_lambda)
    return LossConfig(correction=cfg.correction, baseline_cost=cfg.baseline_cost, entropy_cost=cfg.entropy_cost,
                      vtrace=vtrace, normalize_advantages=cfg.normalize_advantages)


def loss_inputs(batch: dict[str, torch.Tensor], cfg: TrainConfig) -> dict:
    """Rewards and discounts of the T transitions in a [T+1, B] batch.

    Transition k (k = 0..T-1) goes from row k to row k+1; its reward and terminal flag
    live in row k+1. A truncation adds discount * V_mu(x_final) to the reward and cuts
    the chain (terminal), so it bootstraps; a termination does neither.
    """
    reward = batch["reward"][1:]
    if cfg.reward_clip > 0:
        reward = reward.clamp(-cfg.reward_clip, cfg.reward_clip)
    rewards = reward + cfg.discount * batch["bootstrap"][1:]
    discounts = (~batch["terminal"][1:]).float() * cfg.discount
    return {"rewards": rewards, "discounts": discounts}


class ImpalaAgent(AgentBase):
    """IMPALA on the runtime (see the module docstring)."""

    name = "impala"
    HYPERPARAMETERS = ("entropy_cost", "baseline_cost")
    PRESETS, ENV_PRESETS = PRESETS, ENV_PRESETS  # impala_rl.presets: the project's tuned values are IMPALA's
    RESUME_FIXED = ("torso", "use_lstm", "lstm_size", "mlp_sizes", "mlp_activation", "value_torso",
                    "normalize_observations", "popart", "bounded_mean")

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, actor: int | None = None):
        super().__init__(cfg, env_spec, actor)
        self.policy_type = env_spec.policy_type
        self.labels = task_labels(env_spec.tasks)
        self.mask = action_mask(env_spec)  # bool [K, A] or None: the actions each task has
        self.loss_config = loss_config(cfg)
        self.frames = 0  # trained on so far (set_progress)

    def update_config(self, cfg: TrainConfig) -> None:
        super().update_config(cfg)
        self.loss_config = loss_config(cfg)  # PBT changed a loss weight
        self.set_progress(self.frames)

    def set_progress(self, frames: int) -> None:
        """``--entropy-anneal-frames``: the entropy bonus falls linearly to 0 over that many frames."""
        self.frames = frames
        if self.cfg.entropy_anneal_frames:
            scale = max(0.0, 1.0 - frames / self.cfg.entropy_anneal_frames)
            self.loss_config = dataclasses.replace(self.loss_config, entropy_cost=self.cfg.entropy_cost * scale)

    def build_model(self) -> ImpalaNet:
        return build_model(self.cfg, self.env_spec)

    def record_fields(self) -> Fields:
        size = distributions.num_params(self.policy_type, self.env_spec.action_dim)
        return {"policy_params": ((size,), torch.float32)}

    def state_fields(self) -> Fields:
        if not self.cfg.use_lstm:
            return {}
        return {"core_h": ((self.cfg.lstm_size,), torch.float32), "core_c": ((self.cfg.lstm_size,), torch.float32)}

    def masked(self, params: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """Logits ``[..., B, A]`` with the actions each unroll's task lacks set to MASKED_LOGIT."""
        if self.mask is None:
            return params
        if task is None:
            raise ValueError("a multi-task agent needs each environment's task to mask its actions")
        return params.masked_fill(~self.mask.to(params.device)[task], MASKED_LOGIT)

    def act(self, out, generator: torch.Generator, greedy: bool = False, task: torch.Tensor | None = None,
            streams: torch.Tensor | None = None) -> Action:
        params = self.masked(out.policy_params[0], task)
        if greedy:
            return Action(distributions.mode(self.policy_type, params), {"policy_params": params})
        return Action(distributions.sample(self.policy_type, params, generator=generator), {"policy_params": params})

    def value(self, out, task: torch.Tensor | None = None) -> torch.Tensor:
        return task_values(out.values, task)[0]

    def before_updates(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        obs_norm = getattr(model, "obs_norm", None)
        if obs_norm is not None:  # rows 1..T are new; row 0 repeats the previous unroll's row T
            obs_norm.update(batch["obs"][1:])

    def loss(self, forward, batch: dict[str, torch.Tensor]) -> LossOutput:
        cfg = self.cfg
        core_state = tuple(batch[name] for name in self.state_fields())
        inputs = net_inputs(batch["obs"], batch["first"], batch["last_action"], batch["reward"], cfg.reward_clip)
        out, _ = forward(core_state=core_state, **inputs)
        task = batch["task"]  # [B]
        values = task_values(out.values, task)  # [T+1, B], unnormalised (reward units)
        normalizer = None
        popart = getattr(forward, "popart", None)  # a compiled module forwards attributes to the original
        if popart is not None:  # the loss takes the head's normalised outputs n = (v - mu) / sigma
            mu, sigma = popart.statistics(task)
            values = (values - mu) / sigma
            normalizer = (mu, sigma)
        loss, metrics = impala_loss(
            target_params=self.masked(out.policy_params[:-1], task),
            values=values[:-1],
            bootstrap_value=values[-1],
            behaviour_params=batch["policy_params"][:-1],
            actions=batch["action"][:-1],
            **loss_inputs(batch, cfg),
            policy_type=self.policy_type,
            config=self.loss_config,
            value_normalizer=normalizer,
            replayed=batch.get("replayed"),
        )
        vs = metrics.pop("vs")  # [T, B] value targets (reward units): PopArt's statistics follow them
        if self.cfg.entropy_anneal_frames:
            metrics["entropy_cost"] = torch.tensor(self.loss_config.entropy_cost)
        return LossOutput(loss, metrics, {"value_targets": vs.detach().transpose(0, 1), "task": task})

    def after_update(self, model: torch.nn.Module, output: LossOutput) -> dict[str, float]:
        popart = getattr(model, "popart", None)
        if popart is None:
            return {}
        old_mu, old_sigma = popart.update(output.per_unroll["value_targets"].transpose(0, 1), output.per_unroll["task"])
        popart.preserve_outputs_(model.value_head, old_mu, old_sigma)
        mu, sigma = popart.mu.tolist(), popart.sigma.tolist()
        if len(mu) == 1:
            return {"popart_mu": mu[0], "popart_sigma": sigma[0]}
        return {f"{name}_{label}": v[k] for k, label in enumerate(self.labels)
                for name, v in (("popart_mu", mu), ("popart_sigma", sigma))}


def task_values(values: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
    """values ``[T, B, K]`` (one per task) -> ``[T, B]``: each unroll's own task's value."""
    if values.shape[-1] == 1:
        return values[..., 0]
    if task is None:
        raise ValueError("a multi-task network has one value per task: give each environment's task")
    index = task.to(values.device).view(1, -1, 1).expand(values.shape[0], -1, 1)
    return values.gather(-1, index)[..., 0]
