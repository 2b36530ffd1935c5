"""The two drivers of ``impala pbt``: they start the members, carry their reports to the
controller (:class:`~impala_rl.pbt.population.Population`) and its decisions back, and
restart a member that dies.

- **local** (:class:`LocalDriver`, the default): one spawned process per member on this
  machine (:func:`~impala_rl.pbt.member.member_main`), each talking to the controller in
  this process through a pipe. ``concurrent`` members run at a time; the others wait,
  stopped (SIGSTOP), and are rotated in every ``slice_s`` seconds, so that a population
  larger than the machine time-shares it. A member that dies is restarted from its last
  checkpoint (up to ``max_restarts`` times); the rest go on.
- **Ray** (:class:`RayDriver`, ``--ray-address``): one Ray actor per member
  (:class:`~impala_rl.pbt.member.RayMember`), placed by Ray's scheduler across the cluster
  (SPREAD), the controller a Ray actor on the driver's node. Reports carry the member's
  state itself (no shared file system needed); a member whose actor dies is restarted
  from the state of its last report.

Each returns how every member ended, by name; :func:`impala_rl.pbt.run.run_population`
picks one and writes the summary.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import wait
from pathlib import Path

from impala_rl.checkpoint import CHECKPOINT_NAME, load_checkpoint
from impala_rl.config import TrainConfig
from impala_rl.pbt.member import RayMember, member_main
from impala_rl.pbt.population import Population
from impala_rl.pbt.settings import PopulationConfig
from impala_rl.runtime.backends.ray_backend import connect

log = logging.getLogger("impala_rl")


class LocalDriver:
    """Member processes on this machine (module docstring)."""

    def __init__(self, pop: Population, cfgs: dict[str, TrainConfig], pcfg: PopulationConfig):
        self.pop, self.cfgs, self.pcfg = pop, cfgs, pcfg
        self.ctx = mp.get_context("spawn")
        self.procs: dict[str, tuple] = {}  # name -> (process, connection)
        self.finished: dict[str, dict] = {}
        self.restarts = {name: 0 for name in cfgs}
        self.paused: set[str] = set()
        self.stopping = False
        self.rules_dict = pop.state_dict()["rules"]

    def start(self, name: str, resume: bool) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=member_main, name=f"pbt-{name}",
                                args=(self.cfgs[name].to_dict(), name, self.rules_dict, child, resume))
        proc.start()
        child.close()
        self.procs[name] = (proc, parent)
        self.pop.member_event("started", name, pid=proc.pid, resumed=resume)

    def _signal(self, name: str, sig: int) -> None:
        proc = self.procs[name][0]
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass

    def _rotate(self) -> None:
        """Let ``concurrent`` members run and stop the rest, taking turns."""
        k = 0 if self.stopping else self.pcfg.concurrent
        alive = [n for n in self.procs if n not in self.finished]
        if not k or k >= len(alive):
            for name in list(self.paused):
                self._signal(name, signal.SIGCONT)
            self.paused.clear()
            return
        running = [n for n in alive if n not in self.paused]
        waiting = [n for n in alive if n in self.paused]
        order = waiting + running  # those that waited go first
        run_now = set(order[:k])
        for name in alive:
            if name in run_now and name in self.paused:
                self._signal(name, signal.SIGCONT)
                self.paused.discard(name)
            elif name not in run_now and name not in self.paused:
                self._signal(name, signal.SIGSTOP)
                self.paused.add(name)

    def run(self, resume: bool) -> dict[str, dict]:
        for name in self.cfgs:
            self.start(name, resume=resume)
        self._rotate()
        last_rotation = time.monotonic()
        try:
            while len(self.finished) < len(self.cfgs):
                live = {n: p for n, p in self.procs.items() if n not in self.finished}
                handles = {}
                for name, (proc, conn) in live.items():
                    handles[conn] = name
                    handles[proc.sentinel] = name
                for ready in wait(list(handles), timeout=1.0):
                    name = handles[ready]
                    if name in self.finished:
                        continue
                    proc, conn = self.procs[name]
                    if ready is conn:
                        try:
                            self._message(name, conn)
                        except (EOFError, OSError):
                            pass  # its sentinel tells next
                    elif not proc.is_alive():
                        self._ended(name, proc)
                if time.monotonic() - last_rotation >= self.pcfg.slice_s:
                    self._rotate()
                    last_rotation = time.monotonic()
        except KeyboardInterrupt:
            log.warning("interrupted: each member writes a final checkpoint ('impala pbt --resume %s' continues)",
                        self.pcfg.pop_dir)
            self.stop_all()
            raise
        return self.finished

    def _message(self, name: str, conn) -> None:
        kind, body = conn.recv()
        if kind == "ready":
            decision = self.pop.ready(name, body["fitness"], body["frames"], body["checkpoint"], body["hparams"])
            conn.send(decision)
        elif kind == "finished":
            self.finished[name] = body
            self.pop.member_event("finished", name, **body)
            self.procs[name][0].join()
            self._rotate()

    def _ended(self, name: str, proc) -> None:
        """A member process ended without saying it finished: restart it from its checkpoint."""
        proc.join()
        self.paused.discard(name)
        self.pop.member_event("died", name, exitcode=proc.exitcode)
        if self.restarts[name] >= self.pcfg.max_restarts:
            log.error("pbt: member %s died %d times; the population goes on without it", name,
                      self.restarts[name] + 1)
            self.finished[name] = {"stop_reason": "died", "exitcode": proc.exitcode}
            return
        self.restarts[name] += 1
        log.warning("pbt: member %s died (exit code %s); restarting it from its last checkpoint", name,
                    proc.exitcode)
        self.start(name, resume=True)
        self.pop.member_event("restarted", name, restarts=self.restarts[name])

    def stop_all(self) -> None:
        """SIGTERM to each member (a final checkpoint, as Ctrl-C does for ``impala train``)."""
        self.stopping = True
        for name, (proc, conn) in self.procs.items():
            if proc.is_alive():
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                self._signal(name, signal.SIGCONT)
        self.paused.clear()
        deadline = time.monotonic() + 120
        for name, (proc, conn) in self.procs.items():
            while proc.is_alive() and time.monotonic() < deadline:
                if conn.poll(0.2):  # answer a member that reports on its way out
                    try:
                        self._message(name, conn)
                    except (EOFError, OSError):
                        break
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()


class _RayController:
    """The :class:`Population` as a Ray actor on the driver's node (it writes the event log)."""

    def __init__(self, pop_dir: str):
        self.pop = Population.load(pop_dir)

    def ready(self, name, fitness, frames, state, hparams):
        return self.pop.ready(name, fitness, frames, state, hparams)

    def member_event(self, kind, name, **details):
        self.pop.member_event(kind, name, **details)

    def checkpoint_of(self, name):
        return self.pop.members[name].checkpoint

    def state(self):
        return self.pop.state_dict()


class RayDriver:
    """Members as Ray actors (module docstring)."""

    def __init__(self, pop: Population, cfgs: dict[str, TrainConfig], pcfg: PopulationConfig):
        self.pop, self.cfgs, self.pcfg = pop, cfgs, pcfg

    def run(self, resume: bool) -> dict[str, dict]:
        first = next(iter(self.cfgs.values()))
        ray, started = connect(dataclasses.replace(first, ray_address=self.pcfg.ray_address),
                               self.pcfg.member_cpus * len(self.cfgs))
        # Ray is optional (the Ray extra): its names are imported once connect() has found it.
        from ray.exceptions import RayActorError, WorkerCrashedError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        self.pop.save()
        controller = ray.remote(num_cpus=0)(_RayController).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(str(self.pcfg.pop_dir))
        member_cls = ray.remote(num_cpus=self.pcfg.member_cpus, max_restarts=0)(RayMember)
        rules_dict = self.pop.state_dict()["rules"]
        restarts = {name: 0 for name in self.cfgs}
        actors, pending, finished = {}, {}, {}

        def start(name: str, state) -> None:
            actors[name] = member_cls.options(scheduling_strategy="SPREAD").remote()
            pending[actors[name].run.remote(self.cfgs[name].to_dict(), name, rules_dict, controller, state)] = name
            ray.get(controller.member_event.remote("started", name, resumed=state is not None))

        try:
            for name, cfg in self.cfgs.items():
                state = None
                if resume and (Path(cfg.run_dir) / CHECKPOINT_NAME).exists():
                    state = load_checkpoint(cfg.run_dir)
                start(name, state)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(done[0])
                try:
                    finished[name] = ray.get(done[0])
                    ray.get(controller.member_event.remote("finished", name, **finished[name]))
                except (RayActorError, WorkerCrashedError) as e:
                    ray.get(controller.member_event.remote("died", name, error=str(e).splitlines()[0][:200]))
                    if restarts[name] >= self.pcfg.max_restarts:
                        finished[name] = {"stop_reason": "died"}
                        continue
                    restarts[name] += 1
                    state = ray.get(controller.checkpoint_of.remote(name))
                    start(name, state)
                    ray.get(controller.member_event.remote("restarted", name, restarts=restarts[name]))
            saved = ray.get(controller.state.remote())
        finally:
            for actor in actors.values():
                ray.kill(actor)
            if started:
                ray.shutdown()
        # The controller's decisions, now in this process (for the summary).
        fresh = Population.load(self.pcfg.pop_dir)
        self.pop.members, self.pop.events = fresh.members, saved["events"]
        return finished
