"""The Ray backend on a real Ray, on loopback (127.0.0.1) only.

- a local Ray started by the backend itself: every node address is 127.0.0.1, batches have
  the local backend's layout, nothing is left running after close; ``--resume`` works;
- a two-node cluster on this machine (``ray.cluster_utils.Cluster``, two raylets): CartPole
  learns to the local-backend test's threshold with actors on both nodes while one actor
  is SIGKILLed mid-run (restart reported); then a whole worker node is removed mid-run and
  the run completes on the remaining node;
- bad input: ``--backend ray`` without Ray installed is one line and exit code 2.

Every cluster is started by a fixture that always shuts it down.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray")

from impala_rl.agents import make_agent  # noqa: E402
from impala_rl.config import ConfigError, TrainConfig  # noqa: E402
from impala_rl.runtime.backends import ray_backend  # noqa: E402
from impala_rl.runtime.backends.serial import SerialBackend  # noqa: E402
from impala_rl.runtime.builders import build_learner, probe_env  # noqa: E402
from conftest import ray_service_pids  # noqa: E402

ray = ray_backend.import_ray(loopback=True)  # before any Ray service starts in this process

# Not exclusive: `make test` keeps this file on one worker (--dist loadfile) and runs every
# other test that starts Ray (test_ray_distributed.py, the Ray PBT test) in the exclusive phase,
# so the machine-wide check of Ray's services sees only this file's. (`make test-fast` also
# runs the tests of this file that are not slow.)
pytestmark = pytest.mark.timeout(420)

THRESHOLD = 400.0  # as tests/e2e/test_e2e_learning.py
ACTOR_LINE = re.compile(r"actor (\d+) running on node ([0-9a-f]+) \(pid (\d+)\)")


def make_cfg(**kw) -> TrainConfig:
    base = dict(env="CartPole-v1", torso="mlp", backend="ray", num_actors=2, envs_per_actor=2, batch_size=3,
                unroll_length=5, total_frames=1_000_000, reward_clip=0.0, seed=0)
    base.update(kw)
    return TrainConfig(**base).validate()


def train_cmd(run_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "impala_rl.cli", "train", "--env", "CartPole-v1", "--backend", "ray",
            "--run-dir", str(run_dir), "--quiet", "--log-interval", "2", *flags]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def actor_lines(run_dir: Path) -> list[tuple[int, str, int]]:
    """(actor id, node id, pid) for every actor incarnation the run logged."""
    path = run_dir / "train.log"
    text = path.read_text() if path.exists() else ""
    return [(int(a), n, int(p)) for a, n, p in ACTOR_LINE.findall(text)]


def frames_so_far(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return 0
    return int(float(rows[-1]["frames"])) if rows else 0


def wait_until(predicate, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False



@pytest.fixture
def cluster(no_new_ray_services):
    """Two Ray nodes on this machine, both on 127.0.0.1: (cluster, head node, worker node)."""
    from ray.cluster_utils import Cluster

    # Fast detection of a dead node (default: about 15 s).
    system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 4}
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, include_dashboard=False, _system_config=system))
    try:
        worker = c.add_node(num_cpus=2)
        c.wait_for_nodes()
        yield c, c.head_node, worker
    finally:
        c.shutdown()


# ----------------------------------------------------------------------------- config and bad input
def test_config_checks_ray_fields():
    with pytest.raises(ConfigError, match="num_learners"):
        make_cfg(num_learners=3)
    with pytest.raises(ConfigError, match="unrolls_in_flight"):
        make_cfg(unrolls_in_flight=0)
    with pytest.raises(ConfigError, match="cpus_per_actor"):
        make_cfg(cpus_per_actor=0.0)
    with pytest.raises(ConfigError, match="need --backend ray"):
        make_cfg(backend="local", ray_address="auto")
    with pytest.raises(ConfigError, match="need --backend ray"):
        make_cfg(backend="local", num_learners=2)
    assert make_cfg(num_learners=2).frames_per_update == 2 * make_cfg().frames_per_batch


def test_missing_ray_is_one_line_and_exit_2(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from impala_rl.cli import main; "
            f"sys.exit(main(['train', '--env', 'CartPole-v1', '--backend', 'ray', '--run-dir', r'{tmp_path / 'run'}']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'impala-rl[ray]'" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


def test_loopback_address_detection():
    assert ray_backend.is_loopback("127.0.0.1:6379") and ray_backend.is_loopback("localhost:1")
    assert not ray_backend.is_loopback("10.0.0.5:6379") and not ray_backend.is_loopback("auto")


# ----------------------------------------------------------------------------- a local Ray
def test_local_ray_on_loopback_batches_like_serial(no_new_ray_services):
    cfg = make_cfg()
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    serial = SerialBackend(cfg, env_spec, model)
    reference, _ = serial.get_batch()
    serial.close()
    backend = ray_backend.RayBackend(cfg, env_spec, model)
    try:
        assert backend.owns_ray
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        backend.start()
        versions = []
        for version in range(1, 200):  # until both actors delivered (the second may start later)
            batch, _ = backend.get_batch()
            assert batch.keys() == reference.keys()
            for k, t in batch.items():
                assert t.shape == reference[k].shape and t.dtype == reference[k].dtype, k
            versions.append(batch["version"])
            backend.publish(model, version)
            if version >= 5 and len(backend.actor_nodes()) == 2:
                break
        assert torch.cat(versions).max() >= 1  # actors picked up published weights
        assert backend.info()["actor_restarts"] == 0
        assert len(backend.actor_nodes()) == 2
        # Back-pressure: never more than unrolls_in_flight requests per actor.
        assert all(h.in_flight <= cfg.unrolls_in_flight for h in backend.handles.values())
    finally:
        backend.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def joined_ray():
    """A local Ray this test module starts (the backend joins it); its workers can import
    the test envs next to this file."""
    before = ray_service_pids()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), old]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield
    finally:
        ray.shutdown()
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
        assert wait_until(lambda: not (ray_service_pids() - before), 30), "Ray services left running"


def test_sync_mode_has_no_policy_lag_and_an_existing_ray_is_left_running(joined_ray):
    cfg = make_cfg(sync=True, batch_size=4)  # 2 actors x 2 envs: one unroll of every env per batch
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    backend = ray_backend.RayBackend(cfg, env_spec, model)
    assert not backend.owns_ray
    try:
        backend.start()
        for version in range(1, 8):
            batch, _ = backend.get_batch()
            assert (batch["version"] == version - 1).all()  # every unroll acted with the newest weights
            backend.publish(model, version)
    finally:
        backend.close()
    assert ray.is_initialized()  # joined, not started: left to its owner


def test_an_actor_that_keeps_raising_is_replaced_then_stops_the_run(joined_ray):
    import impala_test_envs

    from impala_rl.envs import check_env_id
    from impala_rl.runtime.backends.base import ActorFailure

    env_id = f"impala_test_envs:{impala_test_envs.RAISING_ID}"
    check_env_id(env_id)
    cfg = make_cfg(env=env_id, num_actors=1)
    env_spec = probe_env(cfg)
    backend = ray_backend.RayBackend(cfg, env_spec, make_agent(cfg, env_spec).build_model())
    try:
        backend.start()
        with pytest.raises(ActorFailure, match=impala_test_envs.RAISING_MESSAGE):
            backend.get_batch()
    finally:
        backend.close()
    assert backend.restarts >= 1  # each failure got a fresh replacement before the run gave up


def test_every_unroll_carries_its_task_on_ray(joined_ray):
    import impala_test_envs
    from test_multitask import assert_tasks_match_observations

    env = ",".join(f"impala_test_envs:{i}" for i in impala_test_envs.ECHO_IDS)
    cfg = make_cfg(env=env, num_actors=2, envs_per_actor=3, batch_size=4, popart=True)
    env_spec = probe_env(cfg)
    backend = ray_backend.RayBackend(cfg, env_spec, make_agent(cfg, env_spec).build_model())
    seen, episode_tasks = set(), set()
    try:
        backend.start()
        for _ in range(6):
            batch, episodes = backend.get_batch()
            assert_tasks_match_observations(batch)
            seen |= set(batch["task"].tolist())
            episode_tasks |= {e.task for e in episodes}
    finally:
        backend.close()
    assert seen == {0, 1} and episode_tasks == {0, 1}


def test_replay_mixes_ray_unrolls_with_replayed_ones(joined_ray):
    from impala_rl.runtime.replay import MixedReplay, ReplayBuffer

    cfg = make_cfg(batch_size=4, replay_proportion=0.5, use_lstm=True, lstm_size=8)
    env_spec = probe_env(cfg)
    model = make_agent(cfg, env_spec).build_model()
    backend = ray_backend.RayBackend(cfg, env_spec, model)
    source = MixedReplay(backend, ReplayBuffer(backend.spec, capacity=20), cfg.fresh_batch_size, cfg.replayed_per_batch)
    seen = []
    try:
        backend.start()
        for version in range(1, 9):
            batch, _ = source.next_batch()
            assert batch["version"].shape == (4,) and batch["replayed"].tolist() == [False, False, True, True]
            assert batch["core_h"].shape == (4, 8)
            seen.append(batch)
            backend.publish(model, version)
    finally:
        backend.close()
    stored = {tuple(b["policy_params"][:, j].flatten().tolist()) for b in seen for j in range(2)}
    replayed = [tuple(b["policy_params"][:, j].flatten().tolist()) for b in seen for j in range(2, 4)]
    assert all(r in stored for r in replayed)  # every replayed unroll is one a Ray actor delivered


def test_cli_local_ray_and_resume(tmp_path, no_new_ray_services):
    run_dir = tmp_path / "run"
    first = subprocess.run(train_cmd(run_dir, "--total-frames", "6000", "--seed", "3"),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = read_summary(run_dir)
    assert s1["stop_reason"] == "done" and s1["frames"] >= 6000
    assert "started a local Ray on 127.0.0.1" in (run_dir / "train.log").read_text()
    resumed = subprocess.run([sys.executable, "-m", "impala_rl.cli", "train", "--resume", str(run_dir),
                              "--total-frames", "12000", "--quiet"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    s2 = read_summary(run_dir)
    assert s2["stop_reason"] == "done" and s2["frames"] >= 12000
    assert s2["learner_steps"] > s1["learner_steps"]  # continued from the checkpoint, not from scratch
    assert json.loads((run_dir / "config.json").read_text())["backend"] == "ray"


# ----------------------------------------------------------------------------- a two-node cluster
@pytest.mark.slow  # trains CartPole to the threshold on a two-node cluster
def test_two_nodes_learn_cartpole_through_an_actor_kill(tmp_path, cluster):
    c, head, worker = cluster
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(run_dir, "--ray-address", c.address, "--num-actors", "2", "--seed", "1",
                                      "--stop-at-return", str(THRESHOLD)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: len({a for a, _, _ in actor_lines(run_dir)}) == 2 and
                          frames_so_far(run_dir) >= 50_000, 240, proc), "actors did not start"
        victim_id, _, victim_pid = actor_lines(run_dir)[0]
        os.kill(victim_pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["stop_reason"] == "target" and summary["frames"] <= 500_000, summary  # within the budget
    assert summary["mean_return"] >= THRESHOLD, summary
    assert summary["actor_restarts"] >= 1, summary
    lines = actor_lines(run_dir)
    assert {head.node_id, worker.node_id} <= {n for _, n, _ in lines}, lines  # both nodes ran actors
    # A replacement incarnation of the victim ran (counted by log line: the OS may reuse the pid).
    assert sum(a == victim_id for a, _, _ in lines) >= 2, lines
    log = (run_dir / "train.log").read_text()
    assert f"actor {victim_id} lost" in log


@pytest.mark.slow  # a 400k-frame run on a two-node cluster
def test_run_completes_when_a_worker_node_is_removed(tmp_path, cluster):
    c, head, worker = cluster
    run_dir = tmp_path / "run"
    # Enough frames that the lost actor's replacement (a new Ray worker: seconds to import torch)
    # starts on the head before the surviving actor alone finishes the run.
    proc = subprocess.Popen(train_cmd(run_dir, "--ray-address", c.address, "--num-actors", "2",
                                      "--total-frames", "400000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: {n for _, n, _ in actor_lines(run_dir)} == {head.node_id, worker.node_id} and
                          frames_so_far(run_dir) >= 10_000, 240, proc), "actors did not start on both nodes"
        c.remove_node(worker, allow_graceful=False)  # the node's raylet and workers are killed
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["stop_reason"] == "done" and summary["frames"] >= 400_000
    assert summary["actor_restarts"] >= 1, summary
    lines = actor_lines(run_dir)
    on_worker = {a for a, n, _ in lines[:2] if n == worker.node_id}
    assert any(a in on_worker and n == head.node_id for a, n, _ in lines[2:]), lines  # moved to the head


def test_an_agent_defined_outside_the_package_runs_on_ray(joined_ray):
    cfg = make_cfg(agent="reinforce_agent:ReinforceAgent", optimizer="adam", reward_clip=0.0, batch_size=4)
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    backend = ray_backend.RayBackend(cfg, env_spec, learner.model)
    try:
        backend.start()
        for version in range(1, 5):
            batch, _ = backend.get_batch()
            assert batch["logp"].shape[1] == 4 and batch["steps"].shape == (4,)  # its records and state
            learner.update(batch)
            backend.publish(learner.model, learner.version)
    finally:
        backend.close()
    assert learner.version == 4 and learner.agent.updates == 4


def test_rainbow_learns_from_ray_actors_through_its_prioritised_replay(joined_ray):
    from impala_rl.runtime.loop import run_loop

    cfg = make_cfg(agent="rainbow", optimizer="adam", batch_size=8, unroll_length=10, mlp_sizes=(32,),
                   agent_options="replay_capacity=2000,warmup=100")
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    backend = ray_backend.RayBackend(cfg, env_spec, learner.model)
    source = learner.agent.make_source(backend)
    try:
        backend.start()
        run_loop(source, learner, backend.publish, [], total_frames=600)
    finally:
        backend.close()
    assert learner.frames == source.steps_in >= 600 and learner.version == source.updates > 0
    written = source.replay._written  # rows stitched in per environment stream (2 Ray actors x 2 environments)
    assert len(written) == 4 and written.sum() == source.steps_in + (written > 0).sum()  # row 0 once per stream
    assert learner.agent.target is not None and learner.agent.updates == learner.version


@pytest.mark.parametrize("mbp_loss", [True, False])  # MERLIN, and RL-MEM (no ELBO)
def test_merlin_trains_from_ray_actors_with_its_memory_state(joined_ray, mbp_loss):
    from impala_rl.runtime.loop import run_loop
    from impala_rl.runtime.sources import make_source

    cfg = make_cfg(agent="merlin", optimizer="adam", batch_size=4, unroll_length=10, mlp_sizes=(32,),
                   agent_options="z_size=8,memory_slots=16,mbp_hidden=32,policy_hidden=32,decoder_hidden=32,"
                                 f"mbp_loss={str(mbp_loss).lower()}")
    env_spec = probe_env(cfg)
    learner = build_learner(cfg, env_spec)
    backend = ray_backend.RayBackend(cfg, env_spec, learner.model)
    seen = []
    try:
        backend.start()
        run_loop(make_source(cfg, backend, agent=learner.agent), learner, backend.publish,
                 [lambda step: seen.append(step.metrics) or None], total_frames=400)
    finally:
        backend.close()
    assert learner.frames >= 400 and seen and all(("kl" in m) == mbp_loss for m in seen)
    assert learner.spec.slot_fields()["memory"][0] == (16, 16)  # the memory travels with each unroll
