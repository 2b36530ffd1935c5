"""``impala eval``: play episodes with a trained policy, optionally recording a video."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from impala_rl.agents import make_agent
from impala_rl.envs import make_env
from impala_rl.runtime.builders import atari_options, probe_env
from impala_rl.runtime.play import play
from impala_rl.runtime.rundirs import load_run
from impala_rl.envs.tasks import task_labels
from impala_rl.scores import aggregates, human_normalized


@dataclass
class EvalResult:
    """Returns and lengths of the episodes played; a multi-task run's ``tasks`` holds one
    result per task label (``returns`` then lists every task's episodes, task by task)
    and, for Atari, ``hns`` the human-normalised scores (percent) per task and aggregated."""

    returns: list[float]
    lengths: list[int]
    policy: str  # 'greedy' | 'sampled'
    tasks: dict[str, "EvalResult"] = field(default_factory=dict)
    hns: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


@torch.inference_mode()
def evaluate(run_dir: str | Path, episodes: int = 10, greedy: bool = True, video: str | None = None,
             seed: int = 12345, max_steps: int | None = None, trust_env_module: bool = False,
             progress: Callable[[str], None] | None = None) -> EvalResult:
    """Play ``episodes`` episodes (unclipped returns) with the run's latest checkpoint, in
    each of its tasks.

    Each episode stops after ``max_steps`` agent steps (None: the run's ``eval_max_steps``,
    27,000 by default; 0: no cap). ``progress`` receives a line after each episode.

    A run directory may come from someone else: an env id of Gymnasium's ``module:Env`` form
    would import (run) that module, so it is refused unless ``trust_env_module``.
    """
    if video is not None:
        check_video_path(video)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen: no display needed
    cfg, state = load_run(run_dir)
    if ":" in cfg.env and not trust_env_module:
        raise ValueError(f"the run's environment '{cfg.env}' would import the module "
                         f"'{cfg.env.split(':')[0]}' (running its code); pass --trust-env-module if you trust it")
    if ":" in cfg.agent and not trust_env_module:
        raise ValueError(f"the run's agent '{cfg.agent}' would import the module '{cfg.agent.split(':')[0]}' "
                         f"(running its code); pass --trust-env-module if you trust it")
    env_spec = probe_env(cfg)
    agent = make_agent(cfg, env_spec)
    model = agent.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    policy = "greedy" if greedy else "sampled"
    cap = cfg.eval_max_steps if max_steps is None else max_steps
    per_task, frames = {}, []
    for task, (label, env_id) in enumerate(zip(task_labels(cfg.tasks), cfg.tasks)):
        def report(episode: int, total: float, steps: int, capped: bool, label=label) -> None:
            if progress is not None:
                progress(f"{label} episode {episode + 1}/{episodes}: return {total:.2f} in {steps} steps"
                         + (f" (stopped at the {cap}-step cap)" if capped else ""))
        returns, lengths = play(cfg, env_spec, agent, model, env_id, task, episodes, greedy, seed, cap,
                                 frames if video and task == 0 else None, progress=report)
        per_task[label] = EvalResult(returns, lengths, policy)
    if video:
        # Real speed: one recorded frame per agent step, each `frames_per_step` emulator frames.
        write_video(video, frames, fps=_render_fps(cfg) / cfg.frames_per_step)
    if len(per_task) == 1:
        return next(iter(per_task.values()))
    hns = {label: human_normalized(env_id, r.mean) for (label, r), env_id in zip(per_task.items(), cfg.tasks)}
    hns = {k: v for k, v in hns.items() if v is not None}
    if len(hns) == len(per_task):
        hns.update(aggregates(list(hns.values())))
    return EvalResult([x for r in per_task.values() for x in r.returns],
                      [x for r in per_task.values() for x in r.lengths], policy, per_task, hns)


ATARI_EMULATOR_FPS = 60.0
"""The Atari 2600's frame rate (NTSC). ale-py reports a fixed ``render_fps`` of 30 for
every game whatever the frame skip, so it cannot give real speed."""


def _render_fps(cfg) -> float:
    """Emulator frames per second of the run's first task (divided by the action repeat, this
    is agent steps per second at real speed)."""
    if cfg.is_atari:
        return ATARI_EMULATOR_FPS
    env = make_env(cfg.tasks[0], atari=atari_options(cfg))
    try:
        return env.metadata.get("render_fps", 30)
    finally:
        env.close()


def check_video_path(path: str | Path) -> None:
    """Refuse, before playing anything, a video path that is not a writable ``.mp4``."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"--video {path}: the video is written as H.264 in MP4; give a name ending in .mp4")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
        if not existed:  # only a probe: a run that cannot be played leaves no empty file behind
            path.unlink()
    except OSError as e:
        raise ValueError(f"--video {path}: cannot write there ({e.strerror or e})") from None


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 30.0) -> None:
    """H.264 (yuv420p) in MP4, which browsers play; odd frame sizes are padded by one pixel."""
    from fractions import Fraction

    import av

    if not frames or frames[0] is None:
        raise ValueError("the environment returned no frames to record")
    h, w = frames[0].shape[:2]
    H, W = h + h % 2, w + w % 2
    container = av.open(str(path), "w")
    try:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for frame in frames:
            rgb = np.zeros((H, W, 3), dtype=np.uint8)
            rgb[:h, :w] = np.asarray(frame, dtype=np.uint8)[..., :3]
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    if not Path(path).exists() or Path(path).stat().st_size == 0:
        raise ValueError(f"--video {path}: nothing was written")
