"""Playing whole episodes with a network outside the actors: ``impala eval`` and the
evaluation hook of ``impala train --eval-interval`` (which plays with the learner's current
weights every N frames and logs ``eval_return``).

Every episode ends: besides the environment's own termination and time limit, play stops an
episode after ``max_steps`` agent steps (``--eval-max-steps``, 27,000 by default), since a
greedy policy in an environment without a limit (MinAtar) can loop for ever."""

from __future__ import annotations

import copy
import logging
import time
from typing import Callable, Optional

import numpy as np
import torch

from impala_rl.envs import make_env
from impala_rl.envs.tasks import pad_observations, task_labels
from impala_rl.models import net_inputs
from impala_rl.runtime.builders import atari_options

log = logging.getLogger("impala_rl")


@torch.inference_mode()
def play(cfg, env_spec, agent, model, env_id: str, task: int, episodes: int, greedy: bool, seed: int,
         max_steps: int, frames: list | None,
         progress: Callable[[int, float, int, bool], None] | None = None,
         watch: Callable[[int, object], None] | None = None) -> tuple[list[float], list[int]]:
    """Episodes of one task; rendered frames of the first go to ``frames`` when given.

    An episode ends at termination, truncation, or after ``max_steps`` agent steps (0 = no
    cap). ``progress(episode, return, steps, capped)`` is called after each episode;
    ``watch(episode, env)`` before each agent step (diagnostics that read the environment's
    state, as benchmarks/minigrid_cue.py)."""
    render = {"render_mode": "rgb_array"} if frames is not None else {}
    env = make_env(env_id, seed=seed, atari=atari_options(cfg), **render)
    generator = torch.Generator().manual_seed(seed)
    task_id = torch.tensor([task])
    returns, lengths = [], []
    action_shape = env_spec.action_shape
    action_dtype = torch.from_numpy(np.zeros((), dtype=env_spec.action_dtype)).dtype
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            state_ = model.initial_state(1)
            first, last_action, reward = True, torch.zeros((1, 1) + action_shape, dtype=action_dtype), 0.0
            total, steps, done = 0.0, 0, False
            while not done:
                if frames is not None and episode == 0:
                    frames.append(env.render())
                if watch is not None:
                    watch(episode, env)
                obs = pad_observations(np.asarray(obs)[None], env_spec.obs_shape, env_spec.obs_dtype)
                inputs = net_inputs(torch.as_tensor(obs)[None], torch.tensor([[first]]),
                                    last_action, torch.tensor([[reward]], dtype=torch.float32), cfg.reward_clip)
                out, state_ = model(core_state=state_, **inputs)
                action = agent.act(out, generator, greedy=greedy, task=task_id).action[0]
                obs, reward, terminated, truncated, _ = env.step(
                    int(action) if env_spec.policy_type == "categorical" else action.numpy())
                total += float(reward)
                steps += 1
                first, last_action = False, action.reshape((1, 1) + action_shape).to(action_dtype)
                capped = bool(max_steps) and steps >= max_steps and not (terminated or truncated)
                done = terminated or truncated or capped
            returns.append(total)
            lengths.append(steps)
            if progress is not None:
                progress(episode, total, steps, capped)
    finally:
        env.close()
    return returns, lengths


def evaluation_hook(cfg, env_spec, learner):
    """A loop hook: every ``cfg.eval_interval`` frames, ``cfg.eval_episodes`` greedy episodes
    of each task with a CPU copy of the learner's current weights (seeded by ``cfg.seed`` and
    the evaluation's number, so two runs at the same weights score the same). It adds
    ``eval_return`` (the mean over every task's episodes) and, for several tasks,
    ``eval_return_<label>`` to the step's metrics, which the logging hook after it records."""
    labels = task_labels(cfg.tasks)
    model = copy.deepcopy(learner.model).to("cpu").eval()  # the current weights, on the CPU
    next_at, count = learner.frames + cfg.eval_interval, 0

    def hook(step) -> Optional[str]:
        nonlocal next_at, count
        if step.frames < next_at:
            return None
        while next_at <= step.frames:
            next_at += cfg.eval_interval
        model.load_state_dict(learner.model.state_dict())  # copies into the CPU model
        t0, seed = time.perf_counter(), cfg.seed * 1_000_003 + 7919 * count
        count += 1
        capped = []
        per_task = [play(cfg, env_spec, learner.agent, model, env_id, task, cfg.eval_episodes, True, seed,
                         cfg.eval_max_steps, None, progress=lambda e, r, n, cap: capped.append(cap))[0]
                    for task, env_id in enumerate(cfg.tasks)]
        every = [r for returns in per_task for r in returns]
        step.metrics["eval_return"] = float(np.mean(every))
        if len(labels) > 1:
            for label, returns in zip(labels, per_task):
                step.metrics[f"eval_return_{label}"] = float(np.mean(returns))
        log.info("evaluation at %d frames: mean return %.2f over %d greedy episodes (%.1f s)%s", step.frames,
                 step.metrics["eval_return"], len(every), time.perf_counter() - t0,
                 f"; {sum(capped)} stopped at the {cfg.eval_max_steps}-step cap" if any(capped) else "")
        return None
    return hook
