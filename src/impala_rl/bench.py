"""``impala bench``: end-to-end throughput against the machine's own limit.

In one invocation, with the same environment pipeline, network and cores:

1. **env**: the environments alone with random actions (in max(num_actors, cores)
   processes, each stepping an actor's env group), in frames/s (agent steps x action repeat);
2. **learner**: the learner step alone on batches already in memory, in frames/s it
   can consume (T x B x action repeat per step);
3. **inference**: actor-side inference alone at the actors' batch size, in
   max(num_actors, cores) processes of one thread each;
4. **bound**: where all stages share the CPU cores, 1 / (1/env + 1/learner + 1/inference)
   (each stage measured using all the cores); where learner and inference run on a GPU,
   min(env, learner, inference);
5. **train**: end-to-end training at steady state (after a warm-up), environment frames
   consumed by the learner per second;
6. **ratio** = train / bound, with a breakdown of where the end-to-end run spent its time,
   the mean policy lag over the window (learner updates between acting and learning) and
   each process's CPU share (CPU seconds per wall second: 1.0 = one core kept busy).

The learner stage runs the step training runs: the preset's batch, passes and minibatches
(the table says which). Where the learning benchmark (``impala bench --learning``) left
finished runs of the same environment, a **time to score** line follows: each seed's frames
to its target, the wall time it took in that run, and what it would take at this bench's
train speed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from impala_rl.agents import make_agent
from impala_rl.config import TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.envs.vector import make_env_group
from impala_rl.learning_bench import TASKS, frames_to_threshold
from impala_rl.models import net_inputs
from impala_rl.runfiles import read_episodes, read_metric
from impala_rl.runtime.backends import make_backend
from impala_rl.runtime.builders import atari_options, build_learner, probe_env, resolve_device, rollout_spec
from impala_rl.runtime.loop import run_loop
from impala_rl.runtime.sources import make_source


@dataclass
class BenchResult:
    env_fps: float
    learner_fps: float
    inference_fps: float
    bound_fps: float
    bound_formula: str
    train_fps: float
    ratio: float
    learner_breakdown: dict = field(default_factory=dict)  # fraction of learner wall time
    actor_breakdown: dict = field(default_factory=dict)  # fraction of actor wall time (mean over actors)
    policy_lag: float = float("nan")  # mean over the measured window, in learner updates
    cpu_share: dict = field(default_factory=dict)  # process -> CPU seconds per wall second (Linux)
    config: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


# ----------------------------------------------------------------------------- stage workers
def _env_worker(cfg: TrainConfig, duration: float, seed: int, out) -> None:
    torch.set_num_threads(1)
    group = make_env_group(cfg.env, cfg.envs_per_actor, seed, atari=atari_options(cfg), native=cfg.native_env)
    env = probe_env(cfg)
    rng = np.random.default_rng(seed)
    group.reset(seed=seed)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < duration:
        if env.policy_type == "categorical":
            actions = rng.integers(0, env.action_dim, size=group.num_envs)
        else:
            actions = rng.uniform(-1, 1, size=(group.num_envs, env.action_dim)).astype(np.float32)
        group.send(actions)
        group.recv()
        steps += group.num_envs
    out.put(steps * cfg.frames_per_step / (time.perf_counter() - t0))
    group.close()


def _inference_worker(cfg: TrainConfig, env_spec: EnvSpec, duration: float, seed: int, out) -> None:
    torch.set_num_threads(1)
    agent = make_agent(cfg, env_spec)
    model = agent.build_model().eval()
    spec = rollout_spec(cfg, env_spec)
    generator = torch.Generator().manual_seed(seed)
    b = max(1, cfg.envs_per_actor // cfg.env_groups)
    row = {k: v[:, 0] for k, v in spec.allocate(b).items() if v.dim() > 1}
    if spec.obs_dtype == torch.uint8:
        row["obs"].random_(0, 256)
    state = model.initial_state(b)
    steps, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - t0 < duration:
            inputs = net_inputs(row["obs"][None], row["first"][None], row["last_action"][None],
                                row["reward"][None], cfg.reward_clip)
            out_, state = model(core_state=state, **inputs)
            agent.act(out_, generator)
            steps += b
    out.put(steps * cfg.frames_per_step / (time.perf_counter() - t0))


def _parallel(target, args_fn, n: int, duration: float) -> float:
    """Run ``n`` spawned workers at once for ``duration`` seconds; sum their frames/s."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_fn(i), out), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=duration + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return float(sum(results))


def _stage_processes(cfg: TrainConfig) -> int:
    """Env and inference stages run as many actor-like processes as it takes to use every core."""
    return max(cfg.num_actors, os.cpu_count() or 1)


def measure_env(cfg: TrainConfig, duration: float) -> float:
    return _parallel(_env_worker, lambda i: (cfg, duration, cfg.seed + 7919 * i), _stage_processes(cfg), duration)


def measure_inference(cfg: TrainConfig, env_spec: EnvSpec, duration: float) -> float:
    return _parallel(_inference_worker, lambda i: (cfg, env_spec, duration, cfg.seed + i), _stage_processes(cfg),
                     duration)


def synthetic_batch(cfg: TrainConfig, env_spec: EnvSpec) -> dict:
    """A [T+1, B] batch with random observations and actions, laid out as the backends give it."""
    spec = rollout_spec(cfg, env_spec)
    buffers = spec.allocate(cfg.batch_size)
    g = torch.Generator().manual_seed(cfg.seed)
    if spec.obs_dtype == torch.uint8:
        buffers["obs"].random_(0, 256, generator=g)
    else:
        buffers["obs"].normal_(generator=g)
    if env_spec.policy_type == "categorical":
        buffers["action"].random_(0, env_spec.action_dim, generator=g)
    for name, _, dtype in spec.records:  # the agent's records (IMPALA: behaviour policy parameters)
        if dtype.is_floating_point:
            buffers[name].normal_(generator=g)
    buffers["reward"].normal_(generator=g)
    return spec.gather(buffers, list(range(cfg.batch_size)))


def measure_learner(cfg: TrainConfig, env_spec: EnvSpec, duration: float, device: torch.device) -> float:
    learner = build_learner(cfg, env_spec, device=device)
    batch = synthetic_batch(cfg, env_spec)
    for _ in range(3):  # warm-up (allocator, kernels, torch.compile if any)
        learner.step(batch)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < duration:
        learner.step(batch)
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.frames_per_batch / (time.perf_counter() - t0)


def measure_train(cfg: TrainConfig, env_spec: EnvSpec, warmup: float, duration: float,
                  device: torch.device) -> tuple[float, dict, dict, float, dict]:
    """Steady-state training frames/s, where the learner and the actors spent their time,
    the mean policy lag and each process's CPU share over the measured window."""
    learner = build_learner(cfg, env_spec, device=device)
    backend = make_backend(cfg, env_spec, learner)
    learner_t = {"wait_batch": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0, "publish": 0.0}
    window = {"measuring": False, "frames0": 0, "actors0": {}, "t0": 0.0, "cpu0": {}}
    lags: list[float] = []

    def measure(step) -> str | None:
        """Warm up, then account the learner's time for ``duration`` seconds."""
        now = time.perf_counter()
        if not window["measuring"]:
            if now - t_begin >= warmup:
                window.update(measuring=True, frames0=step.frames, actors0=backend.actor_timings(), t0=now,
                              cpu0={name: (pid, cpu_seconds(pid)) for name, pid in _process_ids(backend).items()})
            return None
        m = step.metrics
        lags.append(m.get("policy_lag_mean", float("nan")))
        learner_t["wait_batch"] += step.wait_s
        learner_t["forward"] += m.get("time_forward_s", 0.0)
        learner_t["backward"] += m.get("time_backward_s", 0.0)
        learner_t["optimizer"] += m.get("time_optimizer_s", 0.0)
        learner_t["publish"] += step.publish_s
        return "measured" if now - window["t0"] >= duration else None

    try:
        backend.start()
        t_begin = time.perf_counter()
        run_loop(make_source(cfg, backend, name="fresh"), learner, backend.publish, [measure], total_frames=math.inf)
        elapsed = time.perf_counter() - window["t0"]
        frames0, actors0 = window["frames0"], window["actors0"]
        fps = (learner.frames - frames0) / elapsed
        actors1 = backend.actor_timings()
        cpu_share = {name: (cpu_seconds(pid) - cpu0) / elapsed for name, (pid, cpu0) in window["cpu0"].items()}
    finally:
        backend.close()
    learner_frac = {k: v / elapsed for k, v in learner_t.items()}
    learner_frac["other"] = max(0.0, 1.0 - sum(learner_frac.values()))
    n_actors = max(1, cfg.num_actors)
    actor_frac = {k.removesuffix("_s"): (actors1.get(k, 0.0) - actors0.get(k, 0.0)) / (elapsed * n_actors)
                  for k in actors1}
    if cfg.backend == "serial":  # one process: actor time is part of the learner's wait
        actor_frac = {k: v * n_actors for k, v in actor_frac.items()}
    return fps, learner_frac, actor_frac, float(np.mean(lags)) if lags else float("nan"), cpu_share


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process (all its threads) has used; nan where /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": fields 3.. of proc(5)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return float("nan")


def _process_ids(backend) -> dict[str, int]:
    """The learner's process and, where the backend runs them locally, each actor's."""
    pids = {"learner": os.getpid()}
    for actor_id, pid in sorted(getattr(backend, "actor_pids", dict)().items()):
        pids[f"actor {actor_id}"] = pid
    return pids


def run_bench(cfg: TrainConfig, duration: float = 20.0, warmup: float = 15.0, log=print) -> BenchResult:
    cfg.validate()
    env_spec = probe_env(cfg)
    device = resolve_device(cfg.device)
    all_cores = cfg.learner_threads or (os.cpu_count() or 1)
    log(f"[bench] {cfg.env}: {env_spec.obs_shape} obs, torso {cfg.torso}, lstm {cfg.use_lstm}, "
        f"T={cfg.unroll_length} B={cfg.batch_size}, {cfg.num_actors} actors x {cfg.envs_per_actor} envs "
        f"({cfg.env_groups} group(s)), learner on {device}; learner stage {all_cores} threads, "
        f"training {cfg.resolved_learner_threads}")
    log(f"[bench] env stage ({duration:.0f}s) ...")
    env_fps = measure_env(cfg, duration)
    log(f"[bench] learner stage ({duration:.0f}s) ...")
    torch.set_num_threads(all_cores)  # each stage alone uses all the cores
    learner_fps = measure_learner(cfg, env_spec, duration, device)
    log(f"[bench] inference stage ({duration:.0f}s) ...")
    inference_fps = measure_inference(cfg, env_spec, duration)
    if device.type == "cuda":
        bound, formula = min(env_fps, learner_fps, inference_fps), "min(env, learner, inference) (learner on GPU)"
    else:
        bound = 1.0 / (1.0 / env_fps + 1.0 / learner_fps + 1.0 / inference_fps)
        formula = "1 / (1/env + 1/learner + 1/inference) (all stages share the CPU cores)"
    log(f"[bench] end-to-end training ({warmup:.0f}s warm-up + {duration:.0f}s) ...")
    torch.set_num_threads(cfg.resolved_learner_threads)  # as `impala train` runs it
    train_fps, learner_frac, actor_frac, lag, cpu_share = measure_train(cfg, env_spec, warmup, duration, device)
    return BenchResult(env_fps, learner_fps, inference_fps, bound, formula, train_fps, train_fps / bound,
                       learner_frac, actor_frac, lag, cpu_share, cfg.to_dict())


def time_to_score(env: str, learning_out: str | os.PathLike, train_fps: float) -> str:
    """One line: how long the learning benchmark's finished runs of ``env`` (in
    ``learning_out``) took to reach their target, and the time at ``train_fps``."""
    names = [name for name, task in TASKS.items() if task.env == env]
    runs = sorted(d for name in names for d in Path(learning_out).glob(f"{name}-seed*") if (d / "summary.json").exists())
    if not names:
        return f"time to score: the learning benchmark has no target for {env}"
    task = TASKS[names[0]]
    if not runs:
        return (f"time to score: no finished run of {env} in {learning_out} "
                f"(`impala bench --learning {names[0]}` makes one)")
    parts = []
    for d in runs:
        frames, returns = read_episodes(d)
        at = frames_to_threshold(frames, returns, task.threshold)
        seed = d.name.rsplit("-seed", 1)[-1]
        if math.isnan(at):
            parts.append(f"seed {seed} not reached in {frames[-1] / 1e6 if len(frames) else 0:.1f}M frames")
            continue
        mf, elapsed = read_metric(d, "elapsed_s")
        wall = float(np.interp(at, mf, elapsed)) if len(mf) else math.nan
        parts.append(f"seed {seed} {at / 1e6:.1f}M frames, {wall / 60:.1f} min in its run, "
                     f"{at / train_fps / 60:.1f} min at this train speed")
    return f"time to score ({env}, 100-episode mean >= {task.threshold:g}; {learning_out}): " + "; ".join(parts)


def format_table(r: BenchResult) -> str:
    c = r.config
    lines = [
        f"{'stage':<12}{'frames/s':>12}",
        f"{'env':<12}{r.env_fps:>12,.0f}",
        f"{'learner':<12}{r.learner_fps:>12,.0f}   (batch {c.get('batch_size')} x T {c.get('unroll_length')}, "
        f"{c.get('learner_epochs')} pass(es) x {c.get('learner_minibatches')} minibatch(es), as training runs it)",
        f"{'inference':<12}{r.inference_fps:>12,.0f}",
        f"{'bound':<12}{r.bound_fps:>12,.0f}   = {r.bound_formula}",
        f"{'train':<12}{r.train_fps:>12,.0f}",
        f"{'ratio':<12}{r.ratio:>12.2f}   = train / bound",
        "",
        "learner process, share of wall time: " + ", ".join(f"{k} {v:.0%}" for k, v in r.learner_breakdown.items()),
        "actor processes, share of wall time: " + ", ".join(f"{k} {v:.0%}" for k, v in r.actor_breakdown.items()),
        f"policy lag: {r.policy_lag:.1f} learner updates (mean over the window)",
        "CPU share (1.0 = one core busy): " + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_share.items()),
    ]
    return "\n".join(lines)


def main_bench(cfg: TrainConfig, duration: float, warmup: float, as_json: bool,
               learning_out: str = "runs/learning") -> int:
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    result = run_bench(cfg, duration=duration, warmup=warmup, log=log)
    score = time_to_score(cfg.env, learning_out, result.train_fps)
    if as_json:
        print(json.dumps({**result.__dict__, "time_to_score": score}, indent=2))
    else:
        print(format_table(result) + "\n" + score)
    return 0
