"""The actor: steps a vector of environments with a (possibly stale) copy of the policy
and writes whole unrolls into rollout slots. It knows nothing of processes or queues:
the serial, local and Ray backends all drive this same class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from impala_rl.core import distributions
from impala_rl.runtime.types import Batch, RolloutSpec


@dataclass
class EpisodeStats:
    """One finished episode: raw (unclipped) return and length in agent steps."""

    ret: float
    length: int


def net_inputs(obs: torch.Tensor, first: torch.Tensor, last_action: torch.Tensor,
               reward: torch.Tensor, reward_clip: float) -> dict:
    """The network's inputs for rows of an unroll ([T, B, ...] each).

    Shared by actor and learner so both feed the network exactly the same thing: the
    last reward is clipped like the learner's rewards and zeroed at episode starts.
    """
    last_reward = reward.clamp(-reward_clip, reward_clip) if reward_clip > 0 else reward
    last_reward = torch.where(first, torch.zeros_like(last_reward), last_reward)
    return {"obs": obs, "first": first, "last_action": last_action, "last_reward": last_reward}


class Actor:
    """Runs ``len(envs)`` environments and produces one unroll per environment per call.

    Args:
        spec: the rollout slot layout.
        model: the actor's copy of the network (``ImpalaNet``); weights are loaded by the caller.
        envs: Gymnasium environments, all of the same spaces.
        seed: seeds the environments (seed + i) and the action sampling.
        reward_clip: as in the learner (the network's last-reward input is clipped alike).
        episodic_life: treat ``info['life_lost']`` as terminal for learning.
    """

    def __init__(self, spec: RolloutSpec, model: torch.nn.Module, envs: list, seed: int,
                 reward_clip: float = 1.0, episodic_life: bool = False):
        self.spec = spec
        self.model = model
        self.envs = envs
        self.seed = seed
        self.reward_clip = reward_clip
        self.episodic_life = episodic_life
        self.num_envs = len(envs)
        self.generator = torch.Generator().manual_seed(seed)
        n = self.num_envs
        # The last row written (row T of the previous unroll = row 0 of the next).
        self.row = {name: torch.zeros((n,) + shape, dtype=dtype)
                    for name, (shape, dtype) in spec.row_fields().items()}
        self._obs_np = self.row["obs"].numpy()
        self.state_before_row: tuple = ()
        self.state_after_row: tuple = ()
        self.episode_return = np.zeros(n, dtype=np.float64)
        self.episode_length = np.zeros(n, dtype=np.int64)
        self.steps = 0
        self._started = False

    # ------------------------------------------------------------------ policy
    @torch.inference_mode()
    def _forward(self, row: Batch, state: tuple):
        inputs = net_inputs(row["obs"][None], row["first"][None], row["last_action"][None],
                            row["reward"][None], self.reward_clip)
        out, new_state = self.model(core_state=state, **inputs)
        return out, new_state

    def _act(self, state: tuple) -> tuple:
        """Fill the current row's action and policy_params; return the state after it."""
        out, new_state = self._forward(self.row, state)
        params = out.policy_params[0]
        self.row["policy_params"].copy_(params)
        self.row["action"].copy_(distributions.sample(self.spec.policy_type, params, generator=self.generator))
        return new_state

    def _env_action(self, i: int):
        a = self.row["action"][i]
        return int(a) if self.spec.policy_type == "categorical" else a.numpy()

    # ------------------------------------------------------------------ stepping
    def _start(self) -> None:
        for i, env in enumerate(self.envs):
            obs, _ = env.reset(seed=self.seed * 1000 + i)
            self._obs_np[i] = obs
        self.row["first"].fill_(True)
        for name in ("last_action", "reward", "terminal", "bootstrap"):
            self.row[name].zero_()
        self.state_before_row = self.model.initial_state(self.num_envs)
        self.state_after_row = self._act(self.state_before_row)
        self._started = True

    def _step_envs(self, state: tuple) -> list[EpisodeStats]:
        """Execute the current row's actions; make the next row's env fields."""
        row = self.row
        finished: list[EpisodeStats] = []
        truncated_final: dict[int, np.ndarray] = {}
        last_action = row["action"].clone()
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(self._env_action(i))
            self.episode_return[i] += reward
            self.episode_length[i] += 1
            done = terminated or truncated
            row["reward"][i] = float(reward)
            row["terminal"][i] = done or (self.episodic_life and bool(info.get("life_lost", False)))
            row["first"][i] = done
            row["bootstrap"][i] = 0.0
            if done:
                finished.append(EpisodeStats(float(self.episode_return[i]), int(self.episode_length[i])))
                self.episode_return[i] = 0.0
                self.episode_length[i] = 0
                if truncated and not terminated:
                    truncated_final[i] = np.asarray(obs)
                obs, _ = env.reset()
            self._obs_np[i] = obs
        row["last_action"].copy_(last_action)
        row["last_action"][row["first"]] = 0
        if truncated_final:
            self._bootstrap_values(truncated_final, last_action, state)
        self.steps += self.num_envs
        return finished

    def _bootstrap_values(self, finals: dict[int, np.ndarray], last_action: torch.Tensor, state: tuple) -> None:
        """V_mu(x_final) for truncated episodes: the value of where the episode stopped."""
        view = {name: t.clone() for name, t in self.row.items()}
        for i, obs in finals.items():
            view["obs"][i] = torch.from_numpy(obs)
        view["first"].zero_()  # x_final continues its episode: no state reset
        view["last_action"].copy_(last_action)
        out, _ = self._forward(view, state)
        values = out.values[0, :, 0]
        for i in finals:
            self.row["bootstrap"][i] = values[i]

    def unroll(self, buffers: Batch, slots: list[int], version: int) -> list[EpisodeStats]:
        """Write one unroll per environment into ``buffers`` at ``slots`` (one slot per env).

        Returns the episodes that finished during the unroll.
        """
        if len(slots) != self.num_envs:
            raise ValueError(f"need {self.num_envs} slots (one per environment), got {len(slots)}")
        if not self._started:
            self._start()
        idx = torch.as_tensor(slots, dtype=torch.long)
        T = self.spec.unroll_length
        self._write_row(buffers, idx, 0)
        buffers["version"][idx] = version
        if self.spec.core_size:
            buffers["core_h"][idx] = self.state_before_row[0]
            buffers["core_c"][idx] = self.state_before_row[1]
        state = self.state_after_row
        finished: list[EpisodeStats] = []
        for k in range(1, T + 1):
            finished += self._step_envs(state)
            self.state_before_row = state
            state = self._act(state)
            self._write_row(buffers, idx, k)
        self.state_after_row = state
        return finished

    def _write_row(self, buffers: Batch, idx: torch.Tensor, k: int) -> None:
        for name, value in self.row.items():
            buffers[name][idx, k] = value

    def close(self) -> None:
        for env in self.envs:
            env.close()
