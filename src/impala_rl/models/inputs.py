"""What the network reads at each row: shared by actors, the learner, inference and eval."""

from __future__ import annotations

import torch


def net_inputs(obs: torch.Tensor, first: torch.Tensor, last_action: torch.Tensor,
               reward: torch.Tensor, reward_clip: float) -> dict:
    """The network's inputs for rows of an unroll ([T, B, ...] each).

    Shared by actor and learner so both feed the network exactly the same thing: the
    last reward is clipped like the learner's rewards and zeroed at episode starts.
    """
    last_reward = reward.clamp(-reward_clip, reward_clip) if reward_clip > 0 else reward
    last_reward = torch.where(first, torch.zeros_like(last_reward), last_reward)
    return {"obs": obs, "first": first, "last_action": last_action, "last_reward": last_reward}
