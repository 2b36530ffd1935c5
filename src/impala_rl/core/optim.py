"""The paper's optimiser: TensorFlow's RMSProp, as scalable_agent used it.

``tf.train.RMSPropOptimizer`` (non-centred) differs from ``torch.optim.RMSprop`` in two
ways that matter at the paper's settings (epsilon 0.01):

* epsilon is added INSIDE the square root: ``g / sqrt(ms + eps)``, where torch divides
  by ``sqrt(ms) + eps``;
* the mean-square accumulator ``ms`` starts at 1, where torch starts it at 0.

With ``ms = 0`` the first torch steps are ``lr * g / (sqrt(0.01 g^2) + eps)``, about
``10 * lr`` per weight whatever the gradient; TensorFlow's first steps are about ``lr * g``.
The update, per parameter (momentum ``m``, decay ``rho``)::

    ms  <- rho * ms + (1 - rho) * g^2        (ms_0 = 1)
    mom <- m * mom + lr * g / sqrt(ms + eps)  (mom_0 = 0)
    w   <- w - mom
"""

from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["RMSpropTF"]


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow's semantics (see the module docstring).

    Args:
      params: parameters or parameter groups.
      lr: learning rate (may be changed per step through ``param_groups``).
      alpha: decay ``rho`` of the mean-square accumulator (TF's ``decay``).
      eps: added inside the square root.
      momentum: TF's ``momentum``.
      initial_mean_square: starting value of the accumulator (TF: 1.0).
    """

    def __init__(self, params: Iterable, lr: float = 6e-4, alpha: float = 0.99, eps: float = 0.01,
                 momentum: float = 0.0, initial_mean_square: float = 1.0):
        if lr < 0 or eps < 0 or momentum < 0 or not 0.0 <= alpha < 1.0:
            raise ValueError(f"invalid RMSpropTF settings: lr={lr}, alpha={alpha}, eps={eps}, momentum={momentum}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      initial_mean_square=initial_mean_square))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["mean_square"] = torch.full_like(p, group["initial_mean_square"])
                    state["momentum"] = torch.zeros_like(p)
                state["step"] += 1
                ms, mom = state["mean_square"], state["momentum"]
                ms.mul_(alpha).addcmul_(grad, grad, value=1.0 - alpha)
                mom.mul_(momentum).add_(grad / (ms + eps).sqrt(), alpha=lr)
                p.sub_(mom)
        return loss
