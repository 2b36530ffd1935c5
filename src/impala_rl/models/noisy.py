"""Factorised Gaussian noisy linear layer (Fortunato et al., 2018, "Noisy Networks for
Exploration").

``NoisyLinear`` computes ``y = x W^T + b`` with

    W = mu_W + sigma_W * eps_W,   eps_W = f(eps_out) f(eps_in)^T   (outer product, rank 1)
    b = mu_b + sigma_b * eps_b,   eps_b = f(eps_out)
    f(x) = sign(x) sqrt(|x|),     eps_in ~ N(0, I_in), eps_out ~ N(0, I_out)

initialised (paper, section 3.2, factorised case, ``p = in_features``) with every ``mu``
uniform in ``[-1/sqrt(p), 1/sqrt(p)]`` and every ``sigma`` equal to ``sigma0 / sqrt(p)``.

Noise schedule:

* training mode (``module.train()``): EVERY forward call draws fresh noise, shared by all
  rows of that call's input. So each acting step and each learner update (and each of the
  online and target networks' passes) sees new noise;
* eval mode (``module.eval()``): the mean weights only, ``x mu_W^T + mu_b`` (greedy evaluation).

The last noise drawn is kept in the buffers ``weight_epsilon`` (``[out, in]``) and
``bias_epsilon`` (``[out]``, which is also ``f(eps_out)``) for inspection; they are not
part of the ``state_dict`` (``persistent=False``), so checkpoints and weight publishing
carry only ``mu`` and ``sigma``. Each draw replaces the buffers with new tensors rather
than writing into them, so a graph built by an earlier forward stays valid for backward.

Noise comes from the global RNG unless :meth:`NoisyLinear.set_generator` gives the layer a
``torch.Generator`` (for deterministic tests, or independent per-actor streams). ``eps_in``
is drawn before ``eps_out``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NoisyLinear", "has_noisy"]


def _scale_noise(x: torch.Tensor) -> torch.Tensor:
    """``f(x) = sign(x) sqrt(|x|)``."""
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """Linear layer with factorised Gaussian parameter noise; input ``[..., in_features]``.

    Args:
      in_features: size of the last input dimension.
      out_features: size of the last output dimension.
      sigma0: initial noise scale; every ``sigma`` starts at ``sigma0 / sqrt(in_features)``.
    """

    weight_epsilon: torch.Tensor
    bias_epsilon: torch.Tensor

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"in_features and out_features must be positive, got {in_features}, {out_features}"
            )
        if sigma0 < 0:
            raise ValueError(f"sigma0 must be non-negative, got {sigma0}")
        self.in_features = in_features
        self.out_features = out_features
        self.sigma0 = sigma0
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.register_buffer(
            "weight_epsilon", torch.zeros(out_features, in_features), persistent=False
        )
        self.register_buffer("bias_epsilon", torch.zeros(out_features), persistent=False)
        self._generator: Optional[torch.Generator] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fortunato et al.'s factorised initialisation (global RNG, like ``nn.Linear``)."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.bias_mu.uniform_(-bound, bound)
            self.weight_sigma.fill_(self.sigma0 * bound)
            self.bias_sigma.fill_(self.sigma0 * bound)

    def set_generator(self, generator: Optional[torch.Generator]) -> None:
        """Draw noise from ``generator`` from now on (None: the global RNG).

        The noise is drawn on the generator's device and moved to the parameters' device,
        so a CPU generator works for a layer on any device.
        """
        self._generator = generator

    @torch.no_grad()
    def sample_noise(self) -> None:
        """Draw new ``eps_in``, ``eps_out`` and store ``weight_epsilon``, ``bias_epsilon``."""
        device, dtype = self.weight_mu.device, self.weight_mu.dtype
        gen = self._generator
        draw_device = gen.device if gen is not None else device
        eps_in = torch.randn(self.in_features, generator=gen, device=draw_device, dtype=dtype)
        eps_out = torch.randn(self.out_features, generator=gen, device=draw_device, dtype=dtype)
        eps_in = _scale_noise(eps_in).to(device)
        eps_out = _scale_noise(eps_out).to(device)
        # New tensors, not in-place writes: an earlier forward's graph keeps its own noise.
        self.weight_epsilon = torch.outer(eps_out, eps_in)
        self.bias_epsilon = eps_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has shape {tuple(x.shape)}; expected [..., in_features] with "
                f"in_features = {self.in_features}"
            )
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        self.sample_noise()
        weight = self.weight_mu + self.weight_sigma * self.weight_epsilon
        bias = self.bias_mu + self.bias_sigma * self.bias_epsilon
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"sigma0={self.sigma0}"
        )


def has_noisy(module: nn.Module) -> bool:
    """Whether ``module`` is or contains a :class:`NoisyLinear`."""
    return any(isinstance(m, NoisyLinear) for m in module.modules())
