"""Ray backend: the same actors as the local backend, as Ray actors on any number of machines.

Only transport and placement differ from the local backend; the actor and the learner
are the very same classes.

- **Placement.** Each actor is a Ray actor (``RolloutWorker`` wrapping
  :func:`~impala_rl.runtime.builders.build_actor`) reserving ``cpus_per_actor`` CPUs,
  scheduled with Ray's ``SPREAD`` strategy so actors spread over the nodes. The learner
  runs in the driver process (on its GPU when it has one).
- **Trajectories.** A request ``unroll(version, [weights])`` makes the actor step its
  ``envs_per_actor`` environments for one unroll and return the filled rows as numpy
  arrays (zero-copy out of Ray's object store) with the finished episodes. The learner
  keeps at most ``unrolls_in_flight`` requests outstanding per actor (back-pressure):
  the object store holds at most ``num_actors x unrolls_in_flight`` unrolls plus the few
  weight versions that requests in flight still refer to, so memory is bounded and a
  steady run does not spill (given an object store that holds that much).
- **Weights.** One ``ray.put`` per published version, shared by all actors. Each
  request carries a reference to the newest weights at the time it is sent (wrapped in
  a list, so Ray does not fetch it for the actor); the actor fetches and loads them only
  when the version differs from the one it holds. The version travels with each unroll,
  so the policy lag is logged exactly as with the local backend.
- **Fault tolerance.** Actors are declared with ``max_restarts=-1``: when an actor's
  process or its whole node dies, Ray starts a replacement (on any node with room) and
  the learner sends it new requests. Each loss is counted in ``actor_restarts`` when its
  failed requests come back (once per loss; uncounted again if the same incarnation then
  answers, i.e. the error was transient). An actor that raises in ``unroll`` is killed and
  so replaced with fresh environments.
  One that dies ``MAX_FAILED_STARTS`` times in a row before producing an unroll stops the
  run with :class:`ActorFailure`.
- **Where Ray runs.** With ``ray_address`` 'local' a private Ray is started with every
  service on 127.0.0.1 and stopped in :meth:`close`; with an address the backend joins
  that cluster (and leaves it running). See docs/distributed.md.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import warnings
from typing import Sequence

import numpy as np
import torch

from impala_rl.config import ConfigError, TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.backends.base import MAX_FAILED_STARTS, ActorFailure, sum_timings
from impala_rl.runtime.builders import build_actor, rollout_spec
from impala_rl.runtime.types import Batch

log = logging.getLogger("impala_rl")

RETRY_DELAY_S = 1.0  # after a failed request, wait this long before sending that actor another
STALL_WARNING_S = 60.0  # warn when no unroll arrived for this long (e.g. no room for restarted actors)
INSTALL_HINT = "the ray backend needs Ray, which is not installed: pip install 'impala-rl[ray]'"


# ----------------------------------------------------------------------------- connecting
def is_loopback(address: str) -> bool:
    """True for an address on this machine's loopback interface ('127.0.0.1:6379', 'localhost:1')."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    return host in ("localhost", "::1") or host.startswith("127.")


def import_ray(loopback: bool = False):
    """Import Ray; with ``loopback``, make this process's Ray use 127.0.0.1 as its node address.

    Ray deliberately resolves 127.0.0.1 to the machine's primary interface address (so that
    other machines can reach a head started as 'localhost'); its switch for the opposite,
    "this node's address is the loopback address", is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    (it then binds every service to 127.0.0.1). It is read when Ray is imported, so it is
    set here first, and the constant it sets is also updated in case Ray was imported
    before. Only a local Ray or a loopback cluster asks for this.
    """
    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    if loopback:
        try:
            import ray._private.ray_constants as ray_constants
            ray_constants.ENABLE_RAY_CLUSTER = False
        except (ImportError, AttributeError):  # another Ray layout: the environment variable still applies
            pass
    return ray


def connect(cfg: TrainConfig, num_cpus_needed: float) -> tuple[object, bool]:
    """(the ray module, whether this call started Ray and so must shut it down).

    Inside a Ray worker, or when the caller already called ``ray.init``, the existing
    connection is used as is.
    """
    address = "" if cfg.ray_address in ("local", "") else cfg.ray_address
    ray = import_ray(loopback=not address or is_loopback(address))
    if ray.is_initialized():
        return ray, False
    common = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address:
        try:
            ray.init(address=address, **common)
        except ConnectionError as e:
            raise ConfigError(f"cannot join the Ray cluster at '{address}': {e}") from None
        log.info("joined the Ray cluster at %s: %s", address, _cluster_summary(ray))
        return ray, True
    # A private local Ray on loopback. Logical CPUs are Ray's admission count, not cores:
    # declare enough for every actor (they time-share the cores as local-backend processes do).
    num_cpus = max(os.cpu_count() or 1, int(np.ceil(num_cpus_needed)))
    ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
             include_dashboard=None, dashboard_host="127.0.0.1", **common)
    log.info("started a local Ray on 127.0.0.1 (%d logical CPUs)", num_cpus)
    return ray, True


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _cluster_summary(ray) -> str:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes)
    gpus = sum(n.get("Resources", {}).get("GPU", 0.0) for n in nodes)
    return f"{len(nodes)} node(s), {cpus:g} CPUs, {gpus:g} GPUs"


# ----------------------------------------------------------------------------- the Ray actor
class RolloutWorker:
    """Body of one Ray actor: an :class:`~impala_rl.runtime.actor.Actor` and its buffers.

    Each call fills one unroll per environment and returns the rows as numpy arrays
    ([N, T+1, ...] row fields, [N, ...] slot fields), the finished episodes, and where it
    ran (node id, pid, an id of this incarnation, the actor's cumulative timings).
    """

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, actor_id: int):
        import ray

        torch.set_num_threads(1)
        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray's own implementation uses a deprecated property
            warnings.simplefilter("ignore")
            reconstructed = bool(ctx.was_current_actor_reconstructed)
        # A replacement gets fresh environments with new seeds (the pid differs per restart;
        # kept small so that seeds stay within what every environment accepts).
        restart = 1 + os.getpid() % 1000 if reconstructed else 0
        self.actor = build_actor(cfg, env_spec, actor_id, restart=restart)
        self.buffers = self.actor.spec.allocate(self.actor.num_envs)
        self.arrays = {k: v.numpy() for k, v in self.buffers.items()}
        self.slots = list(range(self.actor.num_envs))
        self.version = -1
        self.meta = {"node_id": ctx.get_node_id(), "pid": os.getpid(), "incarnation": uuid.uuid4().hex,
                     "reconstructed": reconstructed}

    def unroll(self, version: int, weights: list) -> tuple[dict, list, dict]:
        import ray

        if version != self.version:
            self.actor.model.load_state_dict(ray.get(weights[0]))
            self.version = version
        finished = self.actor.unroll(self.buffers, self.slots, version)
        meta = dict(self.meta, timings=dict(getattr(self.actor, "timings", {})))
        return self.arrays, [(e.ret, e.length, e.task) for e in finished], meta


# ----------------------------------------------------------------------------- the backend
class _Handle:
    """Learner-side bookkeeping of one Ray actor."""

    def __init__(self, actor):
        self.actor = actor
        self.in_flight = 0
        self.generation = 0  # bumped on each failure seen, so that one death counts once
        self.failures_in_a_row = 0  # deaths / errors since its last unroll
        self.retry_at = 0.0  # no new request before this time (monotonic) after a failure
        self.suspect = False  # lost and counted as restarted; its next unroll confirms (or undoes) that
        self.incarnation = ""
        self.node_id = ""
        self.last_error = ""
        self.timings: dict[str, float] = {}


class RayBackend:
    """Runs ``cfg.num_actors`` (or the given ``actor_ids``) Ray actors feeding the learner.

    ``actor_ids`` lets several learners (``--num-learners``) each drive its own share;
    ``extra_cpus`` adds to the logical CPUs of a local Ray (for those learners).
    """

    worker_class = RolloutWorker  # the Ray actor's body (benchmarks/ray_transport.py swaps in a null one)

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, model: torch.nn.Module,
                 actor_ids: Sequence[int] | None = None, version: int = 0, extra_cpus: float = 0.0):
        self.cfg = cfg
        self.env_spec = env_spec
        self.spec = rollout_spec(cfg, env_spec)
        self.actor_ids = list(range(cfg.num_actors)) if actor_ids is None else list(actor_ids)
        self.ray, self.owns_ray = connect(cfg, cfg.num_actors * cfg.cpus_per_actor + extra_cpus)
        self.max_in_flight = 1 if cfg.sync_weights else cfg.unrolls_in_flight
        self.handles: dict[int, _Handle] = {}
        self.in_flight: dict[object, tuple[int, int]] = {}  # ObjectRef -> (actor id, generation)
        self.round: set[int] = set()  # sync mode: actors yet to deliver this batch's unroll
        self.pending: list[dict] = []  # received chunks not yet batched (numpy, [N, ...])
        self.pending_unrolls = 0
        self.finished: list[EpisodeStats] = []
        self.restarts = 0
        self.nodes_seen: set[str] = set()
        self.wait_time = 0.0
        self.last_result_time = time.monotonic()
        self.closed = False
        self.weights_ref = None
        self.version = version
        self.publish(model, version)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        ray = self.ray
        worker_cls = ray.remote(self.worker_class).options(
            num_cpus=self.cfg.cpus_per_actor, max_restarts=-1, max_task_retries=0,
            scheduling_strategy="SPREAD")
        for actor_id in self.actor_ids:
            self.handles[actor_id] = _Handle(worker_cls.remote(self.cfg, self.env_spec, actor_id))
        self.last_result_time = time.monotonic()
        self.round = set(self.handles)
        self._refill()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        ray = self.ray
        if self.nodes_seen:
            log.info("ray backend: actors ran on %d node(s); %d actor restart(s)", len(self.nodes_seen), self.restarts)
        for h in self.handles.values():
            try:
                ray.kill(h.actor, no_restart=True)
            except Exception:  # already gone with its node
                pass
        self.in_flight.clear()
        self.pending.clear()
        self.weights_ref = None
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()

    # ------------------------------------------------------------------ requests
    def _wanted(self, actor_id: int, h: _Handle, now: float) -> int:
        """Requests this actor should have outstanding now."""
        if now < h.retry_at:
            return 0
        if self.cfg.sync_weights:  # one unroll per actor per batch, sent after the publish
            return 1 if actor_id in self.round else 0
        return self.max_in_flight

    def _refill(self) -> None:
        now = time.monotonic()
        for actor_id, h in self.handles.items():
            while h.in_flight < self._wanted(actor_id, h, now):
                ref = h.actor.unroll.remote(self.version, [self.weights_ref])
                self.in_flight[ref] = (actor_id, h.generation)
                h.in_flight += 1

    def _collect(self, timeout: float) -> None:
        """Send what is due, then receive every finished request (waiting up to ``timeout`` s)."""
        ray = self.ray
        self._refill()
        refs = list(self.in_flight)
        if not refs:  # every actor is waiting out a retry delay
            time.sleep(min(timeout, RETRY_DELAY_S))
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and len(refs) > 1:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            self._receive(ref)
        now = time.monotonic()
        if not ready and now - self.last_result_time > STALL_WARNING_S:
            log.warning("no unroll from any Ray actor for %.0f s (cluster: %s); waiting for actors to be "
                        "(re)started", now - self.last_result_time, _cluster_summary(ray))
            self.last_result_time = now

    def _receive(self, ref) -> None:
        ray = self.ray
        actor_id, generation = self.in_flight.pop(ref)
        h = self.handles[actor_id]
        h.in_flight -= 1
        errors = ray.exceptions
        try:
            arrays, episodes, meta = ray.get(ref)
        except getattr(errors, "ActorUnavailableError", ()) as e:  # killed, or being restarted
            self._failed(actor_id, generation, e, fatal_count=False)
            return
        except errors.RayTaskError as e:  # unroll raised: replace the actor (fresh environments)
            self._failed(actor_id, generation, e, kill=True)
            return
        except errors.RayError as e:  # died with its process or node (Ray restarts it), or the result was lost
            self._failed(actor_id, generation, e)
            return
        self.last_result_time = time.monotonic()
        h.failures_in_a_row = 0
        if meta["incarnation"] != h.incarnation:
            if not h.suspect and (h.incarnation or meta["reconstructed"]):  # a restart we saw no error for
                self.restarts += 1
                log.warning("actor %d was restarted by Ray (restarts so far: %d)", actor_id, self.restarts)
            h.incarnation = meta["incarnation"]
            h.node_id = meta["node_id"]
            self.nodes_seen.add(h.node_id)
            log.info("actor %d running on node %s (pid %d)", actor_id, meta["node_id"], meta["pid"])
        elif h.suspect:  # the same incarnation answered: a transient error, not a restart
            self.restarts -= 1
            log.info("actor %d is back without a restart (restarts so far: %d)", actor_id, self.restarts)
        h.suspect = False
        h.timings = meta.get("timings", {})
        self.pending.append(arrays)
        self.pending_unrolls += len(arrays["version"])
        self.finished.extend(EpisodeStats(*e) for e in episodes)
        self.round.discard(actor_id)

    def _failed(self, actor_id: int, generation: int, error: Exception, kill: bool = False,
                fatal_count: bool = True) -> None:
        """A request failed: count the actor as restarted (once per loss), retry it shortly.

        ``kill``: the actor itself is fine but its environments are not: kill it so that Ray
        replaces it. ``fatal_count``: counts towards MAX_FAILED_STARTS ("the actor is
        restarting" does not: it says nothing about whether the replacement will work).
        """
        h = self.handles[actor_id]
        h.retry_at = time.monotonic() + RETRY_DELAY_S
        if generation != h.generation:
            return  # another request lost in the same failure: already seen
        h.generation += 1
        h.last_error = str(error).strip()
        if kill:  # every kill makes Ray start one more replacement
            h.suspect = True
            self.restarts += 1
            log.error("actor %d raised; replacing it with fresh environments (restarts so far: %d):\n%s",
                      actor_id, self.restarts, h.last_error)
            try:
                self.ray.kill(h.actor, no_restart=False)
            except Exception:
                pass
        elif not h.suspect:
            h.suspect = True
            self.restarts += 1
            log.warning("actor %d lost (%s: %s); Ray restarts it (restarts so far: %d)", actor_id,
                        type(error).__name__, _first_line(error), self.restarts)
        if not fatal_count:
            return
        h.failures_in_a_row += 1
        if h.failures_in_a_row >= MAX_FAILED_STARTS:
            last = h.last_error.splitlines()[-1] if h.last_error else type(error).__name__
            raise ActorFailure(f"actor {actor_id} failed {MAX_FAILED_STARTS} times in a row without producing "
                               f"an unroll; last error: {last}")

    # ------------------------------------------------------------------ learner side
    def get_batch(self, count: int | None = None) -> tuple[Batch, list[EpisodeStats]]:
        """The next ``count`` unrolls (default: a whole learner batch) and the episodes finished since."""
        if self.closed:
            raise RuntimeError("backend is closed")
        B = self.cfg.batch_size if count is None else count  # the source decides (0: episodes only)
        t0 = time.perf_counter()
        if self.cfg.sync_weights and not self.round:
            self.round = set(self.handles)  # a new batch: one unroll of every actor at the newest version
        while self.pending_unrolls < B:
            self._collect(timeout=1.0)
        self.wait_time += time.perf_counter() - t0
        # Chunks of envs_per_actor unrolls -> one [T+1, B] batch laid out as RolloutSpec.gather lays it;
        # unrolls beyond B wait for the next batch.
        stacked = {k: torch.from_numpy(np.concatenate([c[k] for c in self.pending])) for k in self.pending[0]}
        batch = self.spec.gather(stacked, list(range(B)))
        n = self.pending_unrolls
        self.pending = [{k: v[B:].numpy() for k, v in stacked.items()}] if n > B else []
        self.pending_unrolls = n - B
        finished, self.finished = self.finished, []
        return batch, finished

    def publish(self, model: torch.nn.Module, version: int) -> None:
        state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        self.weights_ref = self.ray.put(state)  # the previous version is freed once no request holds it
        self.version = version

    def info(self) -> dict[str, float]:
        nodes = {h.node_id for h in self.handles.values() if h.node_id}
        return {"actor_restarts": float(self.restarts), "learner_wait_s": self.wait_time,
                "ray_nodes": float(len(nodes))}

    def actor_nodes(self) -> dict[int, str]:
        """Actor id -> node id of its newest incarnation (once it produced an unroll)."""
        return {i: h.node_id for i, h in self.handles.items() if h.node_id}

    def actor_timings(self) -> dict[str, float]:
        """Cumulative seconds by stage, summed over the actors (for `impala bench`)."""
        return sum_timings(h.timings for h in list(self.handles.values()))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
