"""Local backend: actor processes, rollout slots in shared memory, no service to start.

Transport (torchbeast-style, made kill-safe):

- Rollout slots are allocated once in shared memory (``RolloutSpec.allocate``); only
  slot *indices* travel between processes, never observations.
- Each actor has its own duplex pipe to the learner process; no lock is shared between
  actors, so an actor killed at any instant (SIGKILL included) cannot deadlock the
  others. A collector thread in the learner process owns the bookkeeping: it grants free
  slot indices to actors (an actor holds at most two unrolls' worth, so it keeps acting
  while the learner trains: back-pressure bounds memory), receives full ones, and
  restarts actors that die, returning the slots they held to the free list. Free slots
  go first to the actor holding fewest (then to the one served longest ago): granting
  in actor order let actor 0 take every freed slot while actor 1 idled (issue 19).
- Pacing (on by default; ``--no-pace-actors`` turns it off):
  the slots granted or full, not yet taken by the learner, are capped by a window. Each time the learner takes a batch, the window
  shrinks by one actor's unroll if a spare batch was already waiting and grows by one if
  the learner had to wait, never below one batch nor one unroll in flight per actor. A
  learner-bound run settles where the next batches are acted while the learner trains on
  this one (policy lag 1-2 updates, not num_slots / batch: 5 for the Atari preset); an
  actor-bound run keeps every slot in use, as without it.
- Weights are published into one shared-memory copy guarded by a sequence counter
  (a seqlock: no lock to die holding); actors pick up the newest version at the start
  of each unroll. In sync mode they wait for a version newer than their last unroll's.

Processes are started with the ``spawn`` method: forking after torch started its
OpenMP pool can hang in the first convolution.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import traceback
from collections import deque
from multiprocessing import connection

import torch
import torch.multiprocessing as mp

from impala_rl.agents import make_agent
from impala_rl.config import TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.backends.base import MAX_FAILED_STARTS, ActorFailure, sum_timings
from impala_rl.runtime.builders import build_actor, rollout_spec
from impala_rl.runtime.inference import InferenceServer, RemoteForward
from impala_rl.runtime.types import Batch

log = logging.getLogger("impala_rl")



class SharedWeights:
    """One shared-memory copy of the weights with a version, published under a seqlock.

    ``control`` holds [sequence, version, stop]: the sequence is odd while a publish is
    being written, so a reader that saw the same even sequence before and after copying
    has a consistent snapshot.
    """

    def __init__(self, model: torch.nn.Module):
        self.tensors = {k: v.detach().to("cpu").clone().share_memory_() for k, v in model.state_dict().items()}
        self.control = torch.zeros(3, dtype=torch.int64).share_memory_()

    @property
    def version(self) -> int:
        return int(self.control[1])

    @property
    def stopping(self) -> bool:
        return bool(self.control[2])

    def publish(self, model: torch.nn.Module, version: int) -> None:
        state = model.state_dict()
        self.control[0] += 1
        for k, t in self.tensors.items():
            t.copy_(state[k])
        self.control[1] = version
        self.control[0] += 1

    def load_into(self, model: torch.nn.Module) -> int:
        """Copy the newest consistent weights into ``model``; return their version."""
        while True:
            seq = int(self.control[0])
            if seq % 2:
                time.sleep(0)
                continue
            version = int(self.control[1])
            model.load_state_dict(self.tensors)
            if int(self.control[0]) == seq:
                return version


def _actor_main(actor_id: int, restart: int, cfg: TrainConfig, env_spec: EnvSpec, buffers: Batch,
                weights: SharedWeights, conn, inference_channel=None) -> None:
    """Body of an actor process. Grants arrive on ``conn`` as lists of slot indices; None stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner process handles Ctrl-C and stops us
    torch.set_num_threads(1)
    try:
        forward = RemoteForward(inference_channel) if inference_channel is not None else None
        actor = build_actor(cfg, env_spec, actor_id, restart, forward=forward)
        granted: deque[int] = deque()
        version = -1
        waits = {"wait_slots_s": 0.0, "weights_s": 0.0}
        while not weights.stopping:
            t0 = time.perf_counter()
            while len(granted) < actor.num_envs:
                msg = conn.recv()
                if msg is None:
                    return
                granted.extend(msg)
            if cfg.sync_weights:
                while weights.version <= version and not weights.stopping:
                    time.sleep(0.0005)
            t1 = time.perf_counter()
            if forward is not None and not cfg.sync_step:
                version = weights.version  # the server's weights act; the actor's copy is unused
            elif weights.version != version:  # (sync step: the copy computes truncation bootstrap values)
                version = weights.load_into(actor.model)
            waits["wait_slots_s"] += t1 - t0
            waits["weights_s"] += time.perf_counter() - t1
            slots = [granted.popleft() for _ in range(actor.num_envs)]
            finished = actor.unroll(buffers, slots, version)
            conn.send(("full", slots, [(e.ret, e.length, e.task) for e in finished], {**actor.timings, **waits}))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the learner went away
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            pass
        raise SystemExit(1)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT while starting a child (an ignored signal stays ignored across exec, so
    a Ctrl-C to the process group cannot interrupt an actor still bootstrapping). Only the
    main thread can change signal handlers; restarts from the collector thread skip it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_script_hidden():
    """Start a spawned child without re-running the user's ``__main__`` script in it.

    An actor needs nothing from that script (its target lives in this package), and
    re-running a script that has no ``if __name__ == "__main__":`` guard would start
    training again inside the actor. multiprocessing re-runs ``__main__`` only when it has
    a ``__file__`` or ``__spec__``; hide both while the child starts (as in a notebook).
    An environment class defined in the script itself is then not importable by actors:
    define it in a module.
    """
    import sys

    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
        try:
            main.__dict__.pop("__file__", None)
            if "__spec__" in saved:
                main.__dict__["__spec__"] = None
            yield
        finally:
            main.__dict__.update(saved)


def grant_order(held: dict[int, int], last_served: dict[int, int]) -> list[int]:
    """Actor ids in the order free slots should go to them: fewest slots held first, then
    the one served longest ago (never-served first), so no actor starves while another
    is refilled every time the learner frees a batch."""
    return sorted(held, key=lambda a: (held[a], last_served.get(a, -1)))


class _ActorHandle:
    def __init__(self, process, conn, restart: int):
        self.process = process
        self.conn = conn
        self.restart = restart
        self.held: set[int] = set()
        self.unrolls = 0
        self.served = -1  # grant sequence number of its last grant (grant_order's tie-break)
        self.last_error = ""
        self.timings: dict[str, float] = {}  # cumulative seconds by stage, as the actor last reported


class LocalBackend:
    """Runs ``cfg.num_actors`` actor processes feeding the learner through shared memory."""

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, model: torch.nn.Module):
        self.cfg = cfg
        self.env_spec = env_spec
        self.spec = rollout_spec(cfg, env_spec)
        self.pin_memory = next(model.parameters()).is_cuda  # learner on CUDA: async host-to-device copies
        self.ctx = mp.get_context("spawn")
        self.buffers = self.spec.allocate(cfg.slots, shared=True)
        self.weights = SharedWeights(model)
        self.cond = threading.Condition()
        self.free: deque[int] = deque(range(cfg.slots))
        self.full: deque[int] = deque()
        self.finished: list[EpisodeStats] = []
        self.actors: dict[int, _ActorHandle] = {}
        self.restarts = 0
        self.grants = 0  # grant sequence
        self.failed_starts: dict[int, int] = {}
        self.fatal: str | None = None
        self.wait_time = 0.0
        # pacing: slots granted or full, not yet taken, may not exceed the window (see the module doc)
        self.pace = cfg.pace_actors and not cfg.sync_weights
        self.window = cfg.slots
        self.closed = False
        self.server: InferenceServer | None = None
        if cfg.central_inference:
            device = next(model.parameters()).device
            self.server = InferenceServer(
                self.spec, model, device, max_batch=cfg.total_envs,
                # sync step: every step's forward pass waits for all environments (lock-step)
                min_batch=cfg.total_envs if cfg.sync_step else cfg.inference_min_batch or max(1, cfg.total_envs // 2),
                timeout_s=1.0 if cfg.sync_step else cfg.inference_timeout_ms / 1000,
                acting_model=make_agent(cfg, env_spec).acting_model)
        self._collector = threading.Thread(target=self._collect, name="impala-collector", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for actor_id in range(self.cfg.num_actors):
            self._spawn(actor_id, restart=0)
        self._collector.start()

    def _spawn(self, actor_id: int, restart: int) -> None:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        channel = self.server.channel(actor_id, self.cfg.envs_per_actor, self.ctx) if self.server else None
        process = self.ctx.Process(
            target=_actor_main, name=f"impala-actor-{actor_id}",
            args=(actor_id, restart, self.cfg, self.env_spec, self.buffers, self.weights, child_conn, channel),
            daemon=True)
        with _sigint_ignored(), _main_script_hidden():  # the child ignores Ctrl-C, even while it imports torch
            process.start()
        child_conn.close()
        if channel is not None:
            channel.conn.close()
        log.info("actor %d started (pid %d)", actor_id, process.pid)
        with self.cond:
            self.actors[actor_id] = _ActorHandle(process, parent_conn, restart)
            self._grant(actor_id)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.weights.control[2] = 1
        with self.cond:
            for handle in self.actors.values():
                try:
                    handle.conn.send(None)
                except (OSError, ValueError):
                    pass
            self.cond.notify_all()
        if self._collector.is_alive():
            self._collector.join(timeout=5)
        deadline = time.monotonic() + 5
        for handle in self.actors.values():
            handle.process.join(timeout=max(0.0, deadline - time.monotonic()))
        for handle in self.actors.values():
            if handle.process.is_alive():
                handle.process.kill()
                handle.process.join(timeout=5)
            handle.conn.close()
        if self.server is not None:
            self.server.close()

    # ------------------------------------------------------------------ slot bookkeeping (under self.cond)
    def _grant(self, actor_id: int, limit: int = 2) -> bool:
        """Give an actor slots for up to ``limit`` more unrolls while it holds fewer than two
        unrolls' worth; True if it got any."""
        handle = self.actors[actor_id]
        n = self.cfg.envs_per_actor
        granted = 0
        while (granted < limit and len(handle.held) < 2 * n and len(self.free) >= n
               and self._in_window(n) and handle.process.is_alive()):
            granted += 1
            slots = [self.free.popleft() for _ in range(n)]
            handle.held.update(slots)
            self.grants += 1
            handle.served = self.grants
            try:
                handle.conn.send(slots)
            except (OSError, ValueError):
                break  # dead: _reap returns the slots
        return granted > 0

    def _in_window(self, n: int) -> bool:
        """True if ``n`` more slots may be granted: without pacing, always (free slots permitting)."""
        if not self.pace:
            return True
        committed = len(self.full) + sum(len(h.held) for h in self.actors.values())
        return committed + n <= self.window

    def _widen(self, count: int) -> None:
        """The learner must wait for ``count`` full unrolls (under self.cond): one actor's
        unroll larger, and at least enough to grant what the batch still lacks beyond the
        slots full or held (no stall whatever the window had shrunk to); then grant."""
        n = self.cfg.envs_per_actor
        held = sum(len(h.held) for h in self.actors.values())
        lacking = max(0, count - len(self.full) - held)
        self.window = min(self.cfg.slots, max(self.window + n, len(self.full) + held + -(-lacking // n) * n))
        self._grant_all()

    def _narrow(self, count: int) -> None:
        """After the learner took ``count`` unrolls without waiting (under self.cond): one actor's
        unroll smaller if another whole batch is already waiting; never below one batch
        (rounded up to whole unrolls) nor below one unroll in flight per actor (a floor of one
        batch let only one of Pong's two actors act at a time: the learner waited for it 20%
        of the time, and trained 20% slower)."""
        n = self.cfg.envs_per_actor
        floor = max(-(-count // n) * n, self.cfg.total_envs)
        if len(self.full) >= count:
            self.window = self.window - n
        self.window = max(floor, self.window)

    def _grant_all(self) -> None:
        """Hand out free slots fairly (grant_order), one unroll's worth per turn."""
        while True:
            before = len(self.free)
            order = grant_order({a: len(h.held) for a, h in self.actors.items()},
                                {a: h.served for a, h in self.actors.items()})
            for actor_id in order:
                if self._grant(actor_id, limit=1):
                    break
            if len(self.free) == before:
                return

    # ------------------------------------------------------------------ collector thread
    def _collect(self) -> None:
        # After a fatal failure the run is over: the failed actor's pipe is closed, so stop
        # waiting on it (and restart nothing); close() ends the other actors.
        while not self.closed and self.fatal is None:
            handles = dict(self.actors)
            waitables = {}
            for actor_id, h in handles.items():
                waitables[h.conn] = actor_id
                waitables[h.process.sentinel] = actor_id
            ready = connection.wait(list(waitables), timeout=0.2)
            dead = set()
            for obj in ready:
                actor_id = waitables[obj]
                if obj is handles[actor_id].conn:
                    if not self._drain(actor_id):
                        dead.add(actor_id)
                else:
                    dead.add(actor_id)
            for actor_id in dead:
                if not self.closed and self.fatal is None:
                    self._reap(actor_id)

    def _drain(self, actor_id: int) -> bool:
        """Read every pending message of an actor; False once its pipe is closed."""
        handle = self.actors[actor_id]
        try:
            while handle.conn.poll():
                msg = handle.conn.recv()
                if msg[0] == "full":
                    _, slots, episodes, handle.timings = msg
                    with self.cond:
                        handle.held.difference_update(slots)
                        self.full.extend(slots)
                        self.finished.extend(EpisodeStats(*e) for e in episodes)
                        handle.unrolls += 1
                        self.failed_starts[actor_id] = 0
                        self._grant_all()  # keep actors busy even while the learner waits for B unrolls
                        self.cond.notify_all()
                elif msg[0] == "error":
                    handle.last_error = msg[1]
                    log.error("actor %d raised:\n%s", actor_id, msg[1].rstrip())
        except (EOFError, OSError):
            return False
        return True

    def _reap(self, actor_id: int) -> None:
        """An actor died: return its slots, restart it with fresh environments."""
        handle = self.actors[actor_id]
        self._drain(actor_id)
        handle.process.join(timeout=1)
        code = handle.process.exitcode
        handle.conn.close()
        with self.cond:
            self.free.extend(handle.held)
            handle.held.clear()
        if handle.unrolls == 0:
            self.failed_starts[actor_id] = self.failed_starts.get(actor_id, 0) + 1
        if self.failed_starts.get(actor_id, 0) >= MAX_FAILED_STARTS:
            last = handle.last_error.strip().splitlines()[-1] if handle.last_error.strip() else f"exit code {code}"
            with self.cond:
                self.fatal = (f"actor {actor_id} died {MAX_FAILED_STARTS} times before producing an unroll; "
                              f"last error: {last}")
                self.cond.notify_all()
            return
        self.restarts += 1
        log.warning("actor %d died (exit code %s); restarting it with fresh environments (restarts so far: %d)",
                    actor_id, code, self.restarts)
        self._spawn(actor_id, restart=handle.restart + 1)
        with self.cond:
            self._grant_all()

    # ------------------------------------------------------------------ learner side
    def get_batch(self, count: int | None = None) -> tuple[Batch, list[EpisodeStats]]:
        """The next ``count`` full unrolls (default: a whole learner batch) and the episodes finished since."""
        B = self.cfg.batch_size if count is None else count  # the source decides (0: episodes only)
        t0 = time.perf_counter()
        with self.cond:
            waited = len(self.full) < B
            if waited and self.pace:
                self._widen(B)
            while len(self.full) < B:
                if self.fatal:
                    raise ActorFailure(self.fatal)
                if self.closed:
                    raise RuntimeError("backend is closed")
                self.cond.wait(timeout=1.0)
            idx = [self.full.popleft() for _ in range(B)]
            if self.pace and not waited:
                self._narrow(B)
        self.wait_time += time.perf_counter() - t0
        batch = self.spec.gather(self.buffers, idx, pin_memory=self.pin_memory)
        with self.cond:
            self.free.extend(idx)
            finished, self.finished = self.finished, []
            self._grant_all()
        return batch, finished

    def publish(self, model: torch.nn.Module, version: int) -> None:
        if self.server is not None:
            self.server.update(model)
        self.weights.publish(model, version)

    def info(self) -> dict[str, float]:
        return {"actor_restarts": float(self.restarts), "learner_wait_s": self.wait_time,
                "actor_window": float(self.window)}

    def actor_pids(self) -> dict[int, int]:
        """Process id of each live actor (for `impala bench`'s CPU shares)."""
        return {actor_id: handle.process.pid for actor_id, handle in list(self.actors.items())}

    def actor_timings(self) -> dict[str, float]:
        """Cumulative seconds by stage, summed over the live actors (for `impala bench`)."""
        return sum_timings(handle.timings for handle in list(self.actors.values()))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
