"""The data seam: an agent's per-unroll outputs come back in batch order across minibatches
and reach the source and the hooks; frames are counted from the data (fresh unrolls only);
sources are chosen by name."""

from __future__ import annotations

import pytest
import torch

from impala_rl.config import TrainConfig
from impala_rl.runtime.backends.serial import SerialBackend
from impala_rl.runtime.builders import build_learner, probe_env
from impala_rl.runtime.loop import run_loop
from impala_rl.runtime.replay import MixedReplay, ReplayBuffer
from impala_rl.runtime.sources import SOURCES, FreshUnrolls, make_source, source_name

AGENT = "reinforce_agent:ReinforceAgent"


def _setup(**kw):
    base = dict(env="CartPole-v1", agent=AGENT, backend="serial", num_actors=1, envs_per_actor=8, batch_size=8,
                unroll_length=10, total_frames=10**6, optimizer="adam", reward_clip=0.0, seed=3, quiet=True)
    cfg = TrainConfig(**{**base, **kw}).validate()
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    return cfg, learner, SerialBackend(cfg, env_spec, learner.model)


def _returns_to_go(batch, discount):
    """Row 0's return to go of each unroll, computed here from the batch alone."""
    rewards, keep = batch["reward"][1:], (~batch["terminal"][1:]).float() * discount
    running = torch.zeros(rewards.shape[1])
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + keep[t] * running
    return running


@pytest.mark.parametrize("epochs,minibatches", [(1, 1), (2, 4)])
def test_per_unroll_outputs_come_back_in_batch_order(epochs, minibatches):
    cfg, learner, backend = _setup(learner_epochs=epochs, learner_minibatches=minibatches)
    try:
        batch, _ = backend.get_batch()
    finally:
        backend.close()
    batch["reward"] = torch.arange(batch["reward"].numel(), dtype=torch.float32).view_as(batch["reward"])  # distinct
    result = learner.update(batch)
    got = result.per_unroll["return_to_go"]
    assert got.shape == (8,)
    torch.testing.assert_close(got, _returns_to_go(batch, cfg.discount))  # unroll j's value at position j
    assert "reinforce_loss" in result.metrics and "return_to_go" not in result.metrics


def test_the_source_and_the_hooks_receive_the_per_unroll_outputs():
    cfg, learner, backend = _setup()
    seen = {"feedback": [], "hooks": []}

    class Recording(FreshUnrolls):
        def feedback(self, batch, per_unroll):
            seen["feedback"].append((_returns_to_go(batch, cfg.discount), per_unroll["return_to_go"]))

    try:
        reason = run_loop(Recording(backend, cfg.batch_size), learner, backend.publish,
                          [lambda step: seen["hooks"].append(step.per_unroll) or None], total_frames=3 * 80)
    finally:
        backend.close()
    assert reason == "done" and len(seen["feedback"]) == len(seen["hooks"]) == 3
    for (expected, fed), hooked in zip(seen["feedback"], seen["hooks"]):
        torch.testing.assert_close(fed, expected)
        assert hooked["return_to_go"] is fed


def test_frames_are_counted_from_the_fresh_unrolls_of_each_batch():
    cfg, learner, backend = _setup()
    try:
        batch, _ = backend.get_batch()
    finally:
        backend.close()
    assert learner.fresh_frames(batch) == 8 * 10  # 8 fresh unrolls x T = 10 (no action repeat)
    batch["replayed"] = torch.tensor([False] * 3 + [True] * 5)
    assert learner.fresh_frames(batch) == 3 * 10
    batch["replayed"] = torch.ones(8, dtype=torch.bool)  # a source may send only replayed batches
    before = learner.frames
    learner.update(batch)
    assert learner.frames == before  # no frames were new


def test_sources_are_chosen_by_name_and_take_their_own_share_of_fresh_unrolls():
    assert set(SOURCES) >= {"fresh", "replay"}
    cfg, learner, backend = _setup()
    plain = TrainConfig(env="CartPole-v1", batch_size=8).validate()
    mixed = TrainConfig(env="CartPole-v1", batch_size=8, replay_proportion=0.25).validate()
    assert (source_name(plain), source_name(mixed)) == ("fresh", "replay")
    try:
        fresh = make_source(plain, backend)
        assert isinstance(fresh, FreshUnrolls) and fresh.next_batch()[0]["version"].shape == (8,)
        buffer = ReplayBuffer(learner.spec, capacity=100)
        replay = make_source(mixed, backend, buffer)
        assert isinstance(replay, MixedReplay) and (replay.fresh, replay.replayed) == (6, 2)
        batch, _ = replay.next_batch()
        assert batch["replayed"].tolist() == [False] * 6 + [True] * 2
        assert learner.fresh_frames(batch) == 6 * 10
    finally:
        backend.close()


class ReplayOnly:
    """A source that stores what arrives and, after a warm-up of ``warmup`` unrolls, trains on
    replayed unrolls only, taking ``fresh`` new unrolls from the backend per batch (a replay
    ratio of batch_size / fresh, as a DQN-family agent runs)."""

    def __init__(self, backend, buffer, batch_size: int, fresh: int, warmup: int):
        self.backend, self.buffer = backend, buffer
        self.batch_size, self.fresh, self.warmup = batch_size, fresh, warmup
        self.taken: list[int] = []

    def next_batch(self):
        take = self.batch_size if self.buffer.size < self.warmup else self.fresh
        fresh, episodes = self.backend.get_batch(take)
        self.buffer.add(fresh)
        self.taken.append(take)
        batch, idx = self.buffer.sample(self.batch_size)
        batch.update(replayed=torch.ones(self.batch_size, dtype=torch.bool), replay_index=idx,
                     fresh_steps=torch.tensor(take * (batch["obs"].shape[0] - 1)))
        return batch, episodes

    def feedback(self, batch, per_unroll):
        pass


def test_a_source_may_train_on_replayed_unrolls_only_and_frames_still_count_what_it_took():
    cfg, learner, backend = _setup()
    source = ReplayOnly(backend, ReplayBuffer(learner.spec, capacity=100), batch_size=8, fresh=1, warmup=16)
    try:
        reason = run_loop(source, learner, backend.publish, [], total_frames=16 * 10 + 5 * 10)
    finally:
        backend.close()
    # Two warm-up batches of 8 fresh unrolls, then one fresh unroll (10 frames) per batch of 8 replayed.
    assert reason == "done" and source.taken == [8, 8, 1, 1, 1, 1, 1]
    assert learner.frames == 210 and learner.version == 7
    assert source.buffer.added == 21


def test_get_batch_of_zero_unrolls_takes_none():
    cfg, learner, backend = _setup()
    try:
        backend.get_batch(8)
        batch, episodes = backend.get_batch(0)
        assert batch["version"].shape == (0,) and episodes == []
    finally:
        backend.close()
