"""Truncation vs termination through an actor unroll and into the learner's inputs.

One actor steps four copies of a counting env (obs = step count, reward 1.5):
0: truncated by a TimeLimit after 2 steps -> terminal, bootstrap V_mu(x_final);
1: terminates after 2 steps               -> terminal, bootstrap 0;
2: terminates *and* hits the time limit   -> a termination: bootstrap 0;
3: never ends, loses a life on step 1     -> terminal only with episodic_life.
"""

import numpy as np
import pytest
import torch
from gymnasium.wrappers import TimeLimit
from impala_test_envs import CountingEnv

from impala_rl.agents.impala import ImpalaAgent, loss_inputs
from impala_rl.config import TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.envs.vector import GymEnvGroup
from impala_rl.models import ImpalaNet, NetConfig, net_inputs
from impala_rl.runtime.actor import Actor
from impala_rl.runtime.types import RolloutSpec

T = 5
EPISODE = 2  # episodes of envs 0-2 end on the transitions into rows 2 and 4
REWARD = 1.5
REWARD_CLIP = 1.0
DISCOUNT = 0.9
TRUNC, TERM, BOTH, LIFE = range(4)




def make_envs():
    return GymEnvGroup([
        TimeLimit(CountingEnv(REWARD), max_episode_steps=EPISODE),
        CountingEnv(REWARD, terminate_at=EPISODE),
        TimeLimit(CountingEnv(REWARD, terminate_at=EPISODE), max_episode_steps=EPISODE),
        CountingEnv(REWARD, life_lost_at=1),
    ])


def make_net(use_lstm):
    torch.manual_seed(3)
    net = ImpalaNet((1,), 2, config=NetConfig(torso="mlp", use_lstm=use_lstm, lstm_size=8, mlp_sizes=(16,)))
    return net.eval()


def impala_spec(unroll_length, use_lstm):
    """The IMPALA agent (LSTM of 8 or none) on a 1-d observation, 2-action env, and its slot layout."""
    env_spec = EnvSpec((1,), np.dtype(np.float32), "categorical", 2)
    agent = ImpalaAgent(TrainConfig(unroll_length=unroll_length, use_lstm=use_lstm, lstm_size=8), env_spec)
    return RolloutSpec.for_agent(unroll_length, env_spec, agent), agent


def run_unroll(use_lstm, episodic_life=False):
    net = make_net(use_lstm)
    spec, agent = impala_spec(T, use_lstm)
    actor = Actor(spec, net, agent, make_envs(), seed=0, reward_clip=REWARD_CLIP, episodic_life=episodic_life)
    buffers = spec.allocate(4)
    episodes = actor.unroll(buffers, [0, 1, 2, 3], version=0)
    return net, spec.gather(buffers, [0, 1, 2, 3]), episodes


def expected_bootstrap(net, batch, k, i):
    """V_mu of the real final observation x_final = [EPISODE] reached on the transition into row k.

    The behaviour net continues the episode there: state after rows 0..k-1 (no reset),
    last action a_{k-1}, last reward r_{k-1}.
    """
    core = (batch["core_h"], batch["core_c"]) if "core_h" in batch else ()
    with torch.no_grad():
        inputs = net_inputs(batch["obs"][:k], batch["first"][:k], batch["last_action"][:k], batch["reward"][:k],
                            REWARD_CLIP)
        _, state = net(core_state=core, **inputs)
        state = tuple(s[i:i + 1] for s in state)
        final = net_inputs(torch.tensor([[[float(EPISODE)]]]), torch.tensor([[False]]),
                           batch["action"][k - 1:k, i:i + 1], batch["reward"][k:k + 1, i:i + 1], REWARD_CLIP)
        out, _ = net(core_state=state, **final)
        reset = net_inputs(batch["obs"][k:k + 1, i:i + 1], torch.tensor([[False]]),
                           batch["action"][k - 1:k, i:i + 1], batch["reward"][k:k + 1, i:i + 1], REWARD_CLIP)
        out_reset_obs, _ = net(core_state=state, **reset)
    return float(out.values[0, 0, 0]), float(out_reset_obs.values[0, 0, 0])


ENDS = [EPISODE, 2 * EPISODE]  # rows whose incoming transition ended an episode (envs 0-2)


@pytest.mark.parametrize("use_lstm", [False, True], ids=["mlp", "lstm"])
def test_terminal_and_first_flags(use_lstm):
    _, batch, _ = run_unroll(use_lstm)
    for i in (TRUNC, TERM, BOTH):
        expected = torch.zeros(T + 1, dtype=torch.bool)
        expected[ENDS] = True
        assert torch.equal(batch["terminal"][:, i], expected), i
        expected[0] = True  # the very first observation starts an episode too
        assert torch.equal(batch["first"][:, i], expected), i
        # The row after an episode end holds the next episode's reset observation...
        assert batch["obs"][ENDS, i, 0].tolist() == [0.0, 0.0]
        # ... but still the final (raw) reward of the episode that ended, and no last action.
        assert batch["reward"][ENDS, i].tolist() == [REWARD, REWARD]
        assert batch["last_action"][ENDS, i].tolist() == [0, 0]
    assert not batch["terminal"][:, LIFE].any()  # no episodic_life: a lost life is not terminal


@pytest.mark.parametrize("use_lstm", [False, True], ids=["mlp", "lstm"])
def test_bootstrap_only_on_truncation_and_from_the_real_final_observation(use_lstm):
    net, batch, _ = run_unroll(use_lstm)
    for k in ENDS:
        value, value_of_reset_obs = expected_bootstrap(net, batch, k, TRUNC)
        assert abs(value - value_of_reset_obs) > 1e-4, "the test needs V(x_final) != V(x_reset)"
        assert float(batch["bootstrap"][k, TRUNC]) == pytest.approx(value, abs=1e-5)
    not_truncated = torch.ones(T + 1, 4, dtype=torch.bool)
    not_truncated[ENDS, TRUNC] = False
    assert torch.count_nonzero(batch["bootstrap"][not_truncated]) == 0


@pytest.mark.parametrize("use_lstm", [False, True], ids=["mlp", "lstm"])
def test_loss_inputs_bootstrap_truncations_and_cut_terminations(use_lstm):
    _, batch, _ = run_unroll(use_lstm)
    cfg = TrainConfig(discount=DISCOUNT, reward_clip=REWARD_CLIP)
    out = loss_inputs(batch, cfg)
    rewards, discounts = out["rewards"], out["discounts"]
    assert rewards.shape == discounts.shape == (T, 4)
    clipped = min(REWARD, REWARD_CLIP)
    for t in range(T):  # transition t goes from row t to row t+1
        ended = t + 1 in ENDS
        for i in range(4):
            ends_here = ended and i != LIFE
            boot = float(batch["bootstrap"][t + 1, i]) if (ends_here and i == TRUNC) else 0.0
            assert float(rewards[t, i]) == pytest.approx(clipped + DISCOUNT * boot, abs=1e-6), (t, i)
            assert float(discounts[t, i]) == pytest.approx(0.0 if ends_here else DISCOUNT), (t, i)
    assert float(batch["bootstrap"][EPISODE, TRUNC]) != 0.0


def test_reward_clip_zero_leaves_rewards_raw():
    _, batch, _ = run_unroll(False)
    out = loss_inputs(batch, TrainConfig(discount=DISCOUNT, reward_clip=0.0))
    assert float(out["rewards"][0, TERM]) == pytest.approx(REWARD)


def test_episodic_life_makes_a_life_loss_terminal_without_a_reset():
    _, batch, _ = run_unroll(False, episodic_life=True)
    assert batch["terminal"][:, LIFE].tolist() == [False, True, False, False, False, False]
    assert not batch["first"][1:, LIFE].any()  # the episode goes on
    assert torch.count_nonzero(batch["bootstrap"][:, LIFE]) == 0
    out = loss_inputs(batch, TrainConfig(discount=DISCOUNT, reward_clip=REWARD_CLIP))
    assert out["discounts"][:, LIFE].tolist() == pytest.approx([0.0, DISCOUNT, DISCOUNT, DISCOUNT, DISCOUNT])


def test_episode_stats_are_raw_returns_and_lengths():
    _, _, episodes = run_unroll(False)
    # Envs 0-2 finish two episodes each in 5 steps; env 3 none.
    assert len(episodes) == 6
    for e in episodes:
        assert e.length == EPISODE
        assert e.ret == pytest.approx(EPISODE * REWARD)  # unclipped: 3.0, not 2.0


def test_episode_stats_span_unrolls():
    """An episode longer than an unroll is reported once, with its whole length."""
    net = make_net(False)
    spec, agent = impala_spec(3, False)
    actor = Actor(spec, net, agent, GymEnvGroup([TimeLimit(CountingEnv(REWARD), max_episode_steps=7)]), seed=0)
    buffers = spec.allocate(1)
    per_unroll = [actor.unroll(buffers, [0], version=0) for _ in range(3)]  # 9 steps
    assert [len(e) for e in per_unroll] == [0, 0, 1]
    assert per_unroll[2][0].length == 7
    assert per_unroll[2][0].ret == pytest.approx(7 * REWARD)
