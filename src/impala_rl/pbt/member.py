"""A population member's side of PBT: a normal training run with one extra loop hook.

Each member is an ``impala train`` run with its own run directory
(``<pop_dir>/members/<name>``) and one extra hook on the training loop
(:func:`pbt_hook`): every ``ready_episodes`` episodes (and ``ready_frames`` frames) it
writes its checkpoint, reports its fitness to the controller
(:class:`~impala_rl.pbt.population.Population`) and applies the answer to its running
learner between two updates, without a restart: exploit (:func:`exploit`: copy another
member's weights, optimiser state and hyperparameters), then explore (the controller's
:func:`~impala_rl.pbt.rules.explore`, applied with
:meth:`~impala_rl.runtime.learner.Learner.set_hyperparameters`).

The bodies that run a member, one per driver (:mod:`impala_rl.pbt.drivers`):
:func:`member_main` in a local process, asking the controller through a pipe, and
:class:`RayMember` in a Ray actor, asking the controller actor.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Callable, Optional

from impala_rl.checkpoint import CHECKPOINT_NAME, load_checkpoint
from impala_rl.config import TrainConfig
from impala_rl.logging import setup_logging
from impala_rl.pbt.population import Decision, Window, rules_from_dict
from impala_rl.pbt.rules import Rules, is_ready
from impala_rl.runtime.learner import mutable_hyperparameters
from impala_rl.runtime.train import Trainer

log = logging.getLogger("impala_rl")


# ----------------------------------------------------------------------------- what PBT does to a learner
def exploit(learner, source: dict) -> dict[str, float]:
    """Copy another member's weights, optimiser state, agent state and hyperparameters into ``learner``.

    ``source`` is that member's checkpoint (:meth:`Learner.state_dict` plus its ``config``
    dict). The member keeps its own frame count and policy version: they count its own
    experience and updates. Returns the hyperparameters now in force."""
    learner.model.load_state_dict(source["model"])
    # A deep copy: torch's load_state_dict keeps tensors that need no cast, so a live source's
    # optimiser state would otherwise be shared (and stepped twice).
    learner.optimizer.load_state_dict(copy.deepcopy(source["optimizer"]))
    learner.agent.load_state_dict(copy.deepcopy(source.get("agent", {})))  # e.g. a target network
    hparams = {name: source["config"][name] for name in learner.hyperparameters()}
    learner.set_hyperparameters(**hparams)
    return hparams


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


# ----------------------------------------------------------------------------- running a member
def member_config(cfg_dict: dict) -> TrainConfig:
    return TrainConfig.from_dict(cfg_dict)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def member_main(cfg_dict: dict, name: str, rules_dict: dict, conn, resume: bool) -> None:
    """Body of a local member process: train, asking the controller through ``conn``."""
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
    trainer = Trainer(cfg, resume_state=state)

    def ready(name, fitness, frames, hparams, trainer):
        conn.send(("ready", {"fitness": fitness, "frames": frames, "hparams": hparams,
                             "checkpoint": str(run_dir / CHECKPOINT_NAME)}))
        return conn.recv()

    result = trainer.run([pbt_hook(trainer, name, rules_from_dict(rules_dict), ready, load_checkpoint)])
    conn.send(("finished", {"frames": result.frames, "stop_reason": result.stop_reason,
                            "mean_return": result.mean_return}))


class RayMember:
    """One member as a Ray actor: reports carry its state itself (no shared file system)."""

    def run(self, cfg_dict: dict, name: str, rules_dict: dict, controller, state: dict | None) -> dict:
        import ray  # optional (the Ray extra); it is there wherever this actor runs

        cfg = member_config(cfg_dict)
        if state is not None:  # the hyperparameters it had then
            cfg = dataclasses.replace(cfg, **{k: state["config"][k] for k in mutable_hyperparameters(cfg)})
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        trainer = Trainer(cfg, resume_state=state)

        def ready(name, fitness, frames, hparams, trainer):
            own = {**trainer.learner.state_dict(), "config": {**trainer.cfg.to_dict(), **hparams}}
            return ray.get(controller.ready.remote(name, fitness, frames, own, hparams))

        result = trainer.run([pbt_hook(trainer, name, rules_from_dict(rules_dict), ready, lambda s: s)])
        return {"frames": result.frames, "stop_reason": result.stop_reason, "mean_return": result.mean_return}
