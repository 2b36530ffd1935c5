"""The local backend: actor processes, shared-memory slots, the weights seqlock.

One scenario (the ``run`` fixture) starts two CartPole actors, trains ~20 steps with a
real Learner, kills an actor with SIGKILL, trains on, and closes; the tests check what
it recorded. Starting processes is the slow part, so it happens once per mode.
"""

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from impala_rl.agents import make_agent
from impala_rl.config import TrainConfig
from impala_rl.runtime.backends.local import LocalBackend, SharedWeights
from impala_rl.runtime.builders import build_learner, probe_env

# The tests of the async scenario (the ``run`` fixture) are marked exclusive: the scenario
# checks /dev/shm machine-wide (another test's shared memory would show up) and the policy
# lag it sees depends on the machine's load. The other tests here check neither.
pytestmark = pytest.mark.timeout(240)

T = 5
SHM_PATTERN = re.compile(r"torch_|psm_|impala|mp-")  # mp-: multiprocessing semaphores (sem.mp-*)


def shm_entries() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if SHM_PATTERN.search(p.name)}


def live_children(pid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of ``pid``'s child processes that are not zombies, from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append((int(d.name), cmd))
    return out


def actor_children() -> list[tuple[int, str]]:
    # multiprocessing's resource tracker is a long-lived helper of this process, not an actor.
    return [c for c in live_children(os.getpid()) if "spawn_main" in c[1]]


def make_cfg(**kw) -> TrainConfig:
    base = dict(env="CartPole-v1", torso="mlp", backend="local", num_actors=2, envs_per_actor=2, batch_size=3,
                unroll_length=T, total_frames=1_000_000, learning_rate=1e-3, reward_clip=0.0, seed=0)
    base.update(kw)
    return TrainConfig(**base).validate()


def slot_accounting(backend: LocalBackend) -> list[int]:
    """Every slot index, once each, is free, full, or held by an actor (sorted)."""
    with backend.cond:
        held = [s for h in backend.actors.values() for s in h.held]
        return sorted(list(backend.free) + list(backend.full) + held)


def policy_of(net, weights, obs):
    """policy_params of the MLP net with ``weights`` at every row of one unroll's obs [T+1, 1, D]."""
    net.load_state_dict(weights)
    zeros = torch.zeros(obs.shape[:2])
    with torch.no_grad():
        out, _ = net(obs=obs, last_action=zeros.long(), last_reward=zeros, first=zeros.bool())
    return out.policy_params[:, 0]


def check_policy_params(batch, weights_by_version, cfg, env_spec):
    """Rows 1..T of each unroll were produced by the weights of the version it is tagged
    with. Row 0 repeats the previous unroll's row T, acted on one unroll earlier, by the
    same or an older version."""
    net = make_agent(cfg, env_spec).build_model().eval()
    for b in range(batch["version"].shape[0]):
        v = int(batch["version"][b])
        obs, params = batch["obs"][:, b:b + 1], batch["policy_params"][:, b]
        torch.testing.assert_close(policy_of(net, weights_by_version[v], obs)[1:], params[1:], atol=1e-5, rtol=0)
        assert any(torch.allclose(policy_of(net, weights_by_version[u], obs)[0], params[0], atol=1e-5, rtol=0)
                   for u in range(v + 1))


@pytest.fixture(scope="module")
def run():
    """Async scenario: batches, learning, a SIGKILLed actor, close. Returns what it saw."""
    torch.set_num_threads(1)
    rec = {"shm_before": shm_entries(), "children_before": actor_children()}
    cfg = make_cfg()
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    backend = LocalBackend(cfg, env_spec, model)
    learner = build_learner(cfg, env_spec, model)
    weights = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    rec.update(cfg=cfg, env_spec=env_spec, backend=backend, weights=weights, batches=[], metrics=[],
               accounting=[])
    try:
        backend.start()
        rec["pids_at_start"] = {i: h.process.pid for i, h in backend.actors.items()}
        rec["first_process"] = backend.actors[0].process
        rec["children_running"] = actor_children()
        for _ in range(20):
            batch, episodes = backend.get_batch()
            rec["batches"].append(batch)
            rec["accounting"].append(slot_accounting(backend))
            rec["metrics"].append(learner.step(batch))
            backend.publish(learner.model, learner.version)
            weights[learner.version] = {k: v.clone() for k, v in learner.model.state_dict().items()}
        # Kill actor 0 mid-run; the learner must go on and the actor come back.
        os.kill(rec["pids_at_start"][0], signal.SIGKILL)
        deadline = time.monotonic() + 90
        batches_after_kill = 0
        while time.monotonic() < deadline:
            batch, _ = backend.get_batch()
            batches_after_kill += 1
            rec["accounting"].append(slot_accounting(backend))
            handle = backend.actors[0]
            if (backend.restarts >= 1 and handle.process is not rec["first_process"] and handle.unrolls > 0
                    and batches_after_kill >= 3):  # wait for the replacement itself, not just the count
                break
        rec["batches_after_kill"] = batches_after_kill
        rec["restarts"] = backend.restarts
        rec["info"] = backend.info()
        rec["new_process"] = backend.actors[0].process
        rec["new_restart_index"] = backend.actors[0].restart
        rec["restarted_unrolls"] = backend.actors[0].unrolls
        rec["processes"] = [h.process for h in backend.actors.values()]
    finally:
        backend.close()
    rec["alive_after_close"] = [p.pid for p in rec["processes"] if p.is_alive()]
    rec["accounting_after_close"] = slot_accounting(backend)
    rec["children_after_close"] = actor_children()
    rec["shm_after"] = shm_entries()
    backend.close()  # a second close is a no-op
    return rec


@pytest.mark.exclusive
def test_batches_are_time_major_with_T_plus_1_rows(run):
    B, env_spec = run["cfg"].batch_size, run["env_spec"]
    for batch in run["batches"]:
        assert batch["obs"].shape == (T + 1, B) + tuple(env_spec.obs_shape)
        assert batch["obs"].dtype == torch.float32
        assert batch["action"].shape == batch["reward"].shape == batch["first"].shape == (T + 1, B)
        assert batch["policy_params"].shape == (T + 1, B, 2)
        assert batch["version"].shape == (B,)
        assert "core_h" not in batch


@pytest.mark.exclusive
def test_actor_processes_started(run):
    pids = set(run["pids_at_start"].values())
    assert len(pids) == 2
    assert pids <= {pid for pid, _ in run["children_running"]}


@pytest.mark.exclusive
def test_every_slot_is_in_exactly_one_place(run):
    everything = list(range(run["cfg"].slots))
    for seen in run["accounting"]:
        assert seen == everything
    # After close nothing was lost either (the killed actor's slots were returned).
    assert run["accounting_after_close"] == everything


@pytest.mark.exclusive
def test_actors_pick_up_published_weights(run):
    """Every unroll is tagged with a version that was published when it was acted, and the
    tags follow the learner's publishes (an actor loads the newest weights at every unroll)."""
    tags = [b["version"].tolist() for b in run["batches"]]
    assert tags[0] == [0] * run["cfg"].batch_size  # only version 0 existed before the first batch
    for i, t in enumerate(tags):
        # Version i was the newest published before batch i: a tag above it was never published,
        # and an actor that acted before loading any weights would tag its unroll -1.
        assert all(0 <= v <= i for v in t), (i, t)
    assert max(max(t) for t in tags) >= 10  # 20 versions published; actors follow
    assert len({v for t in tags for v in t}) >= 5  # reloaded again and again, not once


@pytest.mark.exclusive
def test_unrolls_were_produced_by_the_weights_of_their_version(run):
    for batch in run["batches"][::4]:
        check_policy_params(batch, run["weights"], run["cfg"], run["env_spec"])


@pytest.mark.exclusive
def test_policy_lag_is_visible_in_async_mode(run):
    """The learner's lag metrics are its version minus each unroll's tag, and in async mode
    some batches were acted by older policies."""
    for i, (batch, m) in enumerate(zip(run["batches"], run["metrics"], strict=True)):
        lag = i - batch["version"].double()  # the learner had made i updates when it trained on batch i
        assert m["policy_lag_max"] == float(lag.max()), (i, batch["version"], m)
        assert m["policy_lag_mean"] == pytest.approx(float(lag.mean())), (i, batch["version"], m)
    assert max(m["policy_lag_max"] for m in run["metrics"]) > 0


@pytest.mark.exclusive
def test_learning_happened(run):
    """Every batch made one update that changed the weights, with finite metrics and the
    learning rate of the linear schedule."""
    cfg, weights = run["cfg"], run["weights"]
    assert sorted(weights) == list(range(21))  # 20 batches, 20 versions: no update was skipped
    for v in range(20):
        assert any(not torch.equal(weights[v][k], weights[v + 1][k]) for k in weights[v]), v
    assert all(not torch.equal(weights[0][k], weights[20][k]) for k in weights[0] if weights[0][k].is_floating_point())
    for i, m in enumerate(run["metrics"]):
        assert all(v == v for v in m.values()), m  # no NaN
        assert m["grad_norm"] > 0
        frames = (i + 1) * cfg.frames_per_update  # counted before the step's learning rate is taken
        assert m["learning_rate"] == pytest.approx(cfg.learning_rate * (1 - frames / cfg.total_frames), rel=1e-12)


@pytest.mark.exclusive
def test_killed_actor_is_restarted_and_training_goes_on(run):
    assert run["restarts"] == 1
    assert run["info"]["actor_restarts"] == 1.0
    # A new process replaced the killed one (compared as processes: the OS may reuse the pid).
    assert run["new_process"] is not run["first_process"]
    assert run["first_process"].exitcode == -signal.SIGKILL
    assert run["new_restart_index"] == 1
    assert run["restarted_unrolls"] > 0


@pytest.mark.exclusive
def test_close_leaves_no_processes_and_no_shared_memory(run):
    assert run["alive_after_close"] == []
    assert run["children_after_close"] == run["children_before"]
    assert run["shm_after"] <= run["shm_before"]


def test_get_batch_after_close_raises():
    cfg = make_cfg(num_actors=1, envs_per_actor=1, batch_size=1)
    env_spec = probe_env(cfg)
    backend = LocalBackend(cfg, env_spec, make_agent(cfg, env_spec).build_model())
    backend.close()  # never started: close must still work
    with pytest.raises(RuntimeError, match="closed"):
        backend.get_batch()


def test_sync_mode_has_no_policy_lag():
    torch.set_num_threads(1)
    cfg = make_cfg(num_actors=1, envs_per_actor=2, batch_size=2, sync=True)
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    learner = build_learner(cfg, env_spec, model)
    with LocalBackend(cfg, env_spec, model) as backend:
        for step in range(6):
            batch, _ = backend.get_batch()
            assert batch["version"].tolist() == [step, step]
            # On-policy from row 1 on (row 0 was acted on at the end of the previous unroll).
            net = make_agent(cfg, env_spec).build_model().eval()
            for b in range(2):
                torch.testing.assert_close(policy_of(net, learner.model.state_dict(), batch["obs"][:, b:b + 1])[1:],
                                           batch["policy_params"][1:, b], atol=1e-5, rtol=0)
            metrics = learner.step(batch)
            assert metrics["policy_lag_max"] == 0.0
            backend.publish(learner.model, learner.version)
        processes = [h.process for h in backend.actors.values()]
    assert not any(p.is_alive() for p in processes)


def rollout_spec_of(cfg, env_spec):
    from impala_rl.runtime.builders import rollout_spec
    return rollout_spec(cfg, env_spec)


# ----------------------------------------------------------------------------- SharedWeights
def filled_model(value: float) -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256), torch.nn.Linear(256, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def test_shared_weights_load_into_gives_the_published_values():
    source = filled_model(0.0)
    shared = SharedWeights(source)
    assert shared.version == 0
    torch.manual_seed(0)
    trained = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256), torch.nn.Linear(256, 4))
    shared.publish(trained, 7)
    target = filled_model(-1.0)
    assert shared.load_into(target) == 7
    assert shared.version == 7
    for k, v in trained.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    # The shared copy is a snapshot: later changes to the learner's model do not leak in.
    with torch.no_grad():
        trained[0].weight.add_(1.0)
    shared.load_into(target)
    assert not torch.equal(target[0].weight, trained[0].weight)


def test_shared_weights_reader_waits_while_a_publish_is_in_progress():
    shared = SharedWeights(filled_model(1.0))
    shared.control[0] += 1  # a writer is mid-publish
    result = {}
    reader = threading.Thread(target=lambda: result.setdefault("v", shared.load_into(filled_model(0.0))))
    reader.start()
    reader.join(timeout=0.3)
    assert reader.is_alive() and not result, "load_into must not return a half-written snapshot"
    shared.control[0] += 1  # publish done
    reader.join(timeout=5)
    assert result == {"v": 0}


def test_shared_weights_snapshots_are_consistent_under_concurrent_publishing():
    """Every parameter of a loaded snapshot holds the value of the version returned with it."""
    shared = SharedWeights(filled_model(0.0))
    stop = threading.Event()

    def writer():
        v = 0
        model = filled_model(0.0)
        while not stop.is_set():
            v += 1
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float(v))
            shared.publish(model, v)

    thread = threading.Thread(target=writer)
    thread.start()
    target = filled_model(0.0)
    seen = set()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            v = shared.load_into(target)
            seen.add(v)
            values = torch.cat([p.detach().flatten() for p in target.parameters()])
            assert torch.all(values == float(v)), f"torn snapshot for version {v}"
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 3  # the reader really raced the writer
