"""A second agent, defined outside the package, to show the seams carry one.

REINFORCE with a batch-mean baseline and its own small network (logits only, no value):
it records the log-probability of each action it takes (a per-row extra beside the
environment's columns) and a step counter as its "recurrent state" (a named state the
runtime stores before row 0 of each unroll), and reports its own metric. It runs with
``--agent reinforce_agent:ReinforceAgent`` when this directory is on the Python path,
on any backend, without a line of runtime code knowing of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from impala_rl.agents import Action, AgentBase, LossOutput, agent_options
from impala_rl.models import NetOutput


class PolicyNet(nn.Module):
    """Logits from a 2-layer MLP; values are zeros (REINFORCE needs none). The "state" counts steps."""

    def __init__(self, obs_dim: int, num_actions: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, 32), nn.Tanh(), nn.Linear(32, num_actions))
        self.policy_param_size = num_actions
        self.num_values = 1

    def initial_state(self, batch_size: int, device=None):
        return (torch.zeros(batch_size, device=device),)

    def forward(self, obs, last_action, last_reward, first, core_state=()):
        T, B = obs.shape[:2]
        logits = self.body(obs.float())
        (steps,) = core_state
        for t in range(T):  # the step counter restarts with each episode
            steps = torch.where(first[t], torch.zeros_like(steps), steps) + 1
        return NetOutput(logits, torch.zeros(T, B, 1)), (steps,)


class ReinforceAgent(AgentBase):
    name = "reinforce"
    HYPERPARAMETERS = ("discount",)  # its loss reads the discount from the config in force
    PRESETS = {"classic_control": {"optimizer": "adam", "batch_size": 4, "reward_clip": 0.0}}  # its own, not IMPALA's
    ENV_PRESETS = {"Acrobot-v1": {"discount": 0.995}}

    @dataclass
    class Options:
        """Its own config section (``--agent-options entropy_bonus=0.01``)."""

        entropy_bonus: float = 0.0

    def __init__(self, cfg, env_spec, actor=None):
        if env_spec.policy_type != "categorical":
            raise ValueError("this test agent handles discrete actions only")
        super().__init__(cfg, env_spec, actor)
        self.options = agent_options(cfg, self.Options)
        self.updates = 0  # its own state: checkpointed, copied by PBT's exploit

    def build_model(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            return PolicyNet(self.env_spec.obs_shape[0], self.env_spec.action_dim)

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = int(state.get("updates", 0))

    def record_fields(self):
        return {"logp": ((), torch.float32)}

    def state_fields(self):
        return {"steps": ((), torch.float32)}

    def act(self, out, generator, greedy=False, task=None, streams=None):
        logits = out.policy_params[0]
        if greedy:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
        logp = torch.log_softmax(logits, -1).gather(-1, action[:, None])[:, 0]
        return Action(action, {"logp": logp})

    def value(self, out, task=None):
        return out.values[0, :, 0]

    def loss(self, forward, batch):
        out, _ = forward(obs=batch["obs"], last_action=batch["last_action"], last_reward=batch["reward"],
                         first=batch["first"], core_state=(batch["steps"],))
        logp = torch.log_softmax(out.policy_params[:-1], -1).gather(-1, batch["action"][:-1, :, None])[..., 0]
        rewards, discounts = batch["reward"][1:], (~batch["terminal"][1:]).float() * self.cfg.discount
        returns, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
        for t in reversed(range(rewards.shape[0])):  # returns to go within the unroll
            running = rewards[t] + discounts[t] * running
            returns[t] = running
        advantage = returns - returns.mean()
        log_probs = torch.log_softmax(out.policy_params[:-1], -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        loss = -(logp * advantage).mean() - self.options.entropy_bonus * entropy
        # How far the learner's policy is from the one that acted (the recorded log-probabilities),
        # on rows 1..T-1 (row 0's action was chosen at the end of the previous unroll).
        drift = (logp.detach()[1:] - batch["logp"][1:-1]).abs().mean()
        # Per unroll: its first row's return to go (the learner gathers these into batch order).
        return LossOutput(loss, {"reinforce_loss": loss.detach(), "reinforce_logp_drift": drift,
                                 "reinforce_entropy": entropy.detach()}, {"return_to_go": returns[0].detach()})

    def after_update(self, model, output):
        self.updates += 1
        return {"reinforce_updates": float(self.updates)}


class ActWithoutStreams(ReinforceAgent):
    """The test agent with ``act`` as agents were written before ``streams`` joined it."""

    def act(self, out, generator, greedy=False, task=None):
        return super().act(out, generator, greedy=greedy, task=task)
