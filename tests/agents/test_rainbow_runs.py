"""Rainbow through the runtime: short runs on the serial and local backends (frames counted
from the data, every environment stream stitched into the replay, the replay ratio kept),
the target network in checkpoints, restored by ``--resume`` and copied by PBT's exploit,
the replay saved beside each checkpoint and restored by ``--resume`` (or refilled, saying why),
``impala eval`` of a Rainbow run, and the one-line refusals of the CLI."""

from __future__ import annotations

import logging
import signal

import numpy as np
import pytest
from cli_refusals import assert_train_refuses
import torch

from impala_rl.checkpoint import SOURCE_STATE_NAME, load_arrays, load_checkpoint, save_arrays
from impala_rl.config import TrainConfig
from impala_rl.pbt.member import exploit
from impala_rl.runtime.builders import build_learner, probe_env
from impala_rl.runtime.evaluate import evaluate
from impala_rl.runtime.train import Trainer


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(env="CartPole-v1", agent="rainbow", backend="serial", torso="mlp", mlp_sizes=(32,), num_actors=2,
                envs_per_actor=2, unroll_length=10, batch_size=16, optimizer="adam", learning_rate=1e-3,
                reward_clip=0.0, total_frames=1_200, seed=2, quiet=True, log_interval=100.0, learner_threads=1,
                agent_options="replay_capacity=2000,warmup=200,target_update=50",
                run_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw}).validate()


def _capture_source(trainer: Trainer) -> list:
    """The data sources ``trainer`` makes, as it makes them."""
    sources, original = [], trainer.learner.agent.make_source
    trainer.learner.agent.make_source = lambda b: sources.append(original(b)) or sources[-1]
    return sources


DQN = "double=false,prioritized=false,dueling=false,multistep=false,distributional=false,noisy=false"


@pytest.mark.parametrize("backend, components", [("serial", ""), ("local", ""), ("serial", DQN), ("local", DQN)])
def test_a_run_keeps_the_replay_ratio_and_counts_frames_from_the_data(tmp_path, backend, components):
    cfg = _cfg(tmp_path, backend=backend, agent_options=",".join(
        filter(None, ["replay_capacity=2000,warmup=200,target_update=50", components])))
    trainer = Trainer(cfg)
    sources = _capture_source(trainer)
    result = trainer.run()
    assert result.stop_reason == "done"
    source = sources[0]
    stored = np.flatnonzero(source.replay._valid)
    priorities = source.replay.priorities(stored)
    if components == DQN:  # uniform replay: no actor records, every stored transition equally likely
        assert source.agent.record_fields() == {} and np.all(priorities == priorities[0])
    else:  # the learner's priorities written back differ from transition to transition
        assert len(np.unique(priorities)) > len(stored) // 2
    assert result.frames == source.steps_in >= cfg.total_frames  # CartPole: one frame per agent step
    # the warm-up's 200 transitions earn no updates; from then on one update per 4 fresh steps
    assert result.version == source.updates and 200 <= source.warm_steps <= 200 + 4 * 10 + 4 * 3
    after = source.steps_in - source.warm_steps
    # data taken one actor's unrolls at a time (2 x 10 steps), so the ratio holds within one fetch
    assert after * 0.25 >= source.updates > (after - cfg.envs_per_actor * cfg.unroll_length) * 0.25
    written = source.replay._written  # rows each environment stream stored: all four streams arrived
    assert (written > 0).all() and len(written) == 4
    if backend == "serial":  # actors take turns; the local backend's race, so only "every stream arrived" holds there
        assert written.min() >= 0.5 * written.max()


def test_the_target_network_is_checkpointed_restored_on_resume_and_copied_by_exploit(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    Trainer(cfg).run()
    state = load_checkpoint(tmp_path / "run")
    target = state["agent"]["target"]
    assert state["agent"]["updates"] == state["version"] > 0
    assert any(not torch.equal(target[k], state["model"][k]) for k in target)  # not merely the online weights
    resumed = Trainer(TrainConfig(**{**cfg.__dict__, "total_frames": 2_400}), resume_state=state)
    agent = resumed.learner.agent
    agent.before_updates(resumed.learner.model, {})
    for k, v in target.items():
        assert torch.equal(agent.target.state_dict()[k], v), k
    with caplog.at_level(logging.INFO, logger="impala_rl"):
        resumed.run()
    assert "saved beside each checkpoint (--resume restores it)" in caplog.text
    other = build_learner(_cfg(tmp_path, seed=9), probe_env(cfg))
    other.agent.before_updates(other.model, {})
    exploit(other, state)
    for k, v in target.items():
        assert torch.equal(other.agent.target.state_dict()[k], v), k


def test_resume_restores_the_replay_and_its_counters_and_refills_when_it_cannot(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    first = Trainer(cfg)
    saved = _capture_source(first)
    first.run()
    saved = saved[0]
    state = load_checkpoint(tmp_path / "run")
    arrays = load_arrays(tmp_path / "run" / SOURCE_STATE_NAME)
    assert int(arrays["version"]) == state["version"] == saved.updates and int(arrays["count"]) == len(saved.replay)

    def resume(**kw):
        trainer = Trainer(TrainConfig(**{**cfg.__dict__, "total_frames": 2_400, **kw}), resume_state=state)
        sources = _capture_source(trainer)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="impala_rl"):
            trainer.run()
        return trainer, sources[0]

    trainer, source = resume()
    assert (f"the replay restored: {len(saved.replay)} transitions, {saved.steps_in} agent steps stored, "
            f"{saved.updates} updates") in caplog.text
    assert source.warm_steps == saved.warm_steps  # no second warm-up: the ratio counts on from the first run's
    assert source.updates == trainer.learner.version > saved.updates
    assert source.steps_in == trainer.learner.frames  # the first run's steps and this one's (one frame per step)

    (tmp_path / "run" / SOURCE_STATE_NAME).unlink()  # a checkpoint without its replay (e.g. save_replay=false)
    trainer, source = resume()
    assert "no saved replay (replay.npz) in the run directory: the replay refills" in caplog.text
    assert source.steps_in == trainer.learner.frames - state["frames"]  # this run's steps only
    assert 200 <= source.warm_steps <= 200 + 4 * 10 + 4 * 3  # a warm-up again

    save_arrays(tmp_path / "run" / SOURCE_STATE_NAME, {**arrays, "version": np.asarray(state["version"] - 1)})
    resume()
    assert f"was saved at update {state['version'] - 1}, the checkpoint at {state['version']}: the replay refills" \
        in caplog.text


def _break_the_41st_unroll(trainer: Trainer, fault) -> tuple[list, list]:
    """``fault(source, stream)`` runs in the middle of the 41st unroll stored (after half of it is
    written: the first of a batch of two); returns the sources as they are made and the streams of the unrolls stored."""
    calls, original = [], trainer.learner.agent.make_source

    def make_source(backend):
        source = original(backend)
        add = source.replay.add_unroll

        def add_unroll(stream, rows):
            calls.append(stream)
            if len(calls) == 41:
                source.replay._written[stream] += 1  # half-stored
                fault(source, stream)
                source.replay._written[stream] -= 1
            return add(stream, rows)

        source.replay.add_unroll = add_unroll
        return source

    trainer.learner.agent.make_source = make_source
    return _capture_source(trainer), calls


def test_an_exception_while_the_replay_stores_data_saves_no_replay(tmp_path, caplog):
    trainer = Trainer(_cfg(tmp_path))

    def fault(source, stream):
        raise MemoryError("no room")

    _break_the_41st_unroll(trainer, fault)
    with caplog.at_level(logging.INFO, logger="impala_rl"), pytest.raises(MemoryError):
        trainer.run()
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert "the replay was cut short while storing data: it is not saved (a resume refills it)" in caplog.text
    assert not (tmp_path / "run" / SOURCE_STATE_NAME).exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_replay_stores_data_waits_until_it_is_stored_and_the_replay_is_saved(tmp_path, caplog,
                                                                                            signum, ctrl_c_raises):
    import os

    from impala_rl.cli.signals import raise_keyboard_interrupt

    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # as `impala train` sets it
    signalled = []

    def fault(source, stream):  # Ctrl-C or `kill` lands here; the unroll must still be stored whole
        os.kill(os.getpid(), signum)
        signalled.append(int(source.replay._written[stream]))

    try:
        trainer = Trainer(_cfg(tmp_path))
        sources, calls = _break_the_41st_unroll(trainer, fault)
        with caplog.at_level(logging.INFO, logger="impala_rl"):
            result = trainer.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    source = sources[0]
    assert result.stop_reason == "interrupted" and len(signalled) == 1
    assert "cut short" not in caplog.text
    saved = load_arrays(tmp_path / "run" / SOURCE_STATE_NAME)
    assert int(saved["version"]) == result.version and int(saved["count"]) == len(source.replay)
    assert source._intact and int(saved["source:steps_in"]) == source.steps_in
    # the signal came in the middle of the 41st unroll: it and the rest of its batch were stored and counted
    # (cut short, the batch's steps would be missing from steps_in), and then the run stopped before the
    # learner took a batch with them, so it counts 20 frames (the last fetch: one actor's 2 x 10 steps) fewer
    assert len(calls) == 42 and len(calls) * 10 == source.steps_in == result.frames + 20
    assert source.replay._written[calls[40]] > signalled[0]


def test_save_replay_false_writes_no_replay(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="impala_rl"):
        Trainer(_cfg(tmp_path, agent_options="replay_capacity=2000,warmup=200,save_replay=false")).run()
    assert "not saved (save_replay=false: a resumed run refills it)" in caplog.text
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / SOURCE_STATE_NAME).exists()


def test_impala_eval_plays_a_rainbow_run_greedily_on_its_q_values(tmp_path, monkeypatch):
    from impala_rl.agents.rainbow.agent import RainbowAgent
    from impala_rl.runtime import evaluate as evaluate_module

    Trainer(_cfg(tmp_path)).run()
    played, steps = [], []
    original_play, original_act = evaluate_module.play, RainbowAgent.act

    def play(cfg, env_spec, agent, model, *args, **kwargs):
        played.append(model.training)
        return original_play(cfg, env_spec, agent, model, *args, **kwargs)

    def act(self, out, generator, greedy=False, **kwargs):
        action = original_act(self, out, generator, greedy=greedy, **kwargs)
        steps.append((greedy, action.action, self.q(out.policy_params[0]).argmax(-1)))
        return action

    monkeypatch.setattr(evaluate_module, "play", play)
    monkeypatch.setattr(RainbowAgent, "act", act)
    first = evaluate(tmp_path / "run", episodes=2, seed=4)
    # the network plays in eval mode (noisy layers on their means), each action the argmax of its Q-values
    assert first.policy == "greedy" and played == [False] and len(steps) == sum(first.lengths) > 0
    assert all(greedy and torch.equal(action, best) for greedy, action, best in steps)
    assert all(r >= 1 for r in first.returns)


@pytest.mark.parametrize("flags, message", [
    (["--env", "Pendulum-v1"], "--agent rainbow needs discrete actions; Pendulum-v1 has a continuous"),
    (["--env", "CartPole-v1", "--agent-options", "dueling=maybe"], "agent option dueling=maybe: expected a bool"),
    (["--env", "CartPole-v1", "--agent-options", "nstep=2"], "agent option 'nstep=2' is not KEY=VALUE with KEY one of: double"),
    (["--env", "CartPole-v1", "--agent-options", "replay_ratio=0"], "agent option replay_ratio=0.0: must be > 0"),
    (["--env", "CartPole-v1", "--total-frames", "20000", "--agent-options", "replay_ratio=1e-5"],
     "agent option replay_ratio=1e-05 can never be met: the 19000 agent steps after the warm-up earn no update; "
     "raise it to 5.27e-05 or more"),
    (["--env", "CartPole-v1", "--total-frames", "500"], "--total-frames 500 gives 500 agent steps, no more than the "
                                                          "warm-up's 1000 transitions"),
    (["--env", "CartPole-v1", "--agent-options", "replay_capacity=10000000000"], "the replay needs "),
    (["--env", "CartPole-v1", "--agent-options", "warmup=5000,replay_capacity=1000"],
     "warmup=5000 exceeds the 984 transitions the replay can hold (replay_capacity=1000 over 4 environments)"),
])
def test_bad_input_is_one_line_and_exit_2_and_leaves_no_run_directory(tmp_path, flags, message):
    assert_train_refuses(tmp_path, ["--agent", "rainbow", *flags], message)


def test_central_inference_acts_with_the_agents_acting_copy(tmp_path):
    from impala_rl.runtime.backends.local import LocalBackend

    for options, sampling in (("", True), ("noisy=false", False)):
        cfg = _cfg(tmp_path, backend="local", inference="central", agent_options=options)
        learner = build_learner(cfg, probe_env(cfg))
        backend = LocalBackend(cfg, probe_env(cfg), learner.model)
        try:  # noisy layers keep sampling on the server; without them it acts in eval mode
            assert backend.server.model.training is sampling
        finally:
            backend.close()
    result = Trainer(_cfg(tmp_path, backend="local", inference="central", total_frames=800)).run()
    assert result.stop_reason == "done" and result.frames >= 800


def test_the_learner_draws_fresh_noise_at_every_update_for_the_online_and_the_target_network(tmp_path):
    from impala_rl.models.noisy import NoisyLinear

    cfg = _cfg(tmp_path)
    learner = build_learner(cfg, probe_env(cfg))
    g, B = torch.Generator().manual_seed(0), cfg.batch_size
    batch = {"obs": torch.randn(2, B, 4, generator=g), "first": torch.zeros(2, B, dtype=torch.bool),
             "last_action": torch.zeros(2, B, dtype=torch.int64), "reward": torch.zeros(2, B),
             "action": torch.randint(2, (B,), generator=g), "window_rewards": torch.randn(B, 3, generator=g),
             "window_terminals": torch.zeros(B, 3, dtype=torch.bool), "window_bootstraps": torch.zeros(B, 3),
             "weight": torch.ones(B), "version": torch.zeros(B, dtype=torch.int64)}
    noise = []
    for _ in range(2):
        learner.update(batch)
        online, target = ([m.bias_epsilon.clone() for m in net.modules() if isinstance(m, NoisyLinear)]
                          for net in (learner.model, learner.agent.target))
        assert online and learner.model.training and learner.agent.target.training
        assert not any(torch.equal(a, b) for a, b in zip(online, target))  # each network its own draw
        noise.append(online + target)
    assert not any(torch.equal(a, b) for a, b in zip(*noise))  # a new draw at the second update, in both networks


def test_a_rainbow_run_on_atari_stores_single_frames_and_learns_from_rebuilt_stacks(tmp_path):
    # The conv torso on 4 stacked 84x84 frames, the replay holding one frame per row.
    cfg = _cfg(tmp_path, env="ALE/Pong-v5", torso="auto", num_actors=1, envs_per_actor=2,
               batch_size=8, total_frames=2_400, agent_options="replay_capacity=1000,warmup=100")
    trainer = Trainer(cfg)
    sources = _capture_source(trainer)
    result = trainer.run()
    replay = sources[0].replay
    assert result.stop_reason == "done" and result.version > 0
    assert replay.frame_stack == 4 and replay._frames.shape[1:] == (1, 84, 84) and replay._frames.dtype == np.uint8
    sample = replay.sample(8, 1.0)
    assert sample["obs"].shape == (8, 4, 84, 84) and sample["next_obs"].shape == (8, 4, 84, 84)
