"""The IMPALA actor-critic loss (paper, section 4.2): policy gradient, baseline, entropy.

Every loss is SUMMED over the ``T x B`` steps of a batch, not averaged. That is what
deepmind/scalable_agent and torchbeast do, and the paper's hyper-parameters (learning
rate 6e-4 with RMSProp eps 0.01, global gradient-norm clip 40, baseline cost 0.5,
entropy cost ~0.01) were tuned for summed losses; with a mean the same settings would
give gradients ``T * B`` times smaller. A caller that changes ``T`` or ``B`` should keep
this in mind when choosing the learning rate.

:func:`impala_loss` is a pure function of the batch and the learner's network outputs
returning ``(loss, metrics)``; the learner only differentiates and steps the optimiser.
Its settings (the correction, the loss weights, V-trace's :class:`~impala_rl.core.vtrace.VTraceParams`)
travel as one :class:`LossConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from impala_rl.core import distributions
from impala_rl.core.corrections import check_correction, compute_targets, policy_gradient_log_probs
from impala_rl.core.vtrace import VTraceParams

__all__ = [
    "LossConfig",
    "policy_gradient_loss",
    "baseline_loss",
    "entropy_loss",
    "impala_loss",
    "standardize",
    "rho_statistics",
    "SMALL_RHO",
]

SMALL_RHO = 0.1
"""A step whose importance weight ``pi/mu`` is below this counts as one the learner's
policy would rarely take (``rho_small_fraction``)."""


@dataclass(frozen=True)
class LossConfig:
    """The settings of :func:`impala_loss` (defaults: the paper's).

    Attributes:
      correction: ``'vtrace'``, ``'1step_is'``, ``'epsilon'`` or ``'none'``
        (:mod:`impala_rl.core.corrections`).
      baseline_cost: weight of the baseline loss.
      entropy_cost: weight of the entropy loss.
      vtrace: V-trace's truncation thresholds (None = no clipping) and ``lambda_``.
      normalize_advantages: standardise the policy-gradient advantages over the batch,
        as PPO and Sample Factory do. Not in the paper; it makes the policy's step
        independent of the reward scale, so the entropy bonus cannot swamp a small advantage
        signal. What is standardised is the UNWEIGHTED advantage ``r + gamma v' - V``
        (after any PopArt scaling); the importance weight multiplies it afterwards:
        ``pg_rho * (A - mean(A)) / (std(A) + 1e-8)``. So a step the learner's policy would
        not take (clipped rho near 0, as replayed data has) adds nothing, and with rho = 1
        everywhere this is the plain standardised advantage.
    """

    correction: str = "vtrace"
    baseline_cost: float = 0.5
    entropy_cost: float = 0.01
    vtrace: VTraceParams = VTraceParams()
    normalize_advantages: bool = False


def _check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; "
            "expected both [T, B]"
        )


def standardize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean(x)) / (std(x) + eps)`` over all elements (population std); no gradient.

    A single element has std 0 and maps to 0.
    """
    x = x.detach()
    return (x - x.mean()) / (x.std(unbiased=False) + eps)


def rho_statistics(
    log_rhos: torch.Tensor, clip_rho_threshold: Optional[float], prefix: str = ""
) -> Dict[str, torch.Tensor]:
    """Figures of the importance weights ``rho = exp(log_rhos)`` (any shape), no gradient.

    Returns 0-dim tensors: ``{prefix}mean_rho`` (untruncated), ``{prefix}rho_clipped_fraction``
    (``rho > clip_rho_threshold``; 0 when it is None) and ``{prefix}rho_small_fraction``
    (``rho < SMALL_RHO``).
    """
    with torch.no_grad():
        rhos = torch.exp(log_rhos)
        if clip_rho_threshold is None:
            clipped = torch.zeros((), dtype=rhos.dtype, device=rhos.device)
        else:
            clipped = (rhos > clip_rho_threshold).to(rhos.dtype).mean()
        return {
            f"{prefix}mean_rho": rhos.mean(),
            f"{prefix}rho_clipped_fraction": clipped,
            f"{prefix}rho_small_fraction": (rhos < SMALL_RHO).to(rhos.dtype).mean(),
        }


def policy_gradient_loss(
    target_action_log_probs: torch.Tensor, pg_advantages: torch.Tensor
) -> torch.Tensor:
    """``-sum_{t,b} log pi(a_t|x_t) * A_t``; the advantages are treated as constants.

    Args:
      target_action_log_probs: float ``[T, B]``, ``log pi(a_t|x_t)`` with its gradient.
      pg_advantages: float ``[T, B]``, advantages (detached here).

    Returns:
      float scalar (0-dim) tensor.
    """
    _check_same_shape(
        "target_action_log_probs", target_action_log_probs, "pg_advantages", pg_advantages
    )
    return -(target_action_log_probs * pg_advantages.detach()).sum()


def baseline_loss(vs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum_{t,b} (vs - values)^2``; unscaled (the caller multiplies by baseline_cost).

    Its gradient with respect to ``values`` is ``-(vs - values)``.

    Args:
      vs: float ``[T, B]``, value targets (detached here).
      values: float ``[T, B]``, the learner's value estimates, with their gradient.

    Returns:
      float scalar (0-dim) tensor.
    """
    _check_same_shape("vs", vs, "values", values)
    return 0.5 * (vs.detach() - values).square().sum()


def entropy_loss(policy_type: str, params: torch.Tensor) -> torch.Tensor:
    """``-sum_{t,b} H(pi(.|x_t))``; unscaled (the caller multiplies by entropy_cost).

    Minimising it maximises the policy's entropy (the A3C entropy bonus).

    Args:
      policy_type: ``'categorical'`` or ``'gaussian'``.
      params: float ``[T, B, P]``, packed target-policy parameters, with their gradient.

    Returns:
      float scalar (0-dim) tensor.
    """
    return -distributions.entropy(policy_type, params).sum()


def impala_loss(
    target_params: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    behaviour_params: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    policy_type: str = "categorical",
    config: LossConfig = LossConfig(),
    value_normalizer: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    replayed: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The full IMPALA loss for one batch of unrolls, summed over ``T x B``.

    ``loss = pg_loss + baseline_cost * baseline_loss + entropy_cost * entropy_loss``, with
    the targets from :func:`impala_rl.core.corrections.compute_targets` (V-trace by
    default); under ``correction='epsilon'`` the policy-gradient term uses
    ``log(pi(a) + 1e-6)``. The costs, the correction and its parameters are ``config``'s.

    Args:
      target_params: float ``[T, B, P]``, the learner's packed policy parameters at
        ``x_0 .. x_{T-1}`` (with gradient).
      values: float ``[T, B]``, the learner's value estimates ``V(x_t)`` (with gradient);
        NORMALISED outputs when ``value_normalizer`` is given.
      bootstrap_value: float ``[B]``, ``V(x_T)`` (no gradient is taken through it);
        normalised when ``value_normalizer`` is given.
      behaviour_params: float ``[T, B, P]``, the actors' packed policy parameters.
      actions: categorical: int64 ``[T, B]``; gaussian: float ``[T, B, A]`` (``P = 2A``).
      rewards: float ``[T, B]``, ``r_t`` (already clipped/scaled as the caller wishes).
      discounts: float ``[T, B]``, ``gamma * (1 - done_t)``.
      policy_type: ``'categorical'`` or ``'gaussian'``: how ``target_params``,
        ``behaviour_params`` and ``actions`` are read.
      config: the correction, the loss weights, V-trace's parameters and whether to
        standardise the advantages (:class:`LossConfig`).
      value_normalizer: optional PopArt statistics ``(mu, sigma)``, each float ``[B]``:
        the statistics of each trajectory's task that the value head's outputs are
        normalised with. Then ``sigma * v + mu`` (unnormalised values) feed V-trace,
        the baseline loss is taken in normalised space,
        ``0.5 * sum(((vs - mu) / sigma - values)^2)``, and the policy-gradient
        advantages are divided by ``sigma`` (Hessel et al., 2018).
      replayed: optional bool ``[B]``, which trajectories came from a replay buffer: adds
        the importance-weight figures of those alone (``replay_*``).

    Returns:
      ``(loss, metrics)``: ``loss`` is a float 0-dim tensor with gradient; ``metrics``
      maps names to detached tensors:

      * ``'total_loss'``, ``'pg_loss'``, ``'baseline_loss'``, ``'entropy_loss'``: 0-dim;
        the last two already multiplied by their costs, and they sum to ``total_loss``.
      * ``'entropy'``: 0-dim, mean policy entropy per step.
      * ``'mean_rho'``: 0-dim, mean of ``exp(log_rhos)`` (untruncated).
      * ``'rho_clipped_fraction'``: 0-dim, fraction of steps with
        ``exp(log_rho) > config.vtrace.rho`` (0 when the threshold is None).
      * ``'rho_small_fraction'``: 0-dim, fraction of steps with ``exp(log_rho) < SMALL_RHO``.
      * ``'replay_mean_rho'``, ``'replay_rho_clipped_fraction'``,
        ``'replay_rho_small_fraction'``: the same over the replayed trajectories (only when
        ``replayed`` marks some).
      * ``'mean_vs'``: 0-dim, mean value target, unnormalised.
      * ``'mean_advantage'``: 0-dim, mean of the advantages the policy gradient used
        (divided by sigma under PopArt).
      * ``'vs'``: float ``[T, B]``, the value targets, unnormalised, for updating PopArt.
    """
    distributions.check_policy_type(policy_type)
    correction, vtrace = config.correction, config.vtrace
    check_correction(correction)
    if target_params.dim() != 3 or target_params.shape != behaviour_params.shape:
        raise ValueError(
            f"target_params has shape {tuple(target_params.shape)} but behaviour_params has "
            f"shape {tuple(behaviour_params.shape)}; expected both [T, B, P]"
        )
    if values.shape != target_params.shape[:2]:
        raise ValueError(
            f"values has shape {tuple(values.shape)} but target_params has shape "
            f"{tuple(target_params.shape)}; expected values [T, B] and target_params [T, B, P]"
        )

    target_action_log_probs = distributions.log_prob(policy_type, target_params, actions)
    with torch.no_grad():
        behaviour_action_log_probs = distributions.log_prob(policy_type, behaviour_params, actions)
        log_rhos = target_action_log_probs - behaviour_action_log_probs
        if value_normalizer is None:
            unnormalised_values, unnormalised_bootstrap = values, bootstrap_value
        else:
            mu, sigma = value_normalizer
            batch = values.shape[1:]
            if mu.shape != batch or sigma.shape != batch:
                raise ValueError(
                    f"value_normalizer (mu, sigma) have shapes {tuple(mu.shape)} and "
                    f"{tuple(sigma.shape)} but values has shape {tuple(values.shape)}; "
                    f"expected mu and sigma [B] with B = {values.shape[1]}"
                )
            unnormalised_values = sigma * values + mu
            unnormalised_bootstrap = sigma * bootstrap_value + mu
        targets = compute_targets(
            correction,
            log_rhos,
            discounts,
            rewards,
            unnormalised_values,
            unnormalised_bootstrap,
            vtrace,
        )
        if value_normalizer is None:
            value_targets, advantages = targets.vs, targets.advantages
        else:
            value_targets = (targets.vs - mu) / sigma
            advantages = targets.advantages / sigma
        if config.normalize_advantages:
            advantages = standardize(advantages)
        pg_advantages = targets.pg_rhos * advantages  # weighted after any rescaling

    pg_loss = policy_gradient_loss(
        policy_gradient_log_probs(correction, target_action_log_probs), pg_advantages
    )
    scaled_baseline_loss = config.baseline_cost * baseline_loss(value_targets, values)
    unscaled_entropy_loss = entropy_loss(policy_type, target_params)
    scaled_entropy_loss = config.entropy_cost * unscaled_entropy_loss
    total_loss = pg_loss + scaled_baseline_loss + scaled_entropy_loss

    with torch.no_grad():
        metrics = {
            "total_loss": total_loss.detach(),
            "pg_loss": pg_loss.detach(),
            "baseline_loss": scaled_baseline_loss.detach(),
            "entropy_loss": scaled_entropy_loss.detach(),
            "entropy": -unscaled_entropy_loss.detach() / values.numel(),
            **rho_statistics(log_rhos, vtrace.rho),
            "mean_vs": targets.vs.mean(),
            "mean_advantage": pg_advantages.mean(),
            "vs": targets.vs,
        }
        if replayed is not None and bool(replayed.any()):
            metrics.update(rho_statistics(log_rhos[:, replayed], vtrace.rho, prefix="replay_"))
    return total_loss, metrics
