"""``impala train``: build everything, run the loop (:mod:`impala_rl.runtime.loop`) with
logging and checkpoint hooks, and leave a run directory behind."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from impala_rl.checkpoint import CHECKPOINT_NAME, SOURCE_STATE_NAME, load_arrays, save_arrays, save_checkpoint
from impala_rl.config import TrainConfig
from impala_rl.logging import RunLogger
from impala_rl.runfiles import CONFIG_NAME, SUMMARY_NAME
from impala_rl.runtime.backends import check_backend, make_backend
from impala_rl.runtime.backends.base import ActorFailure
from impala_rl.runtime.builders import build_learner, probe_env, resolve_device
from impala_rl.runtime.loop import every, run_loop, stop_at_return, stop_on_nonfinite
from impala_rl.runtime.play import evaluation_hook
from impala_rl.runtime.replay import make_replay_buffer
from impala_rl.runtime.sources import make_source

log = logging.getLogger("impala_rl")


FINISHED = ("done", "target")  # stop reasons of a run that ended as asked (exit 0)


@dataclass
class TrainResult:
    run_dir: Path
    frames: int
    version: int
    stop_reason: str  # 'done' | 'target' | 'interrupted' | 'nonfinite' | 'actor_failure' | 'crashed'
    last_metrics: dict
    actor_restarts: int
    mean_return: float
    elapsed_s: float


class Trainer:
    """Everything checked and built before anything is written to disk."""

    def __init__(self, cfg: TrainConfig, resume_state: dict | None = None):
        cfg.validate()
        check_backend(cfg.backend)
        self.cfg = cfg
        self.env_spec = probe_env(cfg)
        self.device = resolve_device(cfg.device)
        self.learner = build_learner(cfg, self.env_spec, device=self.device)
        self.spec = self.learner.spec
        self.replay = make_replay_buffer(cfg, self.spec)
        self.counters = {"actor_restarts": 0, "elapsed_s": 0.0}
        self.source = None  # the run's data source, once run() has made it
        self.resumed = resume_state is not None
        if resume_state is not None:
            self.learner.load_state_dict(resume_state)
            self.counters.update(resume_state.get("counters", {}))
        self.run_dir = Path(cfg.run_dir)

    def checkpoint(self, extra_restarts: int, elapsed: float) -> None:
        source_state = self.source.state_dict() if hasattr(self.source, "state_dict") else None
        if source_state:  # first, so that a checkpoint never points to an older source state than its own
            save_arrays(self.run_dir / SOURCE_STATE_NAME, {**source_state, "version": np.asarray(self.learner.version)})
        state = self.learner.state_dict()
        # The hyperparameters in force (population based training changes them while training).
        state["config"] = {**self.cfg.to_dict(), **self.learner.hyperparameters()}
        state["counters"] = {"actor_restarts": self.counters["actor_restarts"] + extra_restarts,
                             "elapsed_s": self.counters["elapsed_s"] + elapsed}
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)

    def run(self, extra_hooks=()) -> TrainResult:
        """Train to ``cfg.total_frames``. ``extra_hooks`` are called after the built-in ones
        (:mod:`impala_rl.runtime.loop`); :meth:`save_now` writes a checkpoint from inside one."""
        cfg, learner = self.cfg, self.learner
        torch.set_num_threads(cfg.resolved_learner_threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / CONFIG_NAME).write_text(cfg.to_json())
        logger = RunLogger(self.run_dir, cfg.total_frames, start_frames=learner.frames,
                           interval=cfg.log_interval, quiet=cfg.quiet, start_steps=learner.version,
                           start_elapsed=self.counters["elapsed_s"], tasks=cfg.tasks)
        if self.replay is not None:
            log.info(self.replay.describe(cfg.replayed_per_batch, cfg.batch_size))
        backend = make_backend(cfg, self.env_spec, learner)
        backend.publish(learner.model, learner.version)  # a resumed run's actors act as its current version
        start = logger.session_start  # one clock: the checkpoint's elapsed time is the logs' (a resume continues both)
        stop_reason = "done"
        restarts = 0
        crash: BaseException | None = None

        def log_step(step) -> None:
            nonlocal restarts
            info = backend.info()
            restarts = int(info.get("actor_restarts", 0))
            logger.record(step.frames, step.metrics, step.episodes, info)

        evaluation = [evaluation_hook(cfg, self.env_spec, learner)] if cfg.eval_interval else []
        target = [stop_at_return(cfg.stop_returns, logger.recent_windows())] if cfg.stop_returns else []
        hooks = [stop_on_nonfinite(learner, cfg.max_nonfinite), *evaluation, log_step, *target,
                 every(cfg.checkpoint_interval * 60, lambda: self.checkpoint(restarts, time.time() - start)),
                 *extra_hooks]
        self.save_now = lambda: self.checkpoint(restarts, time.time() - start)
        try:
            backend.start()
            self.source = make_source(cfg, backend, self.replay, agent=learner.agent)
            if self.resumed:
                self._restore_source()
            stop_reason = run_loop(self.source, learner, backend.publish, hooks, cfg.total_frames)
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            log.warning("interrupted: writing a final checkpoint")
        except ActorFailure as e:
            stop_reason = "actor_failure"
            log.error("stopping: %s", e)
        except Exception as e:  # a crash: say so in train.log and summary.json, then let it propagate
            stop_reason, crash = "crashed", e
            log.error("crashed: %s: %s (traceback in train.log)", type(e).__name__, e)
            _append_traceback(self.run_dir / "train.log")
        finally:
            backend.close()
            restarts = int(backend.info().get("actor_restarts", restarts))
            now = time.time()
            elapsed = now - start
            row = {"frames": learner.frames}
            try:
                self.checkpoint(restarts, elapsed)
                row = logger.flush(learner.frames, now=now)  # the last row's elapsed_s is the checkpoint's
                logger.close()
            except OSError as e:  # e.g. a full disk: the previous checkpoint (atomic writes) is intact
                stop_reason, crash = "crashed", crash or e
                log.error("crashed: could not write the final checkpoint or logs: %s", e)
        total_restarts = self.counters["actor_restarts"] + restarts
        mean_return = row.get("episode_return", float("nan"))
        summary = {"stop_reason": stop_reason, "frames": learner.frames, "learner_steps": learner.version,
                   "elapsed_s": round(elapsed, 1), "fps": round((row["frames"] - logger.start_frames) / max(elapsed, 1e-9), 1),
                   "mean_return": mean_return if math.isfinite(mean_return) else None,
                   "actor_restarts": total_restarts, "nonfinite_total": learner.nonfinite_total}
        try:
            (self.run_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
        except OSError as e:
            log.error("could not write %s: %s", SUMMARY_NAME, e)
        if crash is not None:
            raise crash
        log.info("finished (%s): %d frames, %d learner steps, mean return %s, actor restarts %d, run dir %s",
                 stop_reason, learner.frames, learner.version, summary["mean_return"], total_restarts,
                 os.fspath(self.run_dir))
        return TrainResult(self.run_dir, learner.frames, learner.version, stop_reason, row, total_restarts,
                           mean_return, elapsed)


    def _restore_source(self) -> None:
        """A resumed run's source takes back the state saved with its checkpoint, when it has one
        (Rainbow's replay); otherwise, or when the two do not go together, it says that it starts afresh."""
        if not hasattr(self.source, "load_state_dict"):
            return
        path = self.run_dir / SOURCE_STATE_NAME
        if not path.exists():
            log.info("resume: no saved replay (%s) in the run directory: the replay refills", SOURCE_STATE_NAME)
            return
        state = load_arrays(path)
        saved = int(state.pop("version", -1))
        if saved != self.learner.version:
            log.warning("resume: %s was saved at update %d, the checkpoint at %d: the replay refills",
                        SOURCE_STATE_NAME, saved, self.learner.version)
            return
        try:
            self.source.load_state_dict(state)
        except ValueError as e:
            log.warning("resume: %s does not fit this run (%s): the replay refills", SOURCE_STATE_NAME, e)


def _append_traceback(path: Path) -> None:
    """The current exception's traceback, for the run's log file only (stderr gets one line)."""
    import traceback

    try:
        with open(path, "a") as f:
            f.write(traceback.format_exc())
    except OSError:
        pass
