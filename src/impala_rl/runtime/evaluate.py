"""``impala eval``: play episodes with a trained policy, optionally recording a video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from impala_rl.agents import make_agent
from impala_rl.models import net_inputs
from impala_rl.runtime.builders import atari_options, probe_env
from impala_rl.runtime.train import load_run
from impala_rl.envs import make_env


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    policy: str  # 'greedy' | 'sampled'

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


@torch.inference_mode()
def evaluate(run_dir: str | Path, episodes: int = 10, greedy: bool = True, video: str | None = None,
             seed: int = 12345, max_steps: int = 0, trust_env_module: bool = False) -> EvalResult:
    """Play ``episodes`` episodes (unclipped returns) with the run's latest checkpoint.

    A run directory may come from someone else: an env id of Gymnasium's ``module:Env`` form
    would import (run) that module, so it is refused unless ``trust_env_module``.
    """
    cfg, state = load_run(run_dir)
    if ":" in cfg.env and not trust_env_module:
        raise ValueError(f"the run's environment '{cfg.env}' would import the module "
                         f"'{cfg.env.split(':')[0]}' (running its code); pass --trust-env-module if you trust it")
    env_spec = probe_env(cfg)
    agent = make_agent(cfg, env_spec)
    model = agent.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    env = make_env(cfg.env, seed=seed, atari=atari_options(cfg), **({"render_mode": "rgb_array"} if video else {}))
    generator = torch.Generator().manual_seed(seed)
    returns, lengths, frames = [], [], []
    action_shape = env_spec.action_shape
    action_dtype = torch.from_numpy(np.zeros((), dtype=env_spec.action_dtype)).dtype
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            state_ = model.initial_state(1)
            first, last_action, reward = True, torch.zeros((1, 1) + action_shape, dtype=action_dtype), 0.0
            total, steps, done = 0.0, 0, False
            while not done:
                if video and episode == 0:
                    frames.append(env.render())
                inputs = net_inputs(torch.as_tensor(np.asarray(obs))[None, None], torch.tensor([[first]]),
                                    last_action, torch.tensor([[reward]], dtype=torch.float32), cfg.reward_clip)
                out, state_ = model(core_state=state_, **inputs)
                action = agent.act(out, generator, greedy=greedy).action[0]
                obs, reward, terminated, truncated, _ = env.step(
                    int(action) if env_spec.policy_type == "categorical" else action.numpy())
                total += float(reward)
                steps += 1
                first, last_action = False, action.reshape((1, 1) + action_shape).to(action_dtype)
                done = terminated or truncated or (max_steps and steps >= max_steps)
            returns.append(total)
            lengths.append(steps)
    finally:
        env.close()
    if video:
        write_video(video, frames, fps=30 if cfg.is_atari else 50)
    return EvalResult(returns, lengths, "greedy" if greedy else "sampled")


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 30) -> None:
    import cv2

    if not frames or frames[0] is None:
        raise ValueError("the environment returned no frames to record")
    h, w = frames[0].shape[:2]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(np.asarray(frame, dtype=np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
