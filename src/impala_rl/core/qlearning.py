"""Q-learning targets and losses for the Rainbow agent, as pure functions of tensors.

Everything here is batch-first and describes one sampled transition per row ``b``:
``(x_t, a_t)`` followed by a window of ``n`` steps. Conventions:

* ``q_t`` / ``logits_t`` are the online network's outputs at ``x_t`` (``[B, A]`` values,
  ``[B, A, K]`` distributional logits over ``K`` atoms);
* ``returns[b]`` is the discounted n-step return ``sum_{j<=k} gamma^j r_{t+j}`` and
  ``discounts[b]`` the discount on the bootstrap value at ``x_{t+n}``: ``gamma^n``, or 0
  where the bootstrap chain ended inside the window (:func:`n_step_returns`). A time-limit
  truncation is, in our data contract, a terminal whose reward already includes
  ``gamma * V(final obs)``, so nothing here distinguishes it from a termination;
* ``next_*`` tensors are network outputs at ``x_{t+n}``;
* ``support`` is the fixed, evenly spaced atom grid ``z_0 < ... < z_{K-1}`` of C51
  (``v_min = z_0``, ``v_max = z_{K-1}``).

The target (bootstrap) side of every loss is detached: gradients reach only the online
outputs at ``x_t``. Losses are returned per sample (``[B]``) so that callers can apply
importance weights and use them as replay priorities.

References: Mnih et al. 2015 (DQN), van Hasselt et al. 2016 (double Q), Bellemare et al.
2017 (C51), Schaul et al. 2016 (prioritised replay), Horgan et al. 2018 (Ape-X), Hessel et
al. 2018 (Rainbow).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "ape_x_epsilons",
    "categorical_projection",
    "categorical_q_loss",
    "double_q_values",
    "greedy_actions",
    "huber",
    "importance_weights",
    "n_step_returns",
    "q_learning_td",
]


def _shape(x: torch.Tensor) -> tuple:
    return tuple(x.shape)


def _check_rank(name: str, x: torch.Tensor, rank: int, expected: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name} has shape {_shape(x)}; expected {expected}")


def _check_batch(batch: int, ref_name: str, **tensors: torch.Tensor) -> None:
    """Check that every tensor in ``tensors`` is ``[B]`` with ``B = batch``."""
    for name, x in tensors.items():
        if x.shape != (batch,):
            raise ValueError(
                f"{name} has shape {_shape(x)} but {ref_name} has batch size {batch}; "
                f"expected {name} [B] with B = {batch}"
            )


def _check_support(support: torch.Tensor) -> None:
    _check_rank("support", support, 1, "[K] with K >= 2")
    if support.shape[0] < 2:
        raise ValueError(f"support has shape {_shape(support)}; expected [K] with K >= 2")
    gaps = support[1:] - support[:-1]
    dz = (support[-1] - support[0]) / (support.shape[0] - 1)
    if not bool(dz > 0) or not torch.allclose(gaps, dz.expand_as(gaps), rtol=1e-3, atol=0.0):
        raise ValueError("support must be increasing and evenly spaced (like torch.linspace)")


def categorical_projection(
    next_probs: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    support: torch.Tensor,
) -> torch.Tensor:
    """Project the distribution ``returns + discounts * Z`` onto ``support`` (C51, Algorithm 1).

    The target distribution puts probability ``next_probs[b, j]`` on the atom
    ``Tz_j = returns[b] + discounts[b] * support[j]``. Each ``Tz_j`` is clamped to
    ``[v_min, v_max]``, placed at the fractional index ``b_j = (Tz_j - v_min) / dz`` and its
    mass split linearly between the two neighbouring support points: ``1 - frac(b_j)`` to
    ``floor(b_j)`` and ``frac(b_j)`` to ``floor(b_j) + 1``. An atom exactly on a support
    point (``b_j`` integral, including ``v_max``) puts all its mass there, so no mass is lost
    and rows that sum to 1 keep summing to 1. With discount 0 (terminal) every atom sits at
    the return: a point mass there if it is on the support, else split between neighbours.

    Args:
      next_probs: float ``[B, K]``, probabilities of the next-state distribution (rows sum to 1).
      returns: float ``[B]``, the n-step returns.
      discounts: float ``[B]``, the bootstrap discounts (0 at a terminal).
      support: float ``[K]``, evenly spaced and increasing, ``K >= 2``.

    Returns:
      float ``[B, K]``, the projected probabilities. Differentiable with respect to
      ``next_probs`` (callers wanting a fixed target detach, as :func:`categorical_q_loss` does).
    """
    _check_rank("next_probs", next_probs, 2, "[B, K]")
    _check_support(support)
    batch, num_atoms = next_probs.shape
    if num_atoms != support.shape[0]:
        raise ValueError(
            f"next_probs has shape {_shape(next_probs)} but support has shape "
            f"{_shape(support)}; expected next_probs [B, K] with K = {support.shape[0]}"
        )
    _check_batch(batch, "next_probs", returns=returns, discounts=discounts)

    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (num_atoms - 1)
    atoms = returns.unsqueeze(1) + discounts.unsqueeze(1) * support.unsqueeze(0)  # [B, K]
    position = ((atoms.clamp(v_min, v_max) - v_min) / dz).clamp(0, num_atoms - 1)
    # Lower neighbour capped at K-2, so that an atom at v_max (position K-1) goes to the
    # upper neighbour with weight 1 and an integral position below it to the lower one.
    lower = position.floor().clamp(max=num_atoms - 2)
    upper_weight = position - lower  # in [0, 1]
    lower_index = lower.long()
    projected = torch.zeros_like(next_probs)
    projected = projected.scatter_add(1, lower_index, next_probs * (1.0 - upper_weight))
    projected = projected.scatter_add(1, lower_index + 1, next_probs * upper_weight)
    return projected


def n_step_returns(
    rewards: torch.Tensor, terminals: torch.Tensor, discount: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted n-step returns and bootstrap discounts over a window of ``n`` steps.

    ``rewards[:, j]`` is the reward of step ``j`` of the window (already clipped; at a
    time-limit truncation it already includes ``discount * V(final obs)``) and
    ``terminals[:, j]`` is true where the step-``j`` transition ended the bootstrap chain.
    With ``k`` the first terminal index of a row (``n - 1`` if there is none)::

        returns   = sum_{j=0}^{k} discount^j * rewards[:, j]
        discounts = 0 if a terminal occurred in the window else discount^n

    Rewards after the first terminal belong to another episode and are ignored, whatever
    their value (even NaN).

    Args:
      rewards: float ``[B, n]``, ``n >= 1``.
      terminals: bool (or 0/1) ``[B, n]``.
      discount: gamma in [0, 1].

    Returns:
      ``(returns, discounts)``, float ``[B]`` each, in the dtype of ``rewards``.
    """
    _check_rank("rewards", rewards, 2, "[B, n] with n >= 1")
    if rewards.shape[1] == 0:
        raise ValueError(f"rewards has shape {_shape(rewards)}; expected [B, n] with n >= 1")
    if terminals.shape != rewards.shape:
        raise ValueError(
            f"terminals has shape {_shape(terminals)} but rewards has shape "
            f"{_shape(rewards)}; expected both [B, n]"
        )
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must be in [0, 1], got {discount}")
    n = rewards.shape[1]
    done = terminals.to(torch.bool)
    # ended_before[:, j]: a terminal occurred at some index < j (exclusive running "or").
    ended_through = done.cumsum(dim=1) > 0
    ended_before = torch.cat([torch.zeros_like(done[:, :1]), ended_through[:, :-1]], dim=1)
    powers = discount ** torch.arange(n, dtype=torch.float64, device=rewards.device)
    weighted = rewards * powers.to(rewards.dtype)
    returns = torch.where(ended_before, torch.zeros_like(weighted), weighted).sum(dim=1)
    bootstrap = torch.full_like(returns, discount**n)
    discounts = torch.where(ended_through[:, -1], torch.zeros_like(bootstrap), bootstrap)
    return returns, discounts


def greedy_actions(q: torch.Tensor) -> torch.Tensor:
    """``argmax_a q[..., a]`` as int64: ``[B, A] -> [B]``; any ``[..., A]``; ties: lowest index."""
    if q.dim() < 1 or q.shape[-1] == 0:
        raise ValueError(f"q has shape {_shape(q)}; expected [B, A] with A >= 1")
    return q.argmax(dim=-1)


def double_q_values(
    q_next_target: torch.Tensor, q_next_online: Optional[torch.Tensor]
) -> torch.Tensor:
    """The bootstrap value at ``x_{t+n}``.

    With ``q_next_online`` (double Q-learning, van Hasselt et al. 2016): the target
    network's value of the online network's greedy action,
    ``q_next_target[b, argmax_a q_next_online[b, a]]``. With None (DQN): ``max_a
    q_next_target[b, a]``.

    Args:
      q_next_target: float ``[B, A]``, the target network's values at ``x_{t+n}``.
      q_next_online: float ``[B, A]`` (online network at ``x_{t+n}``) or None.

    Returns:
      float ``[B]``; not detached here (:func:`q_learning_td` detaches its target).
    """
    _check_rank("q_next_target", q_next_target, 2, "[B, A]")
    if q_next_online is None:
        return q_next_target.max(dim=1).values
    if q_next_online.shape != q_next_target.shape:
        raise ValueError(
            f"q_next_online has shape {_shape(q_next_online)} but q_next_target has shape "
            f"{_shape(q_next_target)}; expected both [B, A]"
        )
    selected = greedy_actions(q_next_online).unsqueeze(1)
    return q_next_target.gather(1, selected).squeeze(1)


def q_learning_td(
    q_t: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    next_values: torch.Tensor,
) -> torch.Tensor:
    """TD errors ``returns + discounts * next_values - q_t[b, actions[b]]``, target detached.

    Args:
      q_t: float ``[B, A]``, online values at ``x_t``.
      actions: int ``[B]``, the actions ``a_t`` taken.
      returns: float ``[B]``, n-step returns.
      discounts: float ``[B]``, bootstrap discounts (0 at a terminal).
      next_values: float ``[B]``, bootstrap values (e.g. :func:`double_q_values`).

    Returns:
      float ``[B]``; the gradient flows only into ``q_t`` (through ``-Q(x_t, a_t)``).
    """
    _check_rank("q_t", q_t, 2, "[B, A]")
    _check_batch(q_t.shape[0], "q_t", actions=actions, returns=returns,
                 discounts=discounts, next_values=next_values)
    q_taken = q_t.gather(1, actions.long().unsqueeze(1)).squeeze(1)
    target = (returns + discounts * next_values).detach()
    return target - q_taken


def huber(x: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Huber loss: ``x^2 / 2`` if ``|x| <= delta``, else ``delta * (|x| - delta / 2)``."""
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}")
    magnitude = x.abs()
    quadratic = magnitude.clamp(max=delta)
    linear = magnitude - quadratic
    return 0.5 * quadratic.square() + delta * linear


def categorical_q_loss(
    logits_t: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    next_probs_target: torch.Tensor,
    next_q_select: torch.Tensor,
    support: torch.Tensor,
) -> torch.Tensor:
    """Per-sample C51 loss: cross-entropy from the projected target to the online distribution.

    The bootstrap action is ``a* = argmax_a next_q_select[b, a]``: pass the online network's
    mean values at ``x_{t+n}`` for double Q-learning (Rainbow), or the target network's for
    plain C51. The target is ``categorical_projection(next_probs_target[b, a*], returns,
    discounts, support)``, detached; the loss is ``-sum_i target_i *
    log_softmax(logits_t[b, a_t])_i``. It is also the priority Rainbow gives the sample.

    Args:
      logits_t: float ``[B, A, K]``, online logits at ``x_t``.
      actions: int ``[B]``, the actions ``a_t`` taken.
      returns: float ``[B]``, n-step returns.
      discounts: float ``[B]``, bootstrap discounts (0 at a terminal).
      next_probs_target: float ``[B, A, K]``, the target network's probabilities at ``x_{t+n}``.
      next_q_select: float ``[B, A]``, values that choose ``a*``.
      support: float ``[K]``, evenly spaced atoms.

    Returns:
      float ``[B]``; the gradient flows only into ``logits_t``.
    """
    _check_rank("logits_t", logits_t, 3, "[B, A, K]")
    batch, num_actions, num_atoms = logits_t.shape
    if next_probs_target.shape != logits_t.shape:
        raise ValueError(
            f"next_probs_target has shape {_shape(next_probs_target)} but logits_t has shape "
            f"{_shape(logits_t)}; expected both [B, A, K]"
        )
    if next_q_select.shape != (batch, num_actions):
        raise ValueError(
            f"next_q_select has shape {_shape(next_q_select)} but logits_t has shape "
            f"{_shape(logits_t)}; expected next_q_select [B, A] = {(batch, num_actions)}"
        )
    if support.shape != (num_atoms,):
        raise ValueError(
            f"support has shape {_shape(support)} but logits_t has shape {_shape(logits_t)}; "
            f"expected support [K] with K = {num_atoms}"
        )
    _check_batch(batch, "logits_t", actions=actions, returns=returns, discounts=discounts)

    with torch.no_grad():
        next_actions = greedy_actions(next_q_select)
        index = next_actions.view(batch, 1, 1).expand(batch, 1, num_atoms)
        next_probs = next_probs_target.gather(1, index).squeeze(1)  # [B, K]
        target = categorical_projection(next_probs, returns, discounts, support)
    taken = actions.long().view(batch, 1, 1).expand(batch, 1, num_atoms)
    log_probs = F.log_softmax(logits_t.gather(1, taken).squeeze(1), dim=-1)  # [B, K]
    return -(target * log_probs).sum(dim=-1)


def ape_x_epsilons(num_actors: int, base: float = 0.4, alpha: float = 7.0) -> list[float]:
    """Ape-X's per-actor exploration rates: ``eps_i = base^(1 + alpha * i / (N - 1))``.

    ``i = 0 .. N-1``; a single actor gets ``[base]``. Defaults from Horgan et al. 2018.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be at least 1, got {num_actors}")
    if num_actors == 1:
        return [float(base)]
    return [float(base ** (1.0 + alpha * i / (num_actors - 1))) for i in range(num_actors)]


def importance_weights(probabilities: torch.Tensor, size: int, beta: float) -> torch.Tensor:
    """Prioritised-replay importance weights (Schaul et al. 2016, section 3.4).

    ``w_b = (size * P(b))^-beta / max_b' (size * P(b'))^-beta``: normalised by the largest
    weight among the given samples, so ``w <= 1`` and the rarest sample gets 1.

    Args:
      probabilities: float ``[B]``, the sampling probabilities ``P(b)`` (positive).
      size: the number of transitions in the replay memory (``N`` in the paper).
      beta: the exponent in [0, 1] (0: all weights 1; 1: full correction).

    Returns:
      float ``[B]`` in ``(0, 1]``, without gradient.
    """
    _check_rank("probabilities", probabilities, 1, "[B]")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got {beta}")
    with torch.no_grad():
        if probabilities.numel() and not bool((probabilities > 0).all()):
            raise ValueError("probabilities must all be positive")
        weights = (size * probabilities).pow(-beta)
        return weights / weights.max() if weights.numel() else weights
