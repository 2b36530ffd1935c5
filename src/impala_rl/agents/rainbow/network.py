"""Rainbow's network: an image or MLP torso, then a (dueling) head of Q-values, each a
distribution over ``atoms`` fixed returns (C51) or one number, in noisy or plain linear
layers.

It keeps the runtime's network contract (:class:`impala_rl.agents.base.Network`) so that
actors, central inference and evaluation step it like IMPALA's: ``policy_params`` carries
what acting needs, the logits ``[T, B, A * atoms]`` (distributional) or the Q-values
``[T, B, A]``; ``values`` is ``max_a Q`` ``[T, B, 1]`` (the actor's bootstrap on a
truncation). :func:`q_values` turns ``policy_params`` back into Q-values.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from impala_rl.models.noisy import NoisyLinear
from impala_rl.models.torsos import make_torso


class QOutput(NamedTuple):
    """``policy_params``: logits ``[T, B, A * K]`` or Q-values ``[T, B, A]``; ``values``: ``[T, B, 1]``."""

    policy_params: torch.Tensor
    values: torch.Tensor


def q_values(policy_params: torch.Tensor, num_actions: int, support: torch.Tensor | None) -> torch.Tensor:
    """``[..., A * K]`` logits (``support`` of K atoms) or ``[..., A]`` Q-values -> Q-values ``[..., A]``."""
    if support is None:
        return policy_params
    return (action_probs(policy_params, num_actions) * support.to(policy_params.device)).sum(-1)


def action_probs(policy_params: torch.Tensor, num_actions: int) -> torch.Tensor:
    """``[..., A * K]`` logits -> each action's return distribution ``[..., A, K]``."""
    return torch.softmax(policy_params.unflatten(-1, (num_actions, -1)), dim=-1)


class RainbowNet(nn.Module):
    """Torso, then Q(x, .) as ``atoms`` logits per action (``atoms`` = 1: plain Q-values).

    Args:
        obs_shape: one observation's shape (``[C, H, W]`` images, ``[D]`` vectors).
        num_actions: A.
        torso: a name of :func:`impala_rl.models.torsos.make_torso` (``minatar``, ``shallow``, ``mlp``, ...).
        support: the K atoms' returns (distributional) or None.
        dueling: value and advantage streams, ``Q = V + A - mean_a A`` (Wang et al. 2016).
        noisy: the head's layers are :class:`~impala_rl.models.noisy.NoisyLinear` (Fortunato et al. 2018).
        hidden: the head's hidden width (0: the torso's output feeds the output layers directly).
    """

    def __init__(self, obs_shape: Sequence[int], num_actions: int, torso: str, support: torch.Tensor | None,
                 dueling: bool = True, noisy: bool = True, noisy_sigma: float = 0.5, hidden: int = 0,
                 mlp_sizes: Sequence[int] = (64, 64), activation: str = "relu", channels_last: bool = False):
        super().__init__()
        self.num_actions = num_actions
        self.atoms = 1 if support is None else int(support.numel())
        self.register_buffer("support", support if support is not None else torch.zeros(0), persistent=False)
        self.distributional = support is not None
        self.dueling = dueling
        self.torso = make_torso(torso, obs_shape, mlp_sizes, channels_last, activation)
        width = self.torso.output_size

        def linear(i: int, o: int) -> nn.Module:
            return NoisyLinear(i, o, noisy_sigma) if noisy else nn.Linear(i, o)

        def stream(outputs: int) -> nn.Module:
            if not hidden:
                return linear(width, outputs)
            return nn.Sequential(linear(width, hidden), nn.ReLU(), linear(hidden, outputs))

        self.advantage = stream(num_actions * self.atoms)
        self.value = stream(self.atoms) if dueling else None
        self.policy_param_size = num_actions * self.atoms
        self.num_values = 1

    def initial_state(self, batch_size: int, device=None) -> tuple:
        return ()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, F]`` torso features -> logits or Q-values ``[N, A, K]``."""
        adv = self.advantage(features).unflatten(-1, (self.num_actions, self.atoms))
        if self.value is None:
            return adv
        return self.value(features).unsqueeze(-2) + adv - adv.mean(-2, keepdim=True)

    def forward(self, obs: torch.Tensor, last_action: torch.Tensor = None, last_reward: torch.Tensor = None,
                first: torch.Tensor = None, core_state: tuple = ()) -> tuple[QOutput, tuple]:
        """``obs [T, B, ...]`` -> (:class:`QOutput`, ``()``); the other inputs are the contract's, unused."""
        T, B = obs.shape[:2]
        out = self.head(self.torso(obs.flatten(0, 1))).unflatten(0, (T, B))  # [T, B, A, K]
        params = out.flatten(-2)
        support = self.support if self.distributional else None
        q = q_values(params, self.num_actions, support)
        return QOutput(params, q.max(-1, keepdim=True).values), ()
