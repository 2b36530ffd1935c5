"""The learner: gradients, clipping, the optimiser and its schedule, versions and frames.

It knows nothing of V-trace: the agent's loss (:meth:`impala_rl.agents.Agent.loss`) maps
a batch to ``(loss, metrics)``; the learner computes gradients, optionally averages
them over several learners (``gradient_sync``, a strategy set by
:mod:`impala_rl.runtime.distributed`), clips them, skips non-finite updates, steps the
optimiser (RMSProp, the paper's TensorFlow RMSProp, or Adam) with the linearly annealed
learning rate, and counts versions and frames. The agent's hooks run once per batch
(:meth:`~impala_rl.agents.Agent.before_updates`) and after each optimiser step
(:meth:`~impala_rl.agents.Agent.after_update`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from typing import NamedTuple

import torch

from impala_rl.agents.base import LossOutput, agent_class
from impala_rl.config import TrainConfig
from impala_rl.core.optim import RMSpropTF
from impala_rl.runtime.precision import AutocastForward, resolve_precision
from impala_rl.runtime.types import Batch, RolloutSpec

log = logging.getLogger("impala_rl")


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile can build kernels here: on a CPU its backend compiles C++, so it
    needs a C++ compiler on the PATH; without one the learner runs eagerly (and says so)."""
    if device.type != "cpu" or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"):
        return True
    log.warning("--compile: no C++ compiler (c++, g++ or clang++) on the PATH, which torch.compile needs on a CPU; "
                "the learner runs uncompiled")
    return False


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, with the config's settings."""
    if cfg.optimizer == "adam":
        # The fused kernel updates every tensor in one pass: on a CPU it takes 0.34 ms a step for
        # Rainbow's MinAtar network where the default per-tensor loop takes 0.72 (BENCHMARKS.md).
        params = list(params)
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
        return torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.adam_epsilon, fused=fused)
    cls = RMSpropTF if cfg.optimizer == "rmsprop_tf" else torch.optim.RMSprop
    return cls(params, lr=cfg.learning_rate, alpha=cfg.rmsprop_decay, momentum=cfg.rmsprop_momentum,
               eps=cfg.rmsprop_epsilon)


LEARNER_HYPERPARAMETERS = ("learning_rate", "rmsprop_epsilon", "adam_epsilon", "grad_norm_clip")
"""The learner's own hyperparameters that may change while training (population based training)."""


def mutable_hyperparameters(cfg: TrainConfig) -> tuple[str, ...]:
    """What :meth:`Learner.set_hyperparameters` may change for ``cfg``'s agent: the learner's
    own and those the agent declares (``AgentBase.HYPERPARAMETERS``; IMPALA: its loss weights)."""
    return LEARNER_HYPERPARAMETERS + tuple(agent_class(cfg.agent).HYPERPARAMETERS)


def average_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the steps of one batch; times (``time_*``) are summed, counters are the last."""
    if len(results) == 1:
        return results[0]
    out = {}
    for key in dict.fromkeys(k for r in results for k in r):  # a key some steps lack (replay_*) too
        values = [r[key] for r in results if key in r]
        if key.startswith("time_"):
            out[key] = sum(values)
        elif key == "nonfinite_total":
            out[key] = values[-1]
        else:
            out[key] = sum(values) / len(values)
    return out


class StepResult(NamedTuple):
    """What :meth:`Learner.update` did with one batch."""

    metrics: dict[str, float]  # averaged over the batch's minibatch steps (times summed)
    per_unroll: dict[str, torch.Tensor]  # the agent's per-unroll outputs, [B, ...] in the batch's order


class Learner:
    """Owns the network, the optimiser and the policy version; trains with ``agent``'s loss."""

    def __init__(self, cfg: TrainConfig, spec: RolloutSpec, model: torch.nn.Module, device: torch.device, agent):
        self.cfg = cfg
        self.spec = spec
        self.agent = agent
        self.device = device
        self.model = model.to(device)
        # The compiled callable shares parameters with self.model (whose state_dict stays plain).
        self.compiled = cfg.compile and can_compile(self.device)
        self.forward = torch.compile(self.model) if self.compiled else self.model
        self.precision = resolve_precision(cfg.learner_precision, device)  # float32 or bfloat16
        if self.precision == "bfloat16":  # outputs come back float32: the loss never sees bfloat16
            self.forward = AutocastForward(self.forward, device)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.version = 0  # number of updates applied = the policy version actors see
        self.frames = 0  # environment frames consumed
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        # Multi-learner (runtime/distributed.py): gradient_sync(model, loss_finite) averages the
        # gradients over the learners between backward and the optimiser step.
        self.gradient_sync = None
        self.shuffle = torch.Generator().manual_seed(cfg.seed)  # minibatch order (learner_minibatches > 1)

    def learning_rate(self) -> float:
        if not self.cfg.lr_anneal:
            return self.cfg.learning_rate
        return self.cfg.learning_rate * max(0.0, 1.0 - self.frames / self.cfg.total_frames)

    def set_hyperparameters(self, **values: float) -> None:
        """Change hyperparameters between two updates, without a restart (PBT's explore and
        exploit): the learning rate (the schedule continues from the new base value), the
        agent's loss weights, the optimiser's epsilon and the gradient-norm clip."""
        mutable = mutable_hyperparameters(self.cfg)
        unknown = sorted(set(values) - set(mutable))
        if unknown:
            raise ValueError(f"cannot change {', '.join(unknown)} while training; changeable: {', '.join(mutable)}")
        self.cfg = dataclasses.replace(self.cfg, **values).validate()
        self.agent.update_config(self.cfg)  # its loss reads its weights from the config in force
        eps = self.cfg.adam_epsilon if self.cfg.optimizer == "adam" else self.cfg.rmsprop_epsilon
        for group in self.optimizer.param_groups:
            group["eps"] = eps

    def hyperparameters(self) -> dict[str, float]:
        return {name: getattr(self.cfg, name) for name in mutable_hyperparameters(self.cfg)}

    def step(self, batch: Batch) -> dict[str, float]:
        """Train on a batch (see :meth:`update`); returns its metrics."""
        return self.update(batch).metrics

    def fresh_frames(self, batch: Batch) -> int:
        """Environment frames behind a batch, counted from the data: the fresh unrolls the
        source took from the backend for it, as agent steps (``fresh_steps``, a 0-dim tensor,
        where the source says so: one that stores what arrives and trains on replayed data
        only); else its unrolls not marked ``replayed`` x T steps; x the action repeat,
        times the number of peer learners (each trains on a batch of its own)."""
        if "fresh_steps" in batch:
            steps = int(batch["fresh_steps"])
        else:
            replayed = batch.get("replayed")
            fresh = batch["version"].shape[0] - (int(replayed.sum()) if replayed is not None else 0)
            steps = fresh * (batch["obs"].shape[0] - 1)
        return steps * self.cfg.frames_per_step * self.cfg.num_learners

    def update(self, batch: Batch) -> "StepResult":
        """Train on a batch of B unrolls ([T+1, B, ...] row fields).

        One gradient step on the whole batch by default (the paper). With
        ``learner_epochs`` E and ``learner_minibatches`` M it makes E passes, each over the
        B unrolls shuffled into M minibatches: E * M steps, V-trace correcting for the
        policy moving away from the behaviour policy between steps. Metrics are averaged
        over the steps (times summed); the agent's per-unroll outputs come back in the
        batch's unroll order (from the last pass); the version advances once per batch.
        """
        cfg = self.cfg
        self.frames += self.fresh_frames(batch)
        self.agent.set_progress(self.frames)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k != "fresh_steps"}
        replayed = batch.get("replayed")  # bool [B] from a replay source (runtime/replay.py)
        # Statistics kept in the network (observation normalisation) see each unroll once: the fresh ones.
        self.agent.before_updates(self.model, batch if replayed is None else
                                  self.spec.select(batch, torch.nonzero(~replayed).flatten()))
        lag = (self.version - batch["version"]).float()
        size = batch["version"].shape[0]
        results, applied, per_unroll = [], False, {}
        for _ in range(cfg.learner_epochs):
            order = (torch.randperm(size, generator=self.shuffle) if cfg.learner_minibatches > 1
                     else torch.arange(size))
            for idx in order.chunk(cfg.learner_minibatches):
                idx = idx.to(self.device)
                result, ok, output = self._update(self.spec.select(batch, idx) if len(idx) < size else batch)
                results.append(result)
                applied |= ok
                if len(idx) == size and cfg.learner_minibatches == 1:  # the whole batch, in order
                    per_unroll = {name: value.detach() for name, value in output.per_unroll.items()}
                    continue
                for name, value in output.per_unroll.items():  # scattered back into batch order
                    if name not in per_unroll:
                        per_unroll[name] = value.new_zeros((size, *value.shape[1:]))
                    per_unroll[name][idx] = value.detach()
        result = average_metrics(results)
        if self.compiled and self.version < 2:  # the compile happens in the first steps (train and, once, eval mode)
            log.info("learner step %d took %.1f s (torch.compile compiles in the first steps)", self.version + 1,
                     sum(result.get(k, 0.0) for k in ("time_forward_s", "time_backward_s", "time_optimizer_s")))
        result.update(policy_lag_mean=float(lag.mean()), policy_lag_max=float(lag.max()))
        if replayed is not None:
            result.update(replay_fraction=float(replayed.float().mean()),
                          policy_lag_fresh=float(lag[~replayed].mean()), policy_lag_replay=float(lag[replayed].mean()))
        if applied:
            self.version += 1
        return StepResult(result, per_unroll)

    def _update(self, batch: Batch) -> tuple[dict[str, float], bool, LossOutput]:
        """One gradient step on ``batch``; (metrics, whether the weights changed, the agent's output)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        output = self.agent.loss(self.forward, batch)
        loss = output.loss
        t_forward = time.perf_counter()
        result = {k: float(v) for k, v in output.metrics.items() if torch.is_tensor(v) and v.dim() == 0}
        loss_finite = math.isfinite(float(loss.detach()))
        if not loss_finite and self.gradient_sync is None:
            return self._skip(result), False, output
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if loss_finite:
            loss.backward()
        if self.gradient_sync is not None:
            # Every learner joins the all-reduce on every step; a non-finite loss contributes NaN,
            # so all learners see a non-finite gradient norm below and skip the update together.
            self.gradient_sync(self.model, loss_finite)
        t_backward = time.perf_counter()
        max_norm = cfg.grad_norm_clip if cfg.grad_norm_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip(result), False, output
        self.optimizer.step()
        result.update(self.agent.after_update(self.model, output))
        self.nonfinite_in_a_row = 0
        t_end = time.perf_counter()
        result.update(grad_norm=grad_norm, learning_rate=lr, nonfinite_total=float(self.nonfinite_total),
                      time_forward_s=t_forward - t0, time_backward_s=t_backward - t_forward,
                      time_optimizer_s=t_end - t_backward)
        return result, True, output

    def _skip(self, result: dict[str, float]) -> dict[str, float]:
        """A non-finite loss or gradient: leave the weights as they were and count it."""
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        result.update(nonfinite_total=float(self.nonfinite_total))
        return result

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "agent": self.agent.state_dict(), "version": self.version, "frames": self.frames}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.agent.load_state_dict(state.get("agent", {}))  # checkpoints before issue 20 have none
        self.version = int(state["version"])
        self.frames = int(state["frames"])
