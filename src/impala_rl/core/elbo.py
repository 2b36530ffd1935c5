"""The variational lower bound (ELBO) of MERLIN's memory-based predictor (Wayne et al. 2018).

Pure functions of tensors. Conventions:

* Gaussians are diagonal and given by ``(mu, logvar)`` with ``logvar = log sigma^2``, both
  ``[..., D]``; every per-sample quantity sums over that last (feature) dimension and
  keeps the leading ones (``[T, B]``, ``[B]``, ...).
* Reconstruction terms are negative log-likelihoods per sample (lower is better), with the
  constants that do not depend on the parameters dropped (documented per function).
* :func:`elbo_loss` averages each per-sample term over all its leading elements and
  weights it: the loss weights (the paper's ``alpha`` coefficients and the KL weight
  ``beta``) are the caller's.

The MBP loss at step ``t`` is ``sum_name weight_name * NLL_name + kl_weight *
KL(q(z_t | ...) || p(z_t | ...))``: the negative ELBO when all weights are 1.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import torch
import torch.nn.functional as F

__all__ = [
    "bernoulli_nll",
    "categorical_nll",
    "diag_gaussian_kl",
    "elbo_loss",
    "gaussian_nll",
    "reparameterize",
]


def _shape(x: torch.Tensor) -> tuple:
    return tuple(x.shape)


def _check_same_shape(ref_name: str, ref: torch.Tensor, **tensors: torch.Tensor) -> None:
    for name, x in tensors.items():
        if x.shape != ref.shape:
            raise ValueError(
                f"{name} has shape {_shape(x)} but {ref_name} has shape {_shape(ref)}; "
                f"expected the same shape"
            )


def _check_features(name: str, x: torch.Tensor) -> None:
    if x.dim() < 1:
        raise ValueError(f"{name} has shape {_shape(x)}; expected [..., D] (a feature dimension)")


def diag_gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """``KL(q || p)`` for diagonal Gaussians, summed over the last dimension: ``[..., D] -> [...]``.

    Per dimension: ``0.5 * (logvar_p - logvar_q + (var_q + (mu_q - mu_p)^2) / var_p - 1)``.
    All four tensors have the same shape (pass zeros for a standard normal prior).
    Differentiable with respect to both distributions.
    """
    _check_features("mu_q", mu_q)
    _check_same_shape("mu_q", mu_q, logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p)
    ratio = torch.exp(logvar_q - logvar_p)
    mahalanobis = (mu_q - mu_p).square() * torch.exp(-logvar_p)
    return 0.5 * (ratio + mahalanobis - 1.0 - (logvar_q - logvar_p)).sum(dim=-1)


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """A sample ``mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``, differentiable in ``mu``, ``logvar``.

    ``generator`` (on the device of ``mu``) makes the noise reproducible.
    """
    _check_same_shape("mu", mu, logvar=logvar)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-sum_d [x_d log sigmoid(l_d) + (1 - x_d) log(1 - sigmoid(l_d))]``: ``[..., D] -> [...]``.

    For binary (or in-[0, 1]) features such as one-hot image channels; ``target`` has the
    shape of ``logits``. Computed stably from the logits; no constant dropped.
    """
    _check_features("logits", logits)
    _check_same_shape("logits", logits, target=target)
    return F.binary_cross_entropy_with_logits(
        logits, target.to(logits.dtype), reduction="none"
    ).sum(dim=-1)


def categorical_nll(logits: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    """``-log softmax(logits)[target]``; logits ``[..., A]``, int ``target_index [...]`` -> ``[...]``.

    For a discrete quantity such as the previous action; no constant dropped.
    """
    _check_features("logits", logits)
    if _shape(target_index) != _shape(logits)[:-1]:
        raise ValueError(
            f"target_index has shape {_shape(target_index)} but logits has shape "
            f"{_shape(logits)}; expected target_index [...] = {_shape(logits)[:-1]}"
        )
    if target_index.dtype.is_floating_point or target_index.dtype == torch.bool:
        raise ValueError(f"target_index has dtype {target_index.dtype}; expected an integer dtype")
    log_probs = F.log_softmax(logits, dim=-1)
    return -log_probs.gather(-1, target_index.long().unsqueeze(-1)).squeeze(-1)


def gaussian_nll(
    mean: torch.Tensor,
    target: torch.Tensor,
    logvar: Optional[torch.Tensor] = None,
    include_constant: bool = False,
) -> torch.Tensor:
    """Diagonal-Gaussian negative log-likelihood summed over the last dimension, ``[..., D] -> [...]``.

    ``logvar`` None (unit variance): ``0.5 * sum_d (x_d - mu_d)^2``. Otherwise
    ``0.5 * sum_d (logvar_d + (x_d - mu_d)^2 exp(-logvar_d))``. The constant
    ``0.5 * D * log(2 pi)`` is dropped unless ``include_constant`` (then this is the exact
    ``-log N(x; mu, sigma^2)``).
    """
    _check_features("mean", mean)
    _check_same_shape("mean", mean, target=target)
    squared = (target - mean).square()
    if logvar is None:
        per_dim = 0.5 * squared
    else:
        _check_same_shape("mean", mean, logvar=logvar)
        per_dim = 0.5 * (logvar + squared * torch.exp(-logvar))
    nll = per_dim.sum(dim=-1)
    if include_constant:
        nll = nll + 0.5 * mean.shape[-1] * math.log(2.0 * math.pi)
    return nll


def elbo_loss(
    recon_terms: Mapping[str, torch.Tensor],
    kl: torch.Tensor,
    weights: Mapping[str, float],
    kl_weight: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted negative ELBO, ``sum_name weights[name] * mean(recon) + kl_weight * mean(kl)``.

    Args:
      recon_terms: per-sample negative log-likelihoods by name (e.g. ``"image"``,
        ``"reward"``, ``"prev_action"``), each with the shape of ``kl`` (``[T, B]``, ``[B]``).
      kl: float, the per-sample KL between posterior and prior.
      weights: one weight per name in ``recon_terms`` (exactly those names).
      kl_weight: the KL weight.

    Returns:
      ``(loss, metrics)``: ``loss`` a float 0-dim tensor with gradient; ``metrics`` detached
      0-dim tensors: ``"mbp_loss"`` (the loss), ``"kl"`` (mean, unweighted),
      ``"recon_<name>"`` (each mean, unweighted) and ``"neg_elbo"`` (the unweighted sum of
      those means).
    """
    if set(recon_terms) != set(weights):
        missing = sorted(set(recon_terms) - set(weights))
        extra = sorted(set(weights) - set(recon_terms))
        raise ValueError(
            f"weights must name exactly the recon_terms; missing weights for {missing}, "
            f"weights without a term: {extra}"
        )
    for name, term in recon_terms.items():
        if term.shape != kl.shape:
            raise ValueError(
                f"recon_terms[{name!r}] has shape {_shape(term)} but kl has shape "
                f"{_shape(kl)}; expected every per-sample term to have the shape of kl"
            )
    if kl.numel() == 0:
        raise ValueError(f"kl has shape {_shape(kl)}; expected at least one sample")
    kl_mean = kl.mean()
    recon_means = {name: term.mean() for name, term in recon_terms.items()}
    loss = kl_weight * kl_mean
    for name in sorted(recon_means):
        loss = loss + weights[name] * recon_means[name]
    with torch.no_grad():
        metrics = {"mbp_loss": loss.detach(), "kl": kl_mean.detach()}
        neg_elbo = kl_mean.detach().clone()
        for name in sorted(recon_means):
            metrics[f"recon_{name}"] = recon_means[name].detach()
            neg_elbo = neg_elbo + recon_means[name].detach()
        metrics["neg_elbo"] = neg_elbo
    return loss, metrics
