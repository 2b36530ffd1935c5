"""V-trace off-policy targets (Espeholt et al., 2018, section 4).

All tensors are time-major: per-step quantities are ``[T, B]``, the bootstrap value is
``[B]``. Row ``t`` of every ``[T, B]`` tensor describes the same transition
``(x_t, a_t, r_t, x_{t+1})``:

* ``log_rhos[t]`` is ``log pi(a_t|x_t) - log mu(a_t|x_t)`` (:func:`impala_rl.core.losses.impala_loss`
  takes it from the packed policy parameters with :mod:`impala_rl.core.distributions`);
* ``rewards[t]`` is ``r_t``, received after taking ``a_t`` in ``x_t``;
* ``discounts[t]`` is ``gamma_t``, the discount applied to the value of ``x_{t+1}``:
  ``gamma * (1 - done_t)``, so 0 where the episode ended at step ``t`` (the trace is
  cut there and nothing after it leaks into the targets of earlier steps);
* ``values[t]`` is ``V(x_t)`` and ``bootstrap_value`` is ``V(x_T)``.

Definitions (paper, eq. 1, with per-step discounts and the ``lambda`` of its
appendix; ``rho_bar``, ``c_bar`` and ``rho_bar_pg`` are ``clip_rho_threshold``,
``clip_c_threshold`` and ``clip_pg_rho_threshold``; a threshold of ``None`` disables
that truncation)::

    rho_t    = min(rho_bar,    pi(a_t|x_t) / mu(a_t|x_t))
    c_t      = lambda * min(c_bar, pi(a_t|x_t) / mu(a_t|x_t))
    delta_t  = rho_t * (r_t + gamma_t V(x_{t+1}) - V(x_t))
    v_s      = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t
    A_s      = min(rho_bar_pg, pi/mu) * (r_s + gamma_s v_{s+1} - V(x_s)),   v_T = V(x_T)

The result keeps the two factors of ``A_s`` apart (``pg_rhos`` and ``advantages``) so that a
loss that rescales advantages (standardisation, PopArt) rescales the unweighted factor and
applies the importance weight afterwards: a step the current policy would not take
(``pi/mu`` near 0) then adds nothing, whatever the rescaling.

``v_s`` is computed with the equivalent O(T) backward recursion
``v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))``, vectorised over ``B``.
All targets are computed under ``torch.no_grad``: they never carry a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

__all__ = [
    "VTraceParams",
    "VTraceReturns",
    "from_importance_weights",
    "truncate",
]


@dataclass(frozen=True)
class VTraceParams:
    """The truncation thresholds and ``lambda`` of V-trace, as one value (defaults: the paper's).

    :func:`impala_rl.core.corrections.compute_targets` and
    :func:`impala_rl.core.losses.impala_loss` take this; :func:`from_importance_weights`
    keeps the four explicit keyword arguments of the paper's (and scalable_agent's, rlax's)
    function, named after the fields below.

    Attributes:
      rho: ``rho_bar`` (``clip_rho_threshold``), truncating the ``rho_t`` in ``delta_t``.
      c: ``c_bar`` (``clip_c_threshold``), truncating the trace coefficients ``c_t``.
      pg_rho: ``rho_bar_pg`` (``clip_pg_rho_threshold``), truncating the importance weight
        of the policy-gradient advantage.
      lambda_: trace-cutting parameter in [0, 1], multiplies every ``c_t``.

    A threshold of None disables that truncation.
    """

    rho: Optional[float] = 1.0
    c: Optional[float] = 1.0
    pg_rho: Optional[float] = 1.0
    lambda_: float = 1.0


class VTraceReturns(NamedTuple):
    """V-trace targets; no field has a gradient.

    Attributes:
      vs: float ``[T, B]``, the value targets ``v_s``.
      pg_rhos: float ``[T, B]``, the (clipped) importance weight of the policy gradient at
        step ``s``: ``min(rho_bar_pg, pi/mu)`` for V-trace; 1 for a correction without one.
      advantages: float ``[T, B]``, the unweighted advantage ``r_s + gamma_s v_{s+1} - V(x_s)``.
    """

    vs: torch.Tensor
    pg_rhos: torch.Tensor
    advantages: torch.Tensor

    @property
    def pg_advantages(self) -> torch.Tensor:
        """float ``[T, B]``, ``pg_rhos * advantages``: what weights ``grad log pi(a_s|x_s)``."""
        return self.pg_rhos * self.advantages


def _shape(x: torch.Tensor) -> tuple:
    return tuple(x.shape)


def _check_time_batch(bootstrap_value: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Check that every tensor in ``tensors`` is ``[T, B]`` (T >= 1) and bootstrap ``[B]``."""
    (ref_name, ref), *rest = tensors.items()
    names = ", ".join(tensors)
    if ref.dim() != 2 or ref.shape[0] == 0:
        raise ValueError(f"{ref_name} has shape {_shape(ref)}; expected [T, B] with T >= 1")
    for name, x in rest:
        if x.shape != ref.shape:
            raise ValueError(
                f"{name} has shape {_shape(x)} but {ref_name} has shape {_shape(ref)}; "
                f"expected all of [T, B] ({names})"
            )
    if bootstrap_value.shape != ref.shape[1:]:
        raise ValueError(
            f"bootstrap_value has shape {_shape(bootstrap_value)} but {ref_name} has shape "
            f"{_shape(ref)}; expected bootstrap_value [B] with B = {ref.shape[1]}"
        )


def truncate(x: torch.Tensor, threshold: Optional[float]) -> torch.Tensor:
    """``min(threshold, x)`` elementwise (the paper's truncated importance weights); None = no truncation."""
    return x if threshold is None else torch.clamp(x, max=threshold)


def _discounted_backward_sum(deltas: torch.Tensor, decays: torch.Tensor) -> torch.Tensor:
    """``acc_t = deltas_t + decays_t * acc_{t+1}``, ``acc_T = 0``; all ``[T, B]``.

    The single backward recursion in this package (V-trace and every correction use it).
    Python loop over T, vectorised over B.
    """
    out = torch.empty_like(deltas)
    acc = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        acc = deltas[t] + decays[t] * acc
        out[t] = acc
    return out


def from_importance_weights(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: Optional[float] = 1.0,
    clip_c_threshold: Optional[float] = 1.0,
    clip_pg_rho_threshold: Optional[float] = 1.0,
    lambda_: float = 1.0,
) -> VTraceReturns:
    """V-trace targets from log importance weights (see the module docstring for the maths).

    Args:
      log_rhos: float ``[T, B]``, ``log pi(a_t|x_t) - log mu(a_t|x_t)`` (target minus
        behaviour). Not clipped here; the thresholds below apply to ``exp(log_rhos)``.
      discounts: float ``[T, B]``, ``gamma_t``; 0 where the episode ended at step t.
      rewards: float ``[T, B]``, ``r_t``.
      values: float ``[T, B]``, ``V(x_t)`` under the target policy's value function.
      bootstrap_value: float ``[B]``, ``V(x_T)``.
      clip_rho_threshold: ``rho_bar`` truncating the ``rho_t`` in ``delta_t``; None = no clip.
      clip_c_threshold: ``c_bar`` truncating the trace coefficients ``c_t``; None = no clip.
      clip_pg_rho_threshold: truncation of the importance weight on the policy-gradient
        advantage; None = no clip.
      lambda_: trace-cutting parameter in [0, 1], multiplies every ``c_t`` (paper appendix).

    Returns:
      :class:`VTraceReturns` of float ``[T, B]`` tensors in the dtype of the inputs
      (float32 and float64 both work), without gradient.

    Note on ``lambda_ < 1``: implementations differ in the ``v_{s+1}`` used by the
    policy-gradient advantage ``r_s + gamma_s v_{s+1} - V(x_s)``; some mix it with
    ``V(x_{s+1})`` using lambda. We use the plain V-trace target ``v_{s+1}`` (with
    ``v_T = bootstrap_value``), as deepmind/scalable_agent does; for ``lambda_ = 1``
    all agree.
    """
    _check_time_batch(
        bootstrap_value, log_rhos=log_rhos, discounts=discounts, rewards=rewards, values=values
    )
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
    with torch.no_grad():
        rhos = torch.exp(log_rhos)
        clipped_rhos = truncate(rhos, clip_rho_threshold)
        cs = lambda_ * truncate(rhos, clip_c_threshold)

        values_t_plus_1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
        deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)
        vs = values + _discounted_backward_sum(deltas, discounts * cs)

        vs_t_plus_1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
        advantages = rewards + discounts * vs_t_plus_1 - values
        pg_rhos = truncate(rhos, clip_pg_rho_threshold)
    return VTraceReturns(vs=vs, pg_rhos=pg_rhos, advantages=advantages)

