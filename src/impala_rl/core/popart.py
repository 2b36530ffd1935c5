"""PopArt: adaptive per-task normalisation of value targets that preserves the outputs.

(van Hasselt et al., 2016; multi-task IMPALA: Hessel et al., 2018.) The value head emits a
normalised value ``n(x) = W h(x) + b`` per task (``W`` ``[K, H]``, ``b`` ``[K]`` for ``K``
tasks); the unnormalised value of task ``k`` is ``sigma_k * n_k(x) + mu_k``.

* ART (adaptively rescale targets): ``mu`` and ``nu`` track exponential moving
  averages, with step ``beta``, of the first and second moments of each task's value
  targets; ``sigma = sqrt(nu - mu^2)``, kept within ``[sigma_min, sigma_max]``.
* POP (preserve outputs precisely): after the statistics move from ``(mu, sigma)`` to
  ``(mu', sigma')``, ``W' = W sigma / sigma'`` and ``b' = (sigma b + mu - mu') / sigma'``,
  so ``sigma' (W' h + b') + mu' == sigma (W h + b) + mu`` for every input and task.

Typical learner step: compute the loss with ``value_normalizer=popart.statistics(task_ids)``
(:func:`impala_rl.core.losses.impala_loss`), step the optimiser, then
``old_mu, old_sigma = popart.update(metrics['vs'], task_ids)`` and
``popart.preserve_outputs_(value_head, old_mu, old_sigma)``.
"""

from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["PopArt", "rescale_linear_"]


def rescale_linear_(
    weight: torch.Tensor,
    bias: torch.Tensor,
    old_mu: torch.Tensor,
    old_sigma: torch.Tensor,
    new_mu: torch.Tensor,
    new_sigma: torch.Tensor,
) -> None:
    """Rescale a per-task linear value head in place so its unnormalised outputs are unchanged.

    ``weight <- weight * old_sigma / new_sigma`` (row-wise) and
    ``bias <- (old_sigma * bias + old_mu - new_mu) / new_sigma``, under ``torch.no_grad``.

    Args:
      weight: float ``[K, H]``, one row per task.
      bias: float ``[K]``.
      old_mu, old_sigma, new_mu, new_sigma: float ``[K]``, statistics before and after.
    """
    num_tasks = weight.shape[0]
    for name, x in (("bias", bias), ("old_mu", old_mu), ("old_sigma", old_sigma),
                    ("new_mu", new_mu), ("new_sigma", new_sigma)):
        if x.shape != (num_tasks,):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but weight has shape {tuple(weight.shape)}; "
                f"expected weight [K, H] and {name} [K] with K = {num_tasks}"
            )
    with torch.no_grad():
        old_mu, old_sigma, new_mu, new_sigma = (
            x.to(device=weight.device, dtype=weight.dtype)
            for x in (old_mu, old_sigma, new_mu, new_sigma)
        )
        weight.mul_((old_sigma / new_sigma).unsqueeze(-1))
        bias.mul_(old_sigma).add_(old_mu - new_mu).div_(new_sigma)


class PopArt(torch.nn.Module):
    """Per-task value statistics ``mu``, ``nu`` (buffers ``[num_tasks]``, saved in state_dict).

    Args:
      num_tasks: number of tasks ``K`` (1 for single-task training).
      beta: EMA step size for the moments (the paper uses 3e-4).
      sigma_min, sigma_max: bounds on ``sigma`` (numerical safety).
    """

    mu: torch.Tensor
    nu: torch.Tensor

    def __init__(
        self,
        num_tasks: int,
        beta: float = 3e-4,
        sigma_min: float = 1e-4,
        sigma_max: float = 1e6,
    ) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if not 0.0 < sigma_min <= sigma_max:
            raise ValueError(
                f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        self.num_tasks = num_tasks
        self.beta = beta
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.register_buffer("mu", torch.zeros(num_tasks))
        self.register_buffer("nu", torch.ones(num_tasks))

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, beta={self.beta}, "
            f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
        )

    @property
    def sigma(self) -> torch.Tensor:
        """float ``[num_tasks]``: ``sqrt(max(nu - mu^2, sigma_min^2))`` clamped to the bounds."""
        variance = torch.clamp(self.nu - self.mu.square(), min=self.sigma_min**2)
        return torch.sqrt(variance).clamp(self.sigma_min, self.sigma_max)

    def statistics(self, task_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(mu[task_ids], sigma[task_ids])``, e.g. the ``value_normalizer`` for a batch.

        Args:
          task_ids: int64 ``[...]`` (e.g. ``[B]``), values in ``[0, num_tasks)``.

        Returns:
          two float tensors shaped like ``task_ids``, without gradient.
        """
        return self.mu[task_ids].detach(), self.sigma[task_ids].detach()

    def normalize(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """``(x - mu[task_ids]) / sigma[task_ids]``.

        Args:
          x: float ``[..., B]`` (e.g. ``[T, B]`` or ``[B]``).
          task_ids: int64 ``[B]`` (anything that broadcasts against ``x`` once indexed).
        """
        mu, sigma = self.statistics(task_ids)
        return (x - mu) / sigma

    def denormalize(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """``sigma[task_ids] * x + mu[task_ids]``; inverse of :meth:`normalize`.

        Args:
          x: float ``[..., B]``.
          task_ids: int64 ``[B]`` (anything that broadcasts against ``x`` once indexed).
        """
        mu, sigma = self.statistics(task_ids)
        return sigma * x + mu

    def update(
        self, targets: torch.Tensor, task_ids: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One EMA step of each present task's moments towards its batch moments.

        For every task ``k`` with at least one target in the batch::

            mu_k <- (1 - beta) mu_k + beta * mean(targets of task k)
            nu_k <- (1 - beta) nu_k + beta * mean(targets of task k ** 2)

        Tasks absent from the batch are left unchanged.

        Args:
          targets: float ``[..., B]`` (e.g. V-trace ``vs`` ``[T, B]``), unnormalised.
          task_ids: int64 ``[B]``, or any shape that broadcasts to ``targets``.

        Returns:
          ``(old_mu, old_sigma)``: float ``[num_tasks]`` copies of the statistics before the
          update, for :meth:`preserve_outputs_`.
        """
        with torch.no_grad():
            old_mu, old_sigma = self.mu.clone(), self.sigma.clone()
            try:
                ids = torch.broadcast_to(task_ids, targets.shape)
            except RuntimeError:
                raise ValueError(
                    f"task_ids has shape {tuple(task_ids.shape)} which does not broadcast to "
                    f"targets of shape {tuple(targets.shape)}; expected targets [..., B] and "
                    "task_ids [B]"
                ) from None
            ids = ids.reshape(-1).long()
            values = targets.detach().reshape(-1).to(self.mu.dtype)
            counts = torch.zeros_like(self.mu).index_add_(0, ids, torch.ones_like(values))
            sums = torch.zeros_like(self.mu).index_add_(0, ids, values)
            square_sums = torch.zeros_like(self.mu).index_add_(0, ids, values.square())
            present = counts > 0
            safe_counts = counts.clamp(min=1)
            new_mu = (1 - self.beta) * self.mu + self.beta * sums / safe_counts
            new_nu = (1 - self.beta) * self.nu + self.beta * square_sums / safe_counts
            self.mu.copy_(torch.where(present, new_mu, self.mu))
            self.nu.copy_(torch.where(present, new_nu, self.nu))
        return old_mu, old_sigma

    def preserve_outputs_(
        self, linear: torch.nn.Linear, old_mu: torch.Tensor, old_sigma: torch.Tensor
    ) -> None:
        """Rescale the value head ``linear`` (``num_tasks`` outputs, with bias) in place so that
        ``sigma * linear(h) + mu`` is the same under the current statistics as it was under
        ``(old_mu, old_sigma)``. See :func:`rescale_linear_`.

        Args:
          linear: ``torch.nn.Linear`` with ``out_features == num_tasks`` and a bias.
          old_mu, old_sigma: float ``[num_tasks]``, as returned by :meth:`update`.
        """
        if linear.out_features != self.num_tasks or linear.bias is None:
            raise ValueError(
                f"linear has weight shape {tuple(linear.weight.shape)} and "
                f"{'no bias' if linear.bias is None else 'a bias'}; expected "
                f"out_features == num_tasks == {self.num_tasks} and a bias"
            )
        rescale_linear_(linear.weight, linear.bias, old_mu, old_sigma, self.mu, self.sigma)
