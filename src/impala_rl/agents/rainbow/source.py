"""Rainbow's data source: the learner trains from a prioritised replay of n-step transitions
that the actors' unrolls fill (:class:`.replay.StreamReplay`).

Each :meth:`PrioritizedSource.next_batch`:

1. takes fresh unrolls from the backend until the replay holds ``warmup`` transitions, and
   from then on while one more update would exceed ``replay_ratio`` updates per fresh agent
   step taken since the warm-up (the learner never runs ahead of the data; the backend's
   slots hold the actors back when the learner is slower);
2. stores them, stitched per environment stream, and gives every transition that became
   complete its initial priority from what the actor recorded with its own copy of the
   network (:func:`initial_priorities`);
3. samples ``batch_size`` transitions by priority and lays them out as a two-row batch:
   ``obs[0]`` = x_t, ``obs[1]`` = x_{t+n}, ``action`` [B], the window's ``window_rewards``,
   ``window_terminals`` and ``window_bootstraps`` [B, n], the importance ``weight`` [B],
   ``replay_index`` [B], ``version`` [B] (the policy version that acted: for the lag) and
   ``fresh_steps`` (the agent steps taken from the backend for this batch).

:meth:`~PrioritizedSource.feedback` writes the loss's new priorities back by index.
:meth:`~PrioritizedSource.state_dict` (the replay and the counters above) is what the
trainer writes beside each checkpoint, so ``--resume`` continues with the same replay
(``save_replay=false``: nothing is written and a resumed run refills it, its warm-up again).
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from impala_rl.agents.rainbow.replay import StreamReplay
from impala_rl.core import qlearning
from impala_rl.envs.factory import AtariOptions
from impala_rl.interrupts import held_interrupts

log = logging.getLogger("impala_rl")


def frame_stack(cfg, env_spec) -> int:
    """Frames stacked in one observation: the ALE pipeline's (4), else 1."""
    return AtariOptions().frame_stack if cfg.is_atari and env_spec.is_image else 1


def replay_layout(agent) -> dict:
    """What :class:`StreamReplay` stores per row for ``agent``: its keyword arguments but the sizes."""
    records = dict(agent.record_fields())
    records["version"] = ((), torch.int64)  # the policy version that acted (the learner's lag metric)
    return {"obs_shape": tuple(agent.env_spec.obs_shape), "obs_dtype": agent.env_spec.obs_dtype,
            "frame_stack": frame_stack(agent.cfg, agent.env_spec), "record_fields": records}


def replay_nbytes(agent) -> int:
    """The replay's memory when full: capacity x bytes per row (the side store of episode starts aside)."""
    return agent.opts.replay_capacity * StreamReplay.bytes_per_row(**replay_layout(agent))


def make_replay(agent) -> StreamReplay:
    cfg, o = agent.cfg, agent.opts
    return StreamReplay(o.replay_capacity, cfg.num_actors * cfg.envs_per_actor, n_step=o.horizon,
                        alpha=o.alpha if o.prioritized else 0.0, seed=cfg.seed, **replay_layout(agent))


def window_fields(window: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The replay's n-step window (``rewards``, ``terminals``, ``bootstraps`` [B, n]) under the batch's names."""
    out = {k: v for k, v in window.items() if k not in ("rewards", "terminals", "bootstraps")}
    out.update(window_rewards=window["rewards"], window_terminals=window["terminals"],
               window_bootstraps=window["bootstraps"])
    return out


def initial_priorities(agent, window: dict[str, torch.Tensor]) -> torch.Tensor:
    """The priorities of new transitions from the actors' records: the loss the learner would
    compute with the actor's network as both online and target network (Ape-X)."""
    returns, discounts = agent.n_step_targets(window)
    taken, greedy_next = window["record_t:q_taken"], window["record_next:q_greedy"]
    if agent.opts.distributional:
        target = qlearning.categorical_projection(greedy_next, returns, discounts, agent.support)
        return -(target * taken.clamp_min(1e-8).log()).sum(-1)
    return (returns + discounts * greedy_next - taken).abs()


class PrioritizedSource:
    """A prioritised replay of the actors' transitions as the learner's data source (module docstring)."""

    def __init__(self, agent, backend):
        self.agent = agent
        self.backend = backend
        self.cfg = agent.cfg
        self.opts = agent.opts
        self.replay = make_replay(agent)
        self.steps_in = 0  # fresh agent steps stored
        self.updates = 0  # batches handed out
        self.warm_steps: int | None = None  # steps stored when the warm-up was complete
        self._intact = True  # no change to the replay was cut short (see _changing)
        o = self.opts
        log.info("replay: %d transitions x %d bytes = %.2f GB at most, %d-step, %s sampling, %.3g updates per agent step "
                 "(%.3g sampled transitions per new one), warm-up %d; %s",
                 o.replay_capacity, StreamReplay.bytes_per_row(**replay_layout(agent)), replay_nbytes(agent) / 1e9, o.horizon,
                 f"prioritised (alpha {o.alpha})" if o.prioritized else "uniform", o.replay_ratio,
                 o.replay_ratio * self.cfg.batch_size, o.warmup,
                 "saved beside each checkpoint (--resume restores it)" if o.save_replay else
                 "not saved (save_replay=false: a resumed run refills it)")

    def _needs_data(self) -> bool:
        """Until the warm-up is stored, and then while one more update would exceed the replay
        ratio of the steps taken since (Dopamine's: the warm-up's steps earn no updates)."""
        if self.warm_steps is None:
            if len(self.replay) < max(self.opts.warmup, self.cfg.batch_size):
                return True
            self.warm_steps = self.steps_in
        return self.updates + 1 > (self.steps_in - self.warm_steps) * self.opts.replay_ratio

    def _ingest(self, batch: dict[str, torch.Tensor]) -> int:
        """Store a batch of unrolls; the transitions they completed get their initial priorities
        (the actors' records) in one pass. Returns the agent steps stored."""
        T = batch["obs"].shape[0] - 1
        version = batch["version"]
        names = ("obs", "first", "action", "reward", "terminal", "bootstrap", *self.agent.record_fields())
        done = []
        for j in range(version.shape[0]):
            rows = {name: batch[name][:, j] for name in names}
            rows["version"] = version[j].expand(T + 1)
            done.append(self.replay.add_unroll(int(batch["stream"][j]), rows))
        if self.opts.prioritized:  # uniform: add_unroll's priority is already every transition's
            index = np.concatenate(done)
            index = index[self.replay._valid[index]]  # none overwritten by a later unroll of this batch
            if len(index):
                with torch.no_grad():
                    priority = initial_priorities(self.agent, window_fields(self.replay.window(index)))
                self.replay.set_priorities(index, priority.numpy())
        return version.shape[0] * T

    def next_batch(self):
        fresh, episodes = 0, []
        while self._needs_data():
            # While warming up, one unroll of every environment at a time; afterwards one actor's worth
            # (the next updates then use it: the ratio holds over the run, not within each unroll).
            count = self.cfg.num_actors * self.cfg.envs_per_actor if self.warm_steps is None else self.cfg.envs_per_actor
            batch, new_episodes = self.backend.get_batch(count)
            episodes.extend(new_episodes)
            with self._changing():
                steps = self._ingest(batch)
                self.steps_in += steps
            fresh += steps
        sample = self.replay.sample(self.cfg.batch_size, self.agent.beta())
        self.updates += 1
        obs = torch.stack([sample["obs"], sample["next_obs"]])
        B = obs.shape[1]
        zeros = torch.zeros((2, B), dtype=torch.float32)
        out = {"obs": obs, "first": torch.zeros((2, B), dtype=torch.bool),
               "last_action": torch.zeros((2, B), dtype=sample["action"].dtype), "reward": zeros,
               "action": sample["action"], **{k: v for k, v in window_fields(sample).items() if k.startswith("window_")},
               "weight": sample["weight"].float(), "replay_index": sample["index"],
               "version": sample["record_t:version"], "fresh_steps": torch.tensor(fresh)}
        return out, episodes

    _COUNTERS = ("steps_in", "updates", "warm_steps")

    @contextlib.contextmanager
    def _changing(self):
        """Around every change to the replay: Ctrl-C and SIGTERM wait until it is complete (so a
        stop still saves the replay), and one that an exception cut short leaves the replay
        unsaveable, so a checkpoint never carries a half-stored unroll."""
        with held_interrupts():
            self._intact = False
            yield
            self._intact = True

    def state_dict(self) -> dict[str, np.ndarray] | None:
        """The replay's arrays and this source's counters (None with ``save_replay=false``, or when
        an exception came in the middle of a change to the replay)."""
        if not self.opts.save_replay:
            return None
        if not self._intact:
            log.warning("the replay was cut short while storing data: it is not saved (a resume refills it)")
            return None
        counters = {f"source:{name}": np.asarray(-1 if getattr(self, name) is None else getattr(self, name))
                    for name in self._COUNTERS}
        return {**self.replay.state_dict(), **counters}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state_dict`'s output (ValueError, nothing changed, if it does not fit)."""
        state = dict(state)
        counters = {name: state.pop(f"source:{name}", None) for name in self._COUNTERS}
        if any(v is None for v in counters.values()):
            raise ValueError(f"the saved state lacks the source's counters ({', '.join(self._COUNTERS)})")
        self.replay.load_state_dict(state)
        self.steps_in, self.updates = int(counters["steps_in"]), int(counters["updates"])
        self.warm_steps = None if int(counters["warm_steps"]) < 0 else int(counters["warm_steps"])
        log.info("resume: the replay restored: %d transitions, %d agent steps stored, %d updates", len(self.replay),
                 self.steps_in, self.updates)

    def feedback(self, batch, per_unroll) -> None:
        if not self.opts.prioritized:
            return
        priority = per_unroll["priority"].cpu().double()
        ok = torch.isfinite(priority)  # a skipped non-finite update keeps the old priorities
        with self._changing():
            self.replay.set_priorities(batch["replay_index"].cpu()[ok].numpy(), priority[ok].numpy())
