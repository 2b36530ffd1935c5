"""Does a MiniGrid-Memory policy look for the cue, and use it? Prints, for a run's latest
checkpoint: the share of episodes in which the agent saw the cue object (MiniGrid's
``agent_sees`` on the cue's cell, at any step), the success rate, and the success rate in
episodes with and without a sight of the cue; then the sightings split into those where the
cue was in view at the first step (the agent starts beside it, in column 1: one start in 8
on S11, 1 in 4 on S7) and those where the agent turned or walked back to it.

A policy that remembers the cue succeeds in nearly every episode where it saw it; one that
guesses at the junction succeeds in half, seen or not (docs/merlin.md).

    python benchmarks/minigrid_cue.py RUN_DIR [--episodes 1000] [--greedy]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from impala_rl.agents import make_agent
from impala_rl.runtime.builders import probe_env
from impala_rl.runtime.play import play
from impala_rl.runtime.rundirs import load_run


def cue_sightings(run_dir: str, episodes: int, greedy: bool,
                  seed: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(saw the cue, saw it at the first step, succeeded) per episode, bool arrays of length ``episodes``."""
    cfg, state = load_run(run_dir)
    if not cfg.env.startswith("MiniGrid-Memory"):
        raise SystemExit(f"minigrid_cue: the run's environment is {cfg.env}; a MiniGrid-Memory* run is needed")
    spec = probe_env(cfg)
    agent = make_agent(cfg, spec)
    model = agent.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    saw = np.zeros(episodes, dtype=bool)
    at_start = np.zeros(episodes, dtype=bool)
    steps = np.zeros(episodes, dtype=np.int64)

    def watch(episode: int, env) -> None:
        grid = env.unwrapped  # MemoryEnv puts the start room's object at (1, height // 2 - 1)
        sees = bool(grid.agent_sees(1, grid.height // 2 - 1))
        saw[episode] |= sees
        at_start[episode] |= sees and steps[episode] == 0
        steps[episode] += 1

    with torch.no_grad():
        returns, _ = play(cfg, spec, agent, model, cfg.env, 0, episodes, greedy, seed, 0, None, watch=watch)
    return saw, at_start, np.array(returns) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--greedy", action="store_true", help="the most likely action (default: sampled, as in training)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    saw, at_start, won = cue_sightings(args.run_dir, args.episodes, args.greedy)

    def rate(mask):
        return f"{won[mask].mean():.0%} of {mask.sum()}" if mask.any() else "-"

    print(f"{args.run_dir} ({'greedy' if args.greedy else 'sampled'}, {args.episodes} episodes): "
          f"saw the cue in {saw.mean():.0%}; success {won.mean():.0%}; "
          f"success when it saw the cue {rate(saw)}, when not {rate(~saw)}\n"
          f"  in view at the first step: {at_start.mean():.0%}, success {rate(at_start)}; "
          f"found later (turned or walked back): {(saw & ~at_start).mean():.0%}, success {rate(saw & ~at_start)}")


if __name__ == "__main__":
    main()
