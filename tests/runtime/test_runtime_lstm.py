"""The unroll contract with an LSTM: the learner, unrolling from the core state stored
with a slot, reproduces the actor's policy row by row, across unroll boundaries and
episode ends (see :mod:`impala_rl.runtime.types`)."""

import pytest
import torch

from impala_rl.config import TrainConfig
from impala_rl.envs import describe, make_env
from impala_rl.envs.vector import GymEnvGroup
from impala_rl.models import ImpalaNet, NetConfig
from impala_rl.models import net_inputs
from impala_rl.runtime.actor import Actor
from impala_rl.runtime.builders import build_learner, rollout_spec
from impala_rl.agents import make_agent

T = 5  # unroll length
N = 3  # environments
EPISODE_STEPS = 4  # CartPole cut by its TimeLimit every 4 steps: episode ends inside every unroll
REWARD_CLIP = 0.5  # CartPole's reward 1 is clipped, so actor and learner must clip alike




def make_cfg(**kw):
    return TrainConfig(env="CartPole-v1", use_lstm=True, lstm_size=16, torso="mlp", envs_per_actor=N,
                       num_actors=1, batch_size=N, unroll_length=T, reward_clip=REWARD_CLIP, **kw)


def make_net():
    torch.manual_seed(0)
    net = ImpalaNet((4,), 2, config=NetConfig(torso="mlp", use_lstm=True, lstm_size=16))
    with torch.no_grad():
        # The policy head starts near zero (gain 0.01), which would hide state mismatches
        # below any tolerance: make the logits depend visibly on the LSTM output.
        torch.nn.init.normal_(net.policy_head.weight, std=1.0)
    return net.eval()


@pytest.fixture(scope="module")
def unrolls():
    """Two consecutive unrolls of one actor: (net, batch of unroll 1, batch of unroll 2)."""
    torch.set_num_threads(1)
    envs = [make_env("CartPole-v1", seed=i, max_episode_steps=EPISODE_STEPS) for i in range(N)]
    cfg, env_spec = make_cfg(), describe(envs[0])
    spec = rollout_spec(cfg, env_spec)
    assert spec.state_names == ("core_h", "core_c") and spec.slot_fields()["core_h"][0] == (16,)
    net = make_net()
    actor = Actor(spec, net, make_agent(cfg, env_spec), GymEnvGroup(envs), seed=1, reward_clip=REWARD_CLIP)
    buffers = spec.allocate(2 * N)
    actor.unroll(buffers, [0, 1, 2], version=0)
    actor.unroll(buffers, [3, 4, 5], version=0)
    actor.close()
    return net, spec.gather(buffers, [0, 1, 2]), spec.gather(buffers, [3, 4, 5])


def learner_forward(net, batch, rows=slice(None)):
    """The learner's view: unroll over the rows from the slot's stored core state."""
    inputs = net_inputs(batch["obs"][rows], batch["first"][rows], batch["last_action"][rows],
                        batch["reward"][rows], REWARD_CLIP)
    with torch.no_grad():
        return net(core_state=(batch["core_h"], batch["core_c"]), **inputs)


def test_episodes_end_inside_both_unrolls(unrolls):
    _, b1, b2 = unrolls
    for b in (b1, b2):
        assert b["obs"].shape == (T + 1, N, 4)
        assert b["core_h"].shape == b["core_c"].shape == (N, 16)
        assert b["first"][1:].any(), "the test needs episode starts inside the unroll"
        assert b["terminal"][1:].any()
        assert not b["first"].all()


def test_first_unroll_starts_from_zero_state(unrolls):
    _, b1, _ = unrolls
    assert b1["first"][0].all()
    assert torch.count_nonzero(b1["core_h"]) == 0
    assert torch.count_nonzero(b1["core_c"]) == 0


def test_unrolls_overlap_by_one_row(unrolls):
    _, b1, b2 = unrolls
    for name in ("obs", "first", "last_action", "reward", "terminal", "bootstrap", "action", "policy_params"):
        assert torch.equal(b2[name][0], b1[name][T]), name


def test_stored_state_of_second_unroll_is_the_state_before_row_T_of_the_first(unrolls):
    net, b1, b2 = unrolls
    _, (h, c) = learner_forward(net, b1, rows=slice(0, T))  # rows 0..T-1 of unroll 1
    assert b2["core_h"].abs().max() > 1e-2, "state should be non-trivial after T steps"
    torch.testing.assert_close(b2["core_h"], h, atol=1e-6, rtol=0)
    torch.testing.assert_close(b2["core_c"], c, atol=1e-6, rtol=0)


@pytest.mark.parametrize("which", [1, 2])
def test_learner_unroll_reproduces_actor_policy_every_row(unrolls, which):
    net, b1, b2 = unrolls
    batch = (b1, b2)[which - 1]
    out, _ = learner_forward(net, batch)
    assert out.policy_params.shape == batch["policy_params"].shape == (T + 1, N, 2)
    torch.testing.assert_close(out.policy_params, batch["policy_params"], atol=1e-5, rtol=0)


def test_state_is_reset_at_episode_starts(unrolls):
    net, b1, b2 = unrolls
    checked = 0
    for batch in (b1, b2):
        for k in range(T + 1):
            for i in range(N):
                if not batch["first"][k, i]:
                    continue
                row = {name: batch[name][k:k + 1, i:i + 1] for name in ("obs", "first", "last_action", "reward")}
                inputs = net_inputs(row["obs"], row["first"], row["last_action"], row["reward"], REWARD_CLIP)
                zero = net.initial_state(1)
                junk = (torch.randn(1, 16), torch.randn(1, 16))
                with torch.no_grad():
                    from_zero, _ = net(core_state=zero, **inputs)
                    from_junk, _ = net(core_state=junk, **inputs)
                torch.testing.assert_close(from_zero.policy_params[0, 0], batch["policy_params"][k, i],
                                           atol=1e-5, rtol=0)
                torch.testing.assert_close(from_junk.policy_params, from_zero.policy_params, atol=1e-6, rtol=0)
                checked += 1
    assert checked > N  # the episode starts inside the unrolls, not only the first reset


def test_state_matters_where_no_episode_starts(unrolls):
    """Control for the reset test: without a reset, a zero state gives other outputs."""
    net, _, b2 = unrolls
    k, i = next((k, i) for k in range(1, T + 1) for i in range(N) if not b2["first"][k, i] and not b2["first"][k - 1, i])
    row = {name: b2[name][k:k + 1, i:i + 1] for name in ("obs", "first", "last_action", "reward")}
    inputs = net_inputs(row["obs"], row["first"], row["last_action"], row["reward"], REWARD_CLIP)
    with torch.no_grad():
        from_zero, _ = net(core_state=net.initial_state(1), **inputs)
    assert (from_zero.policy_params[0, 0] - b2["policy_params"][k, i]).abs().max() > 1e-3


def test_learner_step_on_fresh_unrolls_is_on_policy(unrolls):
    """Same weights in actor and learner: every importance weight is 1."""
    net, b1, b2 = unrolls
    cfg = make_cfg()
    learner_net = make_net()
    learner_net.load_state_dict(net.state_dict())
    learner = build_learner(cfg, describe(make_env("CartPole-v1")), learner_net)
    metrics = learner.step(b2)
    assert metrics["mean_rho"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["rho_clipped_fraction"] == 0.0
    assert learner.version == 1
