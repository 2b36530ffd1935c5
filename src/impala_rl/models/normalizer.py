"""Running observation normalisation kept inside the network.

``ObservationNormalizer`` holds the running mean and variance of every observation
component as buffers, so they travel to actors with the weights (one publish, one
checkpoint) and actors and learner always normalise alike. Only the learner updates
them, from the observations of each batch it trains on; the update merges the batch's
moments into the running ones exactly (Chan et al.'s parallel algorithm), so the
statistics equal those of all observations seen so far, in any batching.

forward: ``clip((x - mean) / sqrt(var + eps), -clip, clip)``.
"""

from __future__ import annotations

import torch
from torch import nn


class ObservationNormalizer(nn.Module):
    """Args: shape: one observation's shape; clip: bound on normalised values; eps: variance floor."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.shape = tuple(shape)
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the moments of ``x`` (``[..., *shape]``) into the running ones."""
        x = x.reshape(-1, *self.shape).to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean.add_(delta * n / total)
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(torch.float32)
        std = (self.var + self.eps).sqrt().to(torch.float32)
        return ((x.float() - mean) / std).clamp(-self.clip, self.clip)
