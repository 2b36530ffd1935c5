"""The off-policy corrections compared in the IMPALA paper (Table 2), behind one interface.

:func:`compute_targets` returns :class:`~impala_rl.core.vtrace.VTraceReturns` for every
correction, so the loss does not care which one is used. With the notation of
:mod:`impala_rl.core.vtrace` (``IS_t = pi(a_t|x_t) / mu(a_t|x_t) = exp(log_rhos[t])``):

``'vtrace'``
    V-trace, :func:`~impala_rl.core.vtrace.from_importance_weights` with the thresholds
    and ``lambda_`` of the :class:`~impala_rl.core.vtrace.VTraceParams` given.

``'none'`` (No-correction)
    The behaviour policy is ignored. ``vs`` is V-trace with every ``rho_t = 1`` and
    ``c_t = lambda_``: for ``lambda_ = 1`` the n-step bootstrapped discounted return
    ``v_s = sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i) r_t + (prod_{i=s}^{T-1} gamma_i) V(x_T)``
    (for ``lambda_ < 1`` the TD(lambda) return).
    ``pg_advantages[s] = r_s + gamma_s v_{s+1} - V(x_s)`` with ``v_T = V(x_T)``.

``'1step_is'`` (1-step importance sampling)
    "No correction when estimating V(x_s); at each time step t the policy gradient is
    weighted by the importance weight rho_t": ``vs`` as in ``'none'``;
    ``pg_advantages[t] = min(rho_bar_pg, IS_t) * (r_t + gamma_t v_{t+1} - V(x_t))``. The
    paper (section 5.2.2): "For V-trace and 1-step importance sampling we clip each
    importance weight rho_t and c_t at 1", so ``VTraceParams.pg_rho`` (default 1)
    clips it; None leaves it unclipped.

``'epsilon'`` (epsilon-correction)
    Targets as ``'none'``. The correction lives in the policy-gradient loss: ``log pi(a)``
    is replaced by ``log(pi(a) + EPSILON)`` (Babaeizadeh et al., 2016), which bounds it
    below by ``log(EPSILON)`` and keeps a vanishing ``pi(a)`` from producing huge
    gradients. :func:`policy_gradient_log_probs` applies it; the loss calls it.

Of the :class:`~impala_rl.core.vtrace.VTraceParams`, ``rho`` and ``c`` only affect
``'vtrace'``; ``pg_rho`` affects ``'vtrace'`` and ``'1step_is'``; ``lambda_`` affects
every correction. Every correction returns the importance weight of its policy gradient
(``pg_rhos``: 1 where it has none) apart from the unweighted advantage.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from impala_rl.core.vtrace import VTraceParams, VTraceReturns, from_importance_weights, truncate

__all__ = [
    "CORRECTIONS",
    "EPSILON",
    "check_correction",
    "compute_targets",
    "epsilon_log_prob",
    "policy_gradient_log_probs",
]

CORRECTIONS: Tuple[str, ...] = ("vtrace", "1step_is", "epsilon", "none")

EPSILON = 1e-6
"""The epsilon of the epsilon-correction: ``log pi(a)`` becomes ``log(pi(a) + EPSILON)``."""


def check_correction(correction: str) -> None:
    """Raise ``ValueError`` unless ``correction`` is one of :data:`CORRECTIONS`."""
    if correction not in CORRECTIONS:
        raise ValueError(
            f"unknown correction {correction!r}; expected one of "
            f"{', '.join(map(repr, CORRECTIONS))}"
        )


def epsilon_log_prob(action_log_probs: torch.Tensor) -> torch.Tensor:
    """``log(exp(action_log_probs) + EPSILON)``, computed stably, differentiable.

    Args:
      action_log_probs: float ``[...]``, ``log pi(a)``.

    Returns:
      float ``[...]``, ``log(pi(a) + EPSILON)`` (always ``>= log(EPSILON)``).
    """
    log_eps = torch.full_like(action_log_probs, math.log(EPSILON))
    return torch.logaddexp(action_log_probs, log_eps)


def policy_gradient_log_probs(
    correction: str, target_action_log_probs: torch.Tensor
) -> torch.Tensor:
    """The ``log pi(a_t)`` that the policy-gradient loss should use under ``correction``.

    Args:
      correction: one of :data:`CORRECTIONS`.
      target_action_log_probs: float ``[T, B]``, ``log pi(a_t|x_t)`` with its gradient.

    Returns:
      float ``[T, B]``: :func:`epsilon_log_prob` of the input for ``'epsilon'``, the input
      itself otherwise.
    """
    check_correction(correction)
    if correction == "epsilon":
        return epsilon_log_prob(target_action_log_probs)
    return target_action_log_probs


def compute_targets(
    correction: str,
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    vtrace: VTraceParams = VTraceParams(),
) -> VTraceReturns:
    """Value targets and policy-gradient advantages under ``correction``.

    Args:
      correction: one of :data:`CORRECTIONS` (definitions in the module docstring).
      log_rhos: float ``[T, B]``, ``log pi(a_t|x_t) - log mu(a_t|x_t)``.
      discounts: float ``[T, B]``, ``gamma_t``; 0 where the episode ended at step t.
      rewards: float ``[T, B]``, ``r_t``.
      values: float ``[T, B]``, ``V(x_t)``.
      bootstrap_value: float ``[B]``, ``V(x_T)``.
      vtrace: the truncation thresholds (None = no clipping) and ``lambda_``; which
        correction uses which is in the module docstring.

    Returns:
      :class:`~impala_rl.core.vtrace.VTraceReturns` of float ``[T, B]``, without gradient.
    """
    check_correction(correction)
    if correction == "vtrace":
        weights, clipping = log_rhos, vtrace
    else:
        # Every other correction ignores the behaviour policy for the value target:
        # V-trace with all importance weights equal to 1 (and no clipping to spoil that).
        weights = torch.zeros_like(log_rhos)
        clipping = VTraceParams(rho=None, c=None, pg_rho=None, lambda_=vtrace.lambda_)
    targets = from_importance_weights(
        weights,
        discounts,
        rewards,
        values,
        bootstrap_value,
        clip_rho_threshold=clipping.rho,
        clip_c_threshold=clipping.c,
        clip_pg_rho_threshold=clipping.pg_rho,
        lambda_=clipping.lambda_,
    )
    if correction == "1step_is":
        with torch.no_grad():
            pg_rhos = truncate(torch.exp(log_rhos), vtrace.pg_rho)  # V-trace's own truncation
        return targets._replace(pg_rhos=pg_rhos)
    return targets  # 'vtrace', 'none' and 'epsilon'
