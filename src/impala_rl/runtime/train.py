"""The training loop: backend -> batch -> learner step -> publish -> log -> checkpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from impala_rl.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.logging import RunLogger
from impala_rl.runtime.backends.base import ActorFailure
from impala_rl.runtime.builders import build_model, probe_env, rollout_spec
from impala_rl.runtime.learner import Learner

log = logging.getLogger("impala_rl")


@dataclass
class TrainResult:
    run_dir: Path
    frames: int
    version: int
    stop_reason: str  # 'done' | 'interrupted' | 'nonfinite' | 'actor_failure'
    last_metrics: dict
    actor_restarts: int
    mean_return: float
    elapsed_s: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def make_backend(cfg: TrainConfig, env_spec, model, learner: Learner | None = None):
    if cfg.backend == "serial":
        from impala_rl.runtime.backends.serial import SerialBackend
        return SerialBackend(cfg, env_spec, model)
    if cfg.backend == "local":
        from impala_rl.runtime.backends.local import LocalBackend
        return LocalBackend(cfg, env_spec, model)
    if cfg.backend == "ray":
        if cfg.num_learners > 1:  # this process is learner 0 of N; wires the gradient all-reduce into `learner`
            from impala_rl.runtime.distributed import MultiLearnerBackend
            return MultiLearnerBackend(cfg, env_spec, learner)
        from impala_rl.runtime.backends.ray_backend import RayBackend
        return RayBackend(cfg, env_spec, model, version=learner.version if learner is not None else 0)
    raise ConfigError(f"backend '{cfg.backend}' is not available")


class Trainer:
    """Everything checked and built before anything is written to disk."""

    def __init__(self, cfg: TrainConfig, resume_state: dict | None = None):
        cfg.validate()
        self.cfg = cfg
        self.env_spec = probe_env(cfg)
        self.device = resolve_device(cfg.device)
        model = build_model(cfg, self.env_spec)
        self.spec = rollout_spec(cfg, self.env_spec)
        self.learner = Learner(cfg, self.spec, model, self.device)
        self.counters = {"actor_restarts": 0, "elapsed_s": 0.0}
        if resume_state is not None:
            self.learner.load_state_dict(resume_state)
            self.counters.update(resume_state.get("counters", {}))
        self.run_dir = Path(cfg.run_dir)

    def checkpoint(self, extra_restarts: int, elapsed: float) -> None:
        state = self.learner.state_dict()
        state["config"] = self.cfg.to_dict()
        state["counters"] = {"actor_restarts": self.counters["actor_restarts"] + extra_restarts,
                             "elapsed_s": self.counters["elapsed_s"] + elapsed}
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)

    def run(self) -> TrainResult:
        cfg, learner = self.cfg, self.learner
        torch.set_num_threads(cfg.resolved_learner_threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(cfg.to_json())
        logger = RunLogger(self.run_dir, cfg.total_frames, start_frames=learner.frames,
                           interval=cfg.log_interval, quiet=cfg.quiet)
        backend = make_backend(cfg, self.env_spec, learner.model, learner)
        backend.publish(learner.model, learner.version)  # a resumed run's actors act as its current version
        start = time.time()
        last_ckpt = start
        stop_reason = "done"
        restarts = 0
        try:
            backend.start()
            while learner.frames < cfg.total_frames:
                batch, episodes = backend.get_batch()
                metrics = learner.step(batch)
                if learner.nonfinite_in_a_row >= cfg.max_nonfinite:
                    stop_reason = "nonfinite"
                    log.error("stopping: %d non-finite losses in a row (last good weights kept in the checkpoint); "
                              "try a lower --learning-rate or --grad-norm-clip", learner.nonfinite_in_a_row)
                    break
                backend.publish(learner.model, learner.version)
                info = backend.info()
                restarts = int(info.get("actor_restarts", 0))
                logger.record(learner.frames, metrics, episodes, info)
                if time.time() - last_ckpt >= cfg.checkpoint_interval * 60:
                    self.checkpoint(restarts, time.time() - start)
                    last_ckpt = time.time()
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            log.warning("interrupted: writing a final checkpoint")
        except ActorFailure as e:
            stop_reason = "actor_failure"
            log.error("stopping: %s", e)
        finally:
            backend.close()
            restarts = int(backend.info().get("actor_restarts", restarts))
            elapsed = time.time() - start
            self.checkpoint(restarts, elapsed)
            row = logger.flush(learner.frames)
            logger.close()
        total_restarts = self.counters["actor_restarts"] + restarts
        mean_return = row.get("episode_return", float("nan"))
        summary = {"stop_reason": stop_reason, "frames": learner.frames, "learner_steps": learner.version,
                   "elapsed_s": round(elapsed, 1), "fps": round((row["frames"] - logger.start_frames) / max(elapsed, 1e-9), 1),
                   "mean_return": mean_return if math.isfinite(mean_return) else None,
                   "actor_restarts": total_restarts, "nonfinite_total": learner.nonfinite_total}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("finished (%s): %d frames, %d learner steps, mean return %s, actor restarts %d, run dir %s",
                 stop_reason, learner.frames, learner.version, summary["mean_return"], total_restarts,
                 os.fspath(self.run_dir))
        return TrainResult(self.run_dir, learner.frames, learner.version, stop_reason, row, total_restarts,
                           mean_return, elapsed)


def load_run(run_dir: str | Path) -> tuple[TrainConfig, dict]:
    """The config and checkpoint of a run directory."""
    state = load_checkpoint(run_dir)
    return TrainConfig.from_dict(state["config"]), state
