"""The actor: steps a vector of environments with a (possibly stale) copy of the policy
and writes whole unrolls into rollout slots. It knows nothing of processes or queues:
the serial, local and Ray backends all drive this same class.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np
import torch

from impala_rl.models.inputs import net_inputs
from impala_rl.runtime.types import Batch, RolloutSpec


@dataclass
class EpisodeStats:
    """One finished episode: raw (unclipped) return and length in agent steps."""

    ret: float
    length: int
    task: int = 0


class Actor:
    """Runs a group of ``envs.num_envs`` environments; produces one unroll per environment.

    Args:
        spec: the rollout slot layout.
        model: the actor's copy of the agent's network; weights are loaded by the caller.
        agent: the :class:`~impala_rl.agents.Agent`: turns the network's output into
            actions and the extras it records.
        envs: an :class:`~impala_rl.envs.vector.EnvGroup` (send/recv, automatic resets).
        seed: seeds the environments and the action sampling.
        reward_clip: as in the learner (the network's last-reward input is clipped alike).
        episodic_life: treat a lost life as terminal for learning.
        forward: what computes the policy (default: ``model``; a
            :class:`~impala_rl.runtime.inference.RemoteForward` under central inference).
        streams: the run's numbers of these environments (default ``0..N-1``), stored per
            unroll (``stream``) and given to :meth:`Agent.act` (an agent may act differently
            per environment: Ape-X's exploration rates).

    An unroll is ``begin``, then T times ``send`` (start the envs on the current
    actions) and ``receive`` (collect their results, act, write the row), then ``end``;
    :meth:`unroll` does exactly that, and :class:`ActorGroup` interleaves several actors
    so one computes while another's environments step.
    """

    def __init__(self, spec: RolloutSpec, model: torch.nn.Module, agent, envs, seed: int,
                 reward_clip: float = 1.0, episodic_life: bool = False, forward=None,
                 local_bootstrap: bool = False, streams=None):
        self.spec = spec
        self.model = model
        self.agent = agent
        self.forward = forward or model  # a RemoteForward under central inference
        # Values of truncated episodes' final observations: with the local copy in lock-step mode
        # (--sync-step), where an extra remote request would fall out of step with the other actors.
        self.bootstrap_forward = model if local_bootstrap else self.forward
        self.envs = envs
        self.seed = seed
        self.reward_clip = reward_clip
        self.episodic_life = episodic_life
        self.num_envs = envs.num_envs
        self.generator = torch.Generator().manual_seed(seed)
        n = self.num_envs
        # Each environment's task (several tasks: impala_rl.envs.tasks.TaskEnvGroup), stored per unroll.
        self.task = torch.as_tensor(getattr(envs, "task_ids", np.zeros(n, np.int64)), dtype=torch.int64)
        self.streams = torch.arange(n) if streams is None else torch.as_tensor(list(streams), dtype=torch.int64)
        if self.streams.shape != (n,):
            raise ValueError(f"need {n} stream numbers (one per environment), got {tuple(self.streams.shape)}")
        # An agent written before `streams` was part of Agent.act gets the call it was written for.
        takes_streams = "streams" in inspect.signature(agent.act).parameters
        self._act_kwargs = {"task": self.task, **({"streams": self.streams} if takes_streams else {})}
        # The last row written (row T of the previous unroll = row 0 of the next).
        self.row = {name: torch.zeros((n,) + shape, dtype=dtype)
                    for name, (shape, dtype) in spec.row_fields().items()}
        self._np = {name: t.numpy() for name, t in self.row.items()}
        self.state_before_row: tuple = ()
        self.state_after_row: tuple = ()
        self.episode_return = np.zeros(n, dtype=np.float64)
        self.episode_length = np.zeros(n, dtype=np.int64)
        self.steps = 0
        self._started = False
        # Per-unroll bookkeeping between begin() and end().
        self._buffers: Batch = {}
        self._idx = torch.zeros(0, dtype=torch.long)
        self._k = 0
        self._state: tuple = ()
        self._finished: list[EpisodeStats] = []
        # Seconds spent waiting for environments, in inference, and writing rows (for `impala bench`).
        self.timings = {"env_s": 0.0, "inference_s": 0.0, "write_s": 0.0}

    # ------------------------------------------------------------------ policy
    @torch.inference_mode()
    def _forward(self, row: Batch, state: tuple, forward=None):
        inputs = net_inputs(row["obs"][None], row["first"][None], row["last_action"][None],
                            row["reward"][None], self.reward_clip)
        return (forward or self.forward)(core_state=state, **inputs)

    def _act(self, state: tuple) -> tuple:
        """Fill the current row's action and the agent's records; return the state after it."""
        out, new_state = self._forward(self.row, state)
        action, record = self.agent.act(out, self.generator, **self._act_kwargs)
        self.row["action"].copy_(action)
        for name, value in record.items():
            self.row[name].copy_(value)
        return new_state

    def _start(self) -> None:
        np.copyto(self._np["obs"], self.envs.reset(seed=self.seed))
        self.row["first"].fill_(True)
        for name in ("last_action", "reward", "terminal", "bootstrap"):
            self.row[name].zero_()
        self.state_before_row = self.model.initial_state(self.num_envs)
        self.state_after_row = self._act(self.state_before_row)
        self._started = True

    # ------------------------------------------------------------------ one unroll
    def begin(self, buffers: Batch, slots: list[int], version: int) -> None:
        """Start an unroll into ``buffers`` at ``slots`` (one per env): write row 0."""
        if len(slots) != self.num_envs:
            raise ValueError(f"need {self.num_envs} slots (one per environment), got {len(slots)}")
        if not self._started:
            self._start()
        self._buffers, self._idx, self._k = buffers, torch.as_tensor(slots, dtype=torch.long), 0
        self._write_row()
        buffers["version"][self._idx] = version
        buffers["task"][self._idx] = self.task
        buffers["stream"][self._idx] = self.streams
        for name, value in zip(self.spec.state_names, self.state_before_row, strict=True):
            buffers[name][self._idx] = value
        self._state = self.state_after_row
        self._finished = []

    def send(self) -> None:
        """Start the environments on the current row's actions."""
        self.envs.send(self._np["action"])

    def receive(self) -> None:
        """Collect the environments' results, act on them and write the next row."""
        t0 = time.perf_counter()
        result = self.envs.recv()
        t1 = time.perf_counter()
        row, np_row = self.row, self._np
        done = result.terminated | result.truncated
        self.episode_return += result.reward
        self.episode_length += 1
        for i in np.flatnonzero(done):
            self._finished.append(EpisodeStats(float(self.episode_return[i]), int(self.episode_length[i]),
                                               int(self.task[i])))
        self.episode_return[done] = 0.0
        self.episode_length[done] = 0
        np.copyto(np_row["obs"], result.obs)
        np.copyto(np_row["reward"], result.reward)
        np.copyto(np_row["first"], done)
        np.copyto(np_row["terminal"], done | (result.life_lost if self.episodic_life else False))
        row["bootstrap"].zero_()
        row["last_action"].copy_(row["action"])
        row["last_action"][row["first"]] = 0
        if result.final_obs:
            self._bootstrap_values(result.final_obs)
        self.steps += self.num_envs
        self.state_before_row = self._state
        self._state = self._act(self._state)
        t2 = time.perf_counter()
        self._k += 1
        self._write_row()
        timings = self.timings
        timings["env_s"] += t1 - t0
        timings["inference_s"] += t2 - t1
        timings["write_s"] += time.perf_counter() - t2

    def end(self) -> list[EpisodeStats]:
        """Finish the unroll; return the episodes that ended during it."""
        if self._k != self.spec.unroll_length:
            raise RuntimeError(f"unroll ended after {self._k} of {self.spec.unroll_length} steps")
        self.state_after_row = self._state
        return self._finished

    def unroll(self, buffers: Batch, slots: list[int], version: int) -> list[EpisodeStats]:
        """Write one unroll per environment into ``buffers`` at ``slots``; return finished episodes."""
        self.begin(buffers, slots, version)
        for _ in range(self.spec.unroll_length):
            self.send()
            self.receive()
        return self.end()

    def _bootstrap_values(self, finals: dict[int, np.ndarray]) -> None:
        """V_mu(x_final) for truncated episodes: the value of where the episode stopped."""
        view = {name: t.clone() for name, t in self.row.items()}
        for i, obs in finals.items():
            view["obs"][i] = torch.from_numpy(np.asarray(obs))
        view["first"].zero_()  # x_final continues its episode: no state reset
        view["last_action"].copy_(self.row["action"])
        out, _ = self._forward(view, self._state, forward=self.bootstrap_forward)
        values = self.agent.value(out, task=self.task)
        for i in finals:
            self.row["bootstrap"][i] = values[i]

    def _write_row(self) -> None:
        for name, value in self.row.items():
            self._buffers[name][self._idx, self._k] = value

    def close(self) -> None:
        self.envs.close()


class ActorGroup:
    """Several actors sharing one model, stepped alternately: while one actor computes
    (inference, writing rows), the others' environments step (in native threads for the
    ALE vector env). Same interface as :class:`Actor`."""

    def __init__(self, actors: list[Actor]):
        self.actors = actors
        self.model = actors[0].model
        self.spec = actors[0].spec
        self.num_envs = sum(a.num_envs for a in actors)

    @property
    def steps(self) -> int:
        return sum(a.steps for a in self.actors)

    @property
    def timings(self) -> dict[str, float]:
        return {k: sum(a.timings[k] for a in self.actors) for k in self.actors[0].timings}

    def unroll(self, buffers: Batch, slots: list[int], version: int) -> list[EpisodeStats]:
        if len(slots) != self.num_envs:
            raise ValueError(f"need {self.num_envs} slots (one per environment), got {len(slots)}")
        start = 0
        for a in self.actors:
            a.begin(buffers, slots[start:start + a.num_envs], version)
            start += a.num_envs
        for a in self.actors:
            a.send()
        T = self.spec.unroll_length
        for k in range(1, T + 1):
            for a in self.actors:
                a.receive()
                if k < T:
                    a.send()
        return [e for a in self.actors for e in a.end()]

    def close(self) -> None:
        for a in self.actors:
            a.close()
