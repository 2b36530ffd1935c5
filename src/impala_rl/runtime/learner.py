"""The learner: a thin loop around :func:`impala_rl.core.losses.impala_loss`.

It turns a batch of unrolls into the loss's inputs (see :mod:`impala_rl.runtime.types`
for the row contract), computes gradients, clips them, steps the optimiser (RMSProp, the
paper's TensorFlow RMSProp, or Adam) with the linearly annealed learning rate, updates
PopArt's statistics when the network has them, and counts versions. All of the
algorithm is in ``core``.
"""

from __future__ import annotations

import math
import time

import torch

from impala_rl.config import TrainConfig
from impala_rl.core.losses import impala_loss
from impala_rl.core.optim import RMSpropTF
from impala_rl.runtime.actor import net_inputs
from impala_rl.runtime.types import Batch, RolloutSpec, select_unrolls


def loss_inputs(batch: Batch, cfg: TrainConfig) -> dict:
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


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, with the config's settings."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.adam_epsilon)
    cls = RMSpropTF if cfg.optimizer == "rmsprop_tf" else torch.optim.RMSprop
    return cls(params, lr=cfg.learning_rate, alpha=cfg.rmsprop_decay, momentum=cfg.rmsprop_momentum,
               eps=cfg.rmsprop_epsilon)


def average_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the steps of one batch; times (``time_*``) are summed, counters are the last."""
    if len(results) == 1:
        return results[0]
    out = {}
    for key in results[-1]:
        values = [r[key] for r in results if key in r]
        if key.startswith("time_"):
            out[key] = sum(values)
        elif key == "nonfinite_total":
            out[key] = values[-1]
        else:
            out[key] = sum(values) / len(values)
    return out


class Learner:
    """Owns the network, the optimiser and the policy version."""

    def __init__(self, cfg: TrainConfig, spec: RolloutSpec, model: torch.nn.Module, device: torch.device):
        self.cfg = cfg
        self.spec = spec
        self.device = device
        self.model = model.to(device)
        # The compiled callable shares parameters with self.model (whose state_dict stays plain).
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.popart = getattr(self.model, "popart", None)  # PopArt statistics live in the network
        self.obs_norm = getattr(self.model, "obs_norm", None)  # so do observation statistics
        self.version = 0  # number of updates applied = the policy version actors see
        self.frames = 0  # environment frames consumed
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        # Multi-learner (runtime/distributed.py): grad_hook(model, loss_finite) averages the gradients
        # over the learners between backward and the optimiser step.
        self.grad_hook = None
        self.shuffle = torch.Generator().manual_seed(cfg.seed)  # minibatch order (learner_minibatches > 1)

    def learning_rate(self) -> float:
        if not self.cfg.lr_anneal:
            return self.cfg.learning_rate
        return self.cfg.learning_rate * max(0.0, 1.0 - self.frames / self.cfg.total_frames)

    def step(self, batch: Batch) -> dict[str, float]:
        """Train on a batch of B unrolls ([T+1, B, ...] row fields); returns metrics.

        One gradient step on the whole batch by default (the paper). With
        ``learner_epochs`` E and ``learner_minibatches`` M it makes E passes, each over the
        B unrolls shuffled into M minibatches: E * M steps, V-trace correcting for the
        policy moving away from the behaviour policy between steps. Metrics are averaged
        over the steps (times summed); the version advances once per batch.
        """
        cfg = self.cfg
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.obs_norm is not None:  # rows 1..T are new; row 0 repeats the previous unroll's row T
            self.obs_norm.update(batch["obs"][1:])
        lag = (self.version - batch["version"]).float()
        self.frames += cfg.frames_per_update
        size = batch["version"].shape[0]
        results, applied = [], False
        for _ in range(cfg.learner_epochs):
            order = (torch.randperm(size, generator=self.shuffle) if cfg.learner_minibatches > 1
                     else torch.arange(size))
            for idx in order.chunk(cfg.learner_minibatches):
                result, ok = self._update(select_unrolls(batch, idx.to(self.device)) if len(idx) < size else batch)
                results.append(result)
                applied |= ok
        result = average_metrics(results)
        result.update(policy_lag_mean=float(lag.mean()), policy_lag_max=float(lag.max()))
        if applied:
            self.version += 1
        return result

    def _update(self, batch: Batch) -> tuple[dict[str, float], bool]:
        """One gradient step on ``batch``; (metrics, whether the weights changed)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        core_state = (batch["core_h"], batch["core_c"]) if self.spec.core_size else ()
        inputs = net_inputs(batch["obs"], batch["first"], batch["last_action"], batch["reward"], cfg.reward_clip)
        out, _ = self.forward(core_state=core_state, **inputs)
        values = out.values[..., 0]  # unnormalised (reward units)
        normalizer = None
        if self.popart is not None:  # the loss takes the head's normalised outputs n = (v - mu) / sigma
            mu, sigma = self.popart.statistics(torch.zeros(values.shape[1], dtype=torch.long, device=self.device))
            values = (values - mu) / sigma
            normalizer = (mu, sigma)
        loss, metrics = impala_loss(
            target_params=out.policy_params[:-1],
            values=values[:-1],
            bootstrap_value=values[-1],
            behaviour_params=batch["policy_params"][:-1],
            actions=batch["action"][:-1],
            **loss_inputs(batch, cfg),
            policy_type=self.spec.policy_type,
            correction=cfg.correction,
            baseline_cost=cfg.baseline_cost,
            entropy_cost=cfg.entropy_cost,
            clip_rho_threshold=cfg.clip_rho_threshold,
            clip_c_threshold=cfg.clip_c_threshold,
            clip_pg_rho_threshold=cfg.clip_pg_rho_threshold,
            lambda_=cfg.vtrace_lambda,
            value_normalizer=normalizer,
            normalize_advantages=cfg.normalize_advantages,
        )
        t_forward = time.perf_counter()
        result = {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.dim() == 0}
        loss_finite = math.isfinite(float(loss.detach()))
        if not loss_finite and self.grad_hook is None:
            return self._skip(result), False
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if loss_finite:
            loss.backward()
        if self.grad_hook is not None:
            # Every learner joins the all-reduce on every step; a non-finite loss contributes NaN,
            # so all learners see a non-finite gradient norm below and skip the update together.
            self.grad_hook(self.model, loss_finite)
        t_backward = time.perf_counter()
        max_norm = cfg.grad_norm_clip if cfg.grad_norm_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip(result), False
        self.optimizer.step()
        if self.popart is not None:
            old_mu, old_sigma = self.popart.update(metrics["vs"], torch.zeros((), dtype=torch.long, device=self.device))
            self.popart.preserve_outputs_(self.model.value_head, old_mu, old_sigma)
            result.update(popart_mu=float(self.popart.mu[0]), popart_sigma=float(self.popart.sigma[0]))
        self.nonfinite_in_a_row = 0
        t_end = time.perf_counter()
        result.update(grad_norm=grad_norm, learning_rate=lr, nonfinite_total=float(self.nonfinite_total),
                      time_forward_s=t_forward - t0, time_backward_s=t_backward - t_forward,
                      time_optimizer_s=t_end - t_backward)
        return result, True

    def _skip(self, result: dict[str, float]) -> dict[str, float]:
        """A non-finite loss or gradient: leave the weights as they were and count it."""
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        result.update(nonfinite_total=float(self.nonfinite_total))
        return result

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "version": self.version, "frames": self.frames}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self.frames = int(state["frames"])
