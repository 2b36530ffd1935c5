"""Action distributions over *packed policy parameters*, the one convention used everywhere.

A policy head emits a single tensor ``params`` whose last dimension holds the parameters
of the action distribution for every leading position (``[..., P]``):

* ``'categorical'``: ``params`` are the logits, ``[..., A]`` (``P = A``); actions are
  int64 indices ``[...]``.
* ``'gaussian'``: a diagonal Gaussian, ``params = torch.cat([mean, log_std], -1)``,
  ``[..., 2A]`` (``P = 2A``); actions are floats ``[..., A]``. Log-probabilities and
  entropies are summed over the ``A`` action dimensions. Nothing here bounds
  ``log_std``: the model that produces it is responsible for keeping it sane.

Every function is a plain function of tensors and agrees with :mod:`torch.distributions`
(``Categorical(logits=...)`` and ``Independent(Normal(mean, log_std.exp()), 1)``);
the tests check it. They are written out rather than wrapped so that they stay cheap,
batched over arbitrary leading dimensions, and obviously differentiable.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

__all__ = [
    "POLICY_TYPES",
    "check_policy_type",
    "num_params",
    "split_gaussian",
    "log_prob",
    "entropy",
    "sample",
    "mode",
]

POLICY_TYPES: Tuple[str, ...] = ("categorical", "gaussian")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def check_policy_type(policy_type: str) -> None:
    """Raise ``ValueError`` unless ``policy_type`` is one of :data:`POLICY_TYPES`."""
    if policy_type not in POLICY_TYPES:
        raise ValueError(
            f"unknown policy_type {policy_type!r}; expected one of "
            f"{', '.join(map(repr, POLICY_TYPES))}"
        )


def num_params(policy_type: str, action_dim: int) -> int:
    """Size ``P`` of the packed parameter vector: ``A`` (categorical) or ``2A`` (gaussian).

    Args:
      policy_type: ``'categorical'`` or ``'gaussian'``.
      action_dim: number of discrete actions (categorical) or action dimensions (gaussian).
    """
    check_policy_type(policy_type)
    if action_dim < 1:
        raise ValueError(f"action_dim must be >= 1, got {action_dim}")
    return action_dim if policy_type == "categorical" else 2 * action_dim


def split_gaussian(params: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unpack Gaussian parameters.

    Args:
      params: float ``[..., 2A]``, ``torch.cat([mean, log_std], -1)``.

    Returns:
      ``(mean, log_std)``, each float ``[..., A]`` (views of ``params``).
    """
    if params.dim() < 1 or params.shape[-1] % 2 != 0:
        raise ValueError(
            f"gaussian params have shape {tuple(params.shape)}; expected [..., 2A] "
            "(mean and log_std concatenated on the last dimension)"
        )
    mean, log_std = params.chunk(2, dim=-1)
    return mean, log_std


def _categorical_log_probs(logits: torch.Tensor) -> torch.Tensor:
    # Clamp -inf (masked actions) to the most negative finite number, as
    # torch.distributions.Categorical does, so that 0 * log 0 is 0 and not nan.
    return torch.log_softmax(logits, dim=-1).clamp(min=torch.finfo(logits.dtype).min)


def log_prob(policy_type: str, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-probability (log-density for gaussian) of ``actions``.

    Args:
      policy_type: ``'categorical'`` or ``'gaussian'``.
      params: float ``[..., P]`` packed parameters (see module docstring).
      actions: categorical: int64 ``[...]``; gaussian: float ``[..., A]``.

    Returns:
      float ``[...]``, differentiable with respect to ``params``; gaussian log-densities
      are summed over the ``A`` action dimensions.
    """
    check_policy_type(policy_type)
    if policy_type == "categorical":
        if actions.shape != params.shape[:-1]:
            raise ValueError(
                f"categorical actions have shape {tuple(actions.shape)} but logits have shape "
                f"{tuple(params.shape)}; expected actions [...] and logits [..., A]"
            )
        if actions.dtype.is_floating_point or actions.dtype == torch.bool:
            raise ValueError(
                f"categorical actions must be integer indices, got dtype {actions.dtype}"
            )
        log_probs = torch.log_softmax(params, dim=-1)
        return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    mean, log_std = split_gaussian(params)
    if actions.shape != mean.shape:
        raise ValueError(
            f"gaussian actions have shape {tuple(actions.shape)} but params have shape "
            f"{tuple(params.shape)}; expected actions [..., A] and params [..., 2A]"
        )
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(dim=-1)


def entropy(policy_type: str, params: torch.Tensor) -> torch.Tensor:
    """Entropy (differential entropy for gaussian) of the distribution.

    Args:
      policy_type: ``'categorical'`` or ``'gaussian'``.
      params: float ``[..., P]`` packed parameters.

    Returns:
      float ``[...]``, differentiable with respect to ``params``.
    """
    check_policy_type(policy_type)
    if policy_type == "categorical":
        log_probs = _categorical_log_probs(params)
        return -(log_probs.exp() * log_probs).sum(dim=-1)
    _, log_std = split_gaussian(params)
    return (log_std + 0.5 + _HALF_LOG_2PI).sum(dim=-1)


def sample(
    policy_type: str, params: torch.Tensor, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Draw one action per leading position (no gradient).

    Args:
      policy_type: ``'categorical'`` or ``'gaussian'``.
      params: float ``[..., P]`` packed parameters.
      generator: optional ``torch.Generator`` (on ``params``' device) for reproducibility.

    Returns:
      categorical: int64 ``[...]``; gaussian: float ``[..., A]`` (dtype of ``params``).
    """
    check_policy_type(policy_type)
    with torch.no_grad():
        if policy_type == "categorical":
            probs = torch.softmax(params, dim=-1)
            flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            return flat.reshape(params.shape[:-1])
        mean, log_std = split_gaussian(params)
        noise = torch.randn(
            mean.shape, generator=generator, dtype=mean.dtype, device=mean.device
        )
        return mean + torch.exp(log_std) * noise


def mode(policy_type: str, params: torch.Tensor) -> torch.Tensor:
    """The most likely action (greedy evaluation): argmax of the logits, or the mean.

    Args:
      policy_type: ``'categorical'`` or ``'gaussian'``.
      params: float ``[..., P]`` packed parameters.

    Returns:
      categorical: int64 ``[...]``; gaussian: float ``[..., A]``. No gradient.
    """
    check_policy_type(policy_type)
    with torch.no_grad():
        if policy_type == "categorical":
            return params.argmax(dim=-1)
        mean, _ = split_gaussian(params)
        return mean.clone()
