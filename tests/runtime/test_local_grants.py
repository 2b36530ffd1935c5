"""The local backend keeps actors busy while the learner waits for a batch larger than
what the actors may hold at once (regression: it used to grant slots only in get_batch)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_batch_larger_than_the_actors_hold_at_once(tmp_path):
    run_dir = tmp_path / "run"
    # 1 actor x 4 envs holds at most 8 slots; a batch needs 16 full ones.
    proc = subprocess.run(
        [sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1", "--num-actors", "1",
         "--envs-per-actor", "4", "--batch-size", "16", "--total-frames", "6400", "--run-dir", str(run_dir),
         "--quiet"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "done" and summary["frames"] >= 6400


class _Alive:
    def is_alive(self):
        return True


class _Pipe:
    def __init__(self):
        self.sent = []

    def send(self, slots):
        self.sent.append(slots)


def _backend(num_actors: int, envs_per_actor: int, free: int):
    from collections import deque
    from types import SimpleNamespace

    from impala_rl.runtime.backends.local import LocalBackend, _ActorHandle

    backend = LocalBackend.__new__(LocalBackend)  # the bookkeeping alone: no processes, no shared memory
    backend.cfg = SimpleNamespace(envs_per_actor=envs_per_actor)
    backend.free = deque(range(free))
    backend.full = deque()
    backend.grants = 0
    backend.pace = False
    backend.window = free
    backend.actors = {a: _ActorHandle(_Alive(), _Pipe(), restart=0) for a in range(num_actors)}
    return backend


def test_grant_order_puts_the_emptiest_then_the_longest_waiting_actor_first():
    from impala_rl.runtime.backends.local import grant_order

    assert grant_order({0: 4, 1: 0}, {0: 7, 1: 3}) == [1, 0]
    assert grant_order({0: 4, 1: 4, 2: 4}, {0: 9, 1: 2, 2: 5}) == [1, 2, 0]
    assert grant_order({0: 0, 1: 0}, {0: 1}) == [1, 0]  # never served before one that was


def test_freed_slots_go_to_the_idle_actor_not_always_to_actor_0():
    # Learner-bound steady state (issue 19): actor 0 is mid-unroll holding one unroll's
    # worth, actor 1 has delivered everything and holds nothing; the learner frees one
    # unroll's worth. Granting in actor order gave it to actor 0 every time.
    backend = _backend(num_actors=2, envs_per_actor=4, free=4)
    backend.actors[0].held = {100, 101, 102, 103}
    backend._grant_all()
    assert backend.actors[1].held == {0, 1, 2, 3} and backend.actors[1].conn.sent == [[0, 1, 2, 3]]
    assert backend.actors[0].held == {100, 101, 102, 103} and backend.actors[0].conn.sent == []


def test_free_slots_alternate_between_equally_busy_actors():
    backend = _backend(num_actors=2, envs_per_actor=4, free=0)
    for _ in range(6):  # each learner step frees one unroll's worth; the actors finish theirs at once
        backend.free.extend(range(4))
        backend._grant_all()
        for h in backend.actors.values():
            h.held.clear()
    counts = [len(h.conn.sent) for h in backend.actors.values()]
    assert counts == [3, 3]


def test_every_free_slot_is_granted_up_to_two_unrolls_per_actor():
    backend = _backend(num_actors=3, envs_per_actor=2, free=20)
    backend._grant_all()
    assert [len(h.held) for h in backend.actors.values()] == [4, 4, 4]
    assert len(backend.free) == 8


# ----------------------------------------------------------------------------- pacing (issue 19)
def test_the_window_caps_slots_granted_or_full():
    backend = _backend(num_actors=2, envs_per_actor=4, free=40)
    backend.pace, backend.window = True, 12
    backend.full.extend(range(100, 104))  # one unroll already waits for the learner
    backend._grant_all()
    assert sorted(len(h.held) for h in backend.actors.values()) == [4, 4]  # 4 full + 8 held = 12
    assert len(backend.free) == 32


def test_the_window_shrinks_while_a_spare_batch_waits_and_grows_when_the_learner_waits():
    backend = _backend(num_actors=2, envs_per_actor=4, free=40)
    backend.cfg.slots, backend.cfg.total_envs = 40, 8
    backend.pace, backend.window = True, 40
    backend.full.extend(range(100, 108))  # after taking a batch of 4, another whole batch waits
    backend._narrow(count=4)
    assert backend.window == 36
    backend.full.clear()
    backend._narrow(count=4)  # nothing spare: keep
    assert backend.window == 36
    backend._widen(count=4)  # the learner waits: one unroll wider, and the freed slots go out
    assert backend.window == 40 and sorted(len(h.held) for h in backend.actors.values()) == [8, 8]
    backend._widen(count=4)
    assert backend.window == 40  # never above the slots
    backend.full.extend(range(200, 300))
    for _ in range(20):
        backend._narrow(count=6)
    assert backend.window == 8  # never below one batch, in whole unrolls (6 -> 2 unrolls of 4)
    backend.cfg.total_envs = 12
    backend._narrow(count=6)
    assert backend.window == 12  # nor below one unroll in flight per actor (3 actors x 4 envs)


def test_a_waiting_learner_never_stalls_on_a_narrow_window():
    # Batch 6 with unrolls of 4: 5 slots full (a batch not a multiple of the unroll), none held,
    # window at its floor of 8. Granting one more unroll would exceed it; widening must allow it.
    backend = _backend(num_actors=2, envs_per_actor=4, free=20)
    backend.cfg.slots, backend.cfg.total_envs = 25, 8
    backend.pace, backend.window = True, 8
    backend.full.extend(range(100, 105))
    assert not backend._in_window(4)
    backend._widen(count=6)
    held = sum(len(h.held) for h in backend.actors.values())
    assert len(backend.full) + held >= 6 and held >= 4


def _lag_with_a_slow_learner(pace: bool) -> float:
    """Mean policy lag of the last batches when the learner (here a sleep) is the bottleneck."""
    import time

    import torch

    from impala_rl.agents import make_agent
    from impala_rl.config import TrainConfig
    from impala_rl.runtime.backends.local import LocalBackend
    from impala_rl.runtime.builders import probe_env

    torch.set_num_threads(1)
    cfg = TrainConfig(env="CartPole-v1", torso="mlp", backend="local", num_actors=2, envs_per_actor=2,
                      batch_size=2, unroll_length=5, pace_actors=pace, seed=0).validate()
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    lags = []
    with LocalBackend(cfg, env_spec, model) as backend:
        for version in range(1, 31):
            batch, _ = backend.get_batch()
            lags.append(version - 1 - batch["version"].float().mean().item())
            time.sleep(0.1)  # the learner's step: far slower than 2 envs x 5 CartPole steps
            backend.publish(model, version)
    return sum(lags[-10:]) / 10


def test_pacing_keeps_the_policy_lag_near_one_update_when_the_learner_is_the_bottleneck():
    # Without pacing the actors fill every slot (2 x 2 x 2 envs + 2 = 10 slots, 5 batches), so
    # each batch waits behind four others (lag 5 here); with it each actor keeps one unroll in
    # flight (2 batches) while this one trains (lag 2 here).
    unpaced = _lag_with_a_slow_learner(pace=False)
    paced = _lag_with_a_slow_learner(pace=True)
    assert unpaced >= 4.0
    assert paced <= 2.5
