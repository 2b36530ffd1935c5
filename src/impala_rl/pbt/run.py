"""``impala pbt``: a population of normal training runs under one controller.

Each member is an ``impala train`` run with its own run directory
(``<pop_dir>/members/<name>``) and one extra hook on the training loop
(:func:`pbt_hook`): every ``ready_episodes`` episodes (and ``ready_frames`` frames) it
writes its checkpoint, reports its fitness to the controller (:class:`~impala_rl.pbt.population.Population`) and applies the
answer (exploit: copy another member's weights, optimiser state and hyperparameters;
explore: perturb) to its running learner, without a restart.

Two drivers run the members:

- **local** (the default): one spawned process per member on this machine, each talking to
  the controller in this process through a pipe. ``concurrent`` members run at a time; the
  others wait, stopped (SIGSTOP), and are rotated in every ``slice_s`` seconds, so that a
  population larger than the machine time-shares it. A member that dies is restarted from
  its last checkpoint (up to ``max_restarts`` times); the rest go on.
- **Ray** (``--ray-address``): one Ray actor per member, placed by Ray's scheduler across
  the cluster (SPREAD), the controller a Ray actor on the driver's node. Reports carry the
  member's state itself (no shared file system needed); a member whose actor dies is
  restarted from the state of its last report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

from impala_rl.checkpoint import CHECKPOINT_NAME, load_checkpoint
from impala_rl.config import TrainConfig
from impala_rl.pbt.member import exploit
from impala_rl.pbt.population import Decision, Population, Window, rules_from_dict
from impala_rl.pbt.rules import Rules, is_ready
from impala_rl.runfiles import MEMBERS_DIR, read_episodes

log = logging.getLogger("impala_rl")


# ----------------------------------------------------------------------------- the member's side
def pbt_hook(trainer, name: str, rules: Rules, ready: Callable[..., Decision],
             load: Callable[[object], dict]) -> Callable:
    """The loop hook that makes a training run a population member.

    ``ready(name, fitness, frames, hparams, trainer)`` asks the controller; ``load`` turns the
    answer's checkpoint handle into the source member's state."""
    window = Window(trainer.cfg.tasks, limit=rules.ready_episodes)
    last_ready = trainer.learner.frames

    def hook(step) -> Optional[str]:
        nonlocal last_ready
        for episode in step.episodes:
            window.add(episode.task, episode.ret)
        if not is_ready(len(window), step.frames - last_ready, rules):
            return None
        last_ready = step.frames
        trainer.save_now()  # what another member copies when it exploits this one
        decision = ready(name, window.fitness(), step.frames, trainer.learner.hyperparameters(), trainer)
        if decision.source is not None:
            exploit(trainer.learner, load(decision.checkpoint))
            log.info("pbt: %s copied %s", name, decision.source)
        trainer.learner.set_hyperparameters(**decision.hparams)
        window.clear()
        return None
    return hook


def member_config(cfg_dict: dict) -> TrainConfig:
    return TrainConfig.from_dict(cfg_dict)


def _build_trainer(cfg: TrainConfig, resume_state: dict | None):
    from impala_rl.runtime.train import Trainer

    return Trainer(cfg, resume_state=resume_state)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def member_main(cfg_dict: dict, name: str, rules_dict: dict, conn, resume: bool) -> None:
    """Body of a local member process: train, asking the controller through ``conn``."""
    from impala_rl.logging import setup_logging

    os.setpgrp()  # its own process group: the driver stops, continues and signals it with its actors
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when members stop
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    cfg = member_config(cfg_dict)
    run_dir = Path(cfg.run_dir)
    state = None
    if resume and (run_dir / CHECKPOINT_NAME).exists():
        state = load_checkpoint(run_dir)
        cfg = dataclasses.replace(TrainConfig.from_dict(state["config"]), total_frames=cfg.total_frames,
                                  run_dir=cfg.run_dir, quiet=True)
    elif run_dir.exists():  # died before its first checkpoint: start it again from nothing
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir, quiet=True)
    trainer = _build_trainer(cfg, state)

    def ready(name, fitness, frames, hparams, trainer):
        conn.send(("ready", {"fitness": fitness, "frames": frames, "hparams": hparams,
                             "checkpoint": str(run_dir / CHECKPOINT_NAME)}))
        return conn.recv()

    result = trainer.run([pbt_hook(trainer, name, rules_from_dict(rules_dict), ready, load_checkpoint)])
    conn.send(("finished", {"frames": result.frames, "stop_reason": result.stop_reason,
                            "mean_return": result.mean_return}))


# ----------------------------------------------------------------------------- the population
@dataclasses.dataclass
class PopulationConfig:
    """What ``impala pbt`` was asked for (saved in population.json's settings)."""

    pop_dir: str
    population: int = 4
    concurrent: int = 0  # members running at a time; 0 = all
    slice_s: float = 60.0
    max_restarts: int = 3
    ray_address: str = ""  # "" = local processes; "local" = a private Ray; else a cluster
    member_cpus: float = 1.0


def member_names(n: int) -> list[str]:
    return [f"m{i}" for i in range(n)]


def new_population(base: TrainConfig, pcfg: PopulationConfig, rules: Rules,
                   initial: dict[str, list[float]]) -> tuple[Population, dict[str, TrainConfig]]:
    """Member configs (seed + i, its own run directory, the ``initial`` values given round
    robin) and the controller, written to ``pcfg.pop_dir``."""
    from impala_rl.runtime.learner import mutable_hyperparameters

    pop_dir = Path(pcfg.pop_dir)
    cfgs = {}
    for i, name in enumerate(member_names(pcfg.population)):
        values = {k: v[i % len(v)] for k, v in initial.items()}
        cfgs[name] = dataclasses.replace(base, seed=base.seed + i, quiet=True,
                                         run_dir=str(pop_dir / MEMBERS_DIR / name), **values).validate()
    hparams = {name: {k: getattr(c, k) for k in mutable_hyperparameters(c)} for name, c in cfgs.items()}
    settings = {"population": dataclasses.asdict(pcfg), "members": {n: c.to_dict() for n, c in cfgs.items()}}
    (pop_dir / MEMBERS_DIR).mkdir(parents=True, exist_ok=True)
    pop = Population(hparams, rules, seed=base.seed, out_dir=pop_dir, settings=settings)
    pop.save()
    return pop, cfgs


def load_population(pop_dir: str | os.PathLike) -> tuple[Population, dict[str, TrainConfig], PopulationConfig]:
    pop = Population.load(pop_dir)
    try:
        cfgs = {n: TrainConfig.from_dict(d) for n, d in pop.settings["members"].items()}
        pcfg = PopulationConfig(**pop.settings["population"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{pop_dir} is not a population this version can read: {e}") from None
    return pop, cfgs, pcfg


def run_population(pop: Population, cfgs: dict[str, TrainConfig], pcfg: PopulationConfig,
                   resume: bool = False) -> dict:
    """Run every member to its ``total_frames``; returns the summary (also ``summary.json``)."""
    driver = RayDriver if pcfg.ray_address else LocalDriver
    finished = driver(pop, cfgs, pcfg).run(resume)
    return summarize(pop, cfgs, pcfg, finished)


def summarize(pop: Population, cfgs, pcfg: PopulationConfig, finished: dict[str, dict]) -> dict:
    finals = {}
    for name, cfg in cfgs.items():
        try:
            _, returns = read_episodes(cfg.run_dir)
            finals[name] = float(returns[-100:].mean()) if len(returns) else None
        except (FileNotFoundError, ValueError):
            finals[name] = None
    scored = [v for v in finals.values() if v is not None]
    summary = {"members": {n: {"final_100_episode_mean": finals[n], "hparams": pop.members[n].hparams,
                               "parent": pop.members[n].parent, **finished.get(n, {})} for n in cfgs},
               "best": max(scored) if scored else None, "median": statistics.median(scored) if scored else None,
               "events": pop.events}
    (Path(pcfg.pop_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class LocalDriver:
    """Member processes on this machine (module docstring)."""

    def __init__(self, pop: Population, cfgs: dict[str, TrainConfig], pcfg: PopulationConfig):
        import multiprocessing as mp

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
        from multiprocessing.connection import wait

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


class _RayMember:
    """One member as a Ray actor."""

    def run(self, cfg_dict: dict, name: str, rules_dict: dict, controller, state: dict | None) -> dict:
        import ray

        from impala_rl.runtime.learner import mutable_hyperparameters

        cfg = member_config(cfg_dict)
        if state is not None:  # the hyperparameters it had then
            cfg = dataclasses.replace(cfg, **{k: state["config"][k] for k in mutable_hyperparameters(cfg)})
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        trainer = _build_trainer(cfg, state)

        def ready(name, fitness, frames, hparams, trainer):
            own = {**trainer.learner.state_dict(), "config": {**trainer.cfg.to_dict(), **hparams}}
            return ray.get(controller.ready.remote(name, fitness, frames, own, hparams))

        result = trainer.run([pbt_hook(trainer, name, rules_from_dict(rules_dict), ready, lambda s: s)])
        return {"frames": result.frames, "stop_reason": result.stop_reason, "mean_return": result.mean_return}


class RayDriver:
    """Members as Ray actors (module docstring)."""

    def __init__(self, pop: Population, cfgs: dict[str, TrainConfig], pcfg: PopulationConfig):
        self.pop, self.cfgs, self.pcfg = pop, cfgs, pcfg

    def run(self, resume: bool) -> dict[str, dict]:
        from impala_rl.runtime.backends.ray_backend import connect

        first = next(iter(self.cfgs.values()))
        ray, started = connect(dataclasses.replace(first, ray_address=self.pcfg.ray_address),
                               self.pcfg.member_cpus * len(self.cfgs))
        from ray.exceptions import RayActorError, WorkerCrashedError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        self.pop.save()
        controller = ray.remote(num_cpus=0)(_RayController).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(str(self.pcfg.pop_dir))
        member_cls = ray.remote(num_cpus=self.pcfg.member_cpus, max_restarts=0)(_RayMember)
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
