"""The Rainbow agent (agents/rainbow): its options and their refusals, how its actors act
(Ape-X exploration rates per environment, noisy layers sampling while acting, greedy for
evaluation), its loss against hand-computed targets, the target network's life (refreshed,
checkpointed, restored and copied by exploit), and priorities computed by an actor that
equal the learner's for the same parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala_rl.agents import make_agent
from impala_rl.agents.rainbow import RainbowAgent
from impala_rl.agents.rainbow.network import QOutput, RainbowNet
from impala_rl.agents.rainbow.source import initial_priorities
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.envs import EnvSpec
from impala_rl.models.noisy import NoisyLinear

VECTOR = EnvSpec((4,), np.dtype(np.float32), "categorical", 3)
OFF = "double=false,prioritized=false,dueling=false,multistep=false,distributional=false,noisy=false"


def _agent(options: str = "", actor=None, **kw) -> RainbowAgent:
    base = dict(env="CartPole-v1", agent="rainbow", torso="mlp", mlp_sizes=(16,), num_actors=2, envs_per_actor=2,
                batch_size=4, reward_clip=0.0, seed=3, agent_options=options)
    return make_agent(TrainConfig(**{**base, **kw}).validate(), VECTOR, actor=actor)


def test_options_switch_each_component_off_and_bad_ones_are_refused_in_one_line():
    dqn = _agent(OFF)
    net = dqn.build_model()
    assert dqn.opts.horizon == 1 and dqn.support is None and net.policy_param_size == 3
    assert not any(isinstance(m, NoisyLinear) for m in net.modules()) and net.value is None
    full = _agent()
    assert full.opts.horizon == 3 and full.support.shape == (51,) and full.opts.v_max == 100.0  # unclipped rewards
    assert full.build_model().policy_param_size == 3 * 51
    with pytest.raises(ConfigError, match="agent option 'nstep=2' is not KEY=VALUE with KEY one of: double"):
        _agent("nstep=2")
    with pytest.raises(ConfigError, match=r"warmup=500 exceeds the 84 transitions the replay can hold \(replay_capacity=100 "
                                          r"over 4 environments\)"):  # rings of 25 rows, the last 3 incomplete, 1 frame
        _agent("replay_capacity=100,warmup=500")
    with pytest.raises(ConfigError, match="replay_capacity=40 gives each of the 4 environments 10 rows; each needs at least 21"):
        _agent("replay_capacity=40,warmup=0")
    for flags, what in ((dict(learner_minibatches=2), "--learner-minibatches > 1"), (dict(sync=True), "--sync"),
                        (dict(replay_proportion=0.5), "--replay-proportion"), (dict(num_learners=2, backend="ray"), "--num-learners")):
        with pytest.raises(ConfigError, match=f"--agent rainbow does not take {what}"):
            _agent("", **flags)
    with pytest.raises(ConfigError, match="replay_ratio=0.0: must be > 0"):
        _agent("replay_ratio=0")
    # 20k steps, 1,000 of them the warm-up: a ratio under 1/19,000 makes no update; the least one offered works
    with pytest.raises(ConfigError, match="replay_ratio=5.26e-05 can never be met: the 19000 agent steps after the "
                                          "warm-up earn no update; raise it to 5.27e-05 or more"):
        _agent("replay_ratio=5.26e-05", total_frames=20_000)
    assert _agent("replay_ratio=5.27e-05", total_frames=20_000).opts.replay_ratio == 5.27e-05
    with pytest.raises(ConfigError, match="--total-frames 1000 gives 1000 agent steps, no more than the warm-up's 1000"):
        _agent("", total_frames=1_000)
    gaussian = EnvSpec((3,), np.dtype(np.float32), "gaussian", 1, (-2.0,), (2.0,))
    with pytest.raises(ConfigError, match="needs discrete actions; Pendulum-v1 has a continuous"):
        make_agent(TrainConfig(env="Pendulum-v1", agent="rainbow").validate(), gaussian)


def test_each_environment_explores_at_its_ape_x_rate_and_evaluation_is_greedy():
    agent = _agent("noisy=false", num_actors=1, envs_per_actor=4)
    np.testing.assert_allclose(agent.epsilons.numpy(), [0.4 ** (1 + 7 * i / 3) for i in range(4)], rtol=1e-6)
    q = torch.tensor([[1.0, 5.0, 2.0]]).expand(4000, 3)
    out = QOutput(torch.zeros(1, 4000, 3 * 51), torch.zeros(1, 4000, 1))
    agent.q = lambda params: q  # the greedy action is 1 everywhere
    streams = torch.arange(4).repeat(1000)
    action = agent.act(out, torch.Generator().manual_seed(0), streams=streams).action
    for i, eps in enumerate(agent.epsilons.tolist()):
        off_greedy = (action[streams == i] != 1).float().mean().item()
        assert abs(off_greedy - eps * 2 / 3) < 0.05  # a random action is the greedy one 1 time in 3
    assert (agent.act(out, torch.Generator().manual_seed(0), greedy=True).action == 1).all()


def test_noisy_layers_sample_while_acting_and_differ_between_online_and_target():
    agent = _agent(actor=0)
    acting = agent.acting_model(agent.build_model())
    x = torch.randn(1, 2, 4)
    a, _ = acting(x)
    b, _ = acting(x)
    assert not torch.equal(a.policy_params, b.policy_params)  # fresh noise at every step
    assert all(eps == 0.0 for eps in agent.epsilons.tolist())  # noisy nets explore without epsilon
    learner = _agent()
    model = learner.build_model()
    learner.before_updates(model, {})
    target = learner.target
    for (name, p), q in zip(model.state_dict().items(), target.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(model(x)[0].policy_params, target(x)[0].policy_params)  # own noise each
    model.eval()
    assert torch.equal(model(x)[0].policy_params, model(x)[0].policy_params)  # evaluation: the mean weights


def _batch(agent: RainbowAgent, B: int = 4, n: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(2, B, 4, generator=g), "first": torch.zeros(2, B, dtype=torch.bool),
            "last_action": torch.zeros(2, B, dtype=torch.int64), "reward": torch.zeros(2, B),
            "action": torch.randint(3, (B,), generator=g), "window_rewards": torch.randn(B, n, generator=g),
            "window_terminals": torch.tensor([[False, False, False], [False, True, False],
                                              [True, False, False], [False, False, False]])[:B, :n],
            "window_bootstraps": torch.zeros(B, n), "weight": torch.ones(B)}


def test_the_dqn_loss_is_the_huber_loss_of_the_double_q_target_computed_by_hand():
    agent = _agent(OFF.replace("double=false", "double=true").replace("multistep=false", "multistep=true"))
    model = agent.build_model()
    agent.before_updates(model, {})
    with torch.no_grad():  # a different target network, so that double Q matters
        for p in agent.target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = _batch(agent)
    out = agent.loss(model, batch)
    q_online = model(batch["obs"])[0].policy_params.detach()
    q_target = agent.target(batch["obs"][1:])[0].policy_params[0].detach()
    r, gamma = batch["window_rewards"], 0.99
    expected_td = []
    for b, terminals in enumerate(batch["window_terminals"].tolist()):
        ret, disc = 0.0, 1.0
        for j in range(3):
            ret += disc * float(r[b, j])
            disc *= gamma
            if terminals[j]:
                disc = 0.0
                break
        a_star = int(q_online[1, b].argmax())  # selected by the online network, valued by the target
        expected_td.append(ret + disc * float(q_target[b, a_star]) - float(q_online[0, b, batch["action"][b]]))
    td = torch.tensor(expected_td)
    torch.testing.assert_close(out.per_unroll["priority"], td.abs(), rtol=1e-5, atol=1e-5)
    huber = torch.where(td.abs() <= 1, 0.5 * td ** 2, td.abs() - 0.5)
    torch.testing.assert_close(out.loss, huber.mean(), rtol=1e-5, atol=1e-5)
    weighted = agent.loss(model, {**batch, "weight": torch.tensor([1.0, 0.0, 0.0, 0.0])}).loss
    torch.testing.assert_close(weighted, huber[0] / 4, rtol=1e-5, atol=1e-5)


def test_n_step_targets_clip_rewards_and_bootstrap_a_truncated_window_by_hand():
    agent = _agent("", reward_clip=1.0)
    batch = {"window_rewards": torch.tensor([[2.0, -3.0, 0.5], [0.5, 0.5, 0.5], [0.25, -0.5, 7.0]]),
             "window_terminals": torch.tensor([[False, True, False], [False, False, False], [True, False, False]]),
             "window_bootstraps": torch.tensor([[0.0, 4.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])}
    returns, discounts = agent.n_step_targets(batch)
    g = 0.99
    # row 0: truncated at step 1 with max_a Q(final observation) = 4: r0 + g (r1 + g 4), clipped to [-1, 1]; stops there
    # row 1: no end in the window: the full 3-step return, discounted g^3 onto the target's value
    # row 2: terminated at step 0: r0 alone, nothing after (a termination's bootstrap is 0)
    torch.testing.assert_close(returns, torch.tensor([1.0 + g * (-1.0 + g * 4.0), 0.5 * (1 + g + g * g), 0.25]))
    torch.testing.assert_close(discounts, torch.tensor([0.0, g ** 3, 0.0]))


@pytest.mark.parametrize("options", ["noisy=false", "noisy=false,distributional=false"])
def test_an_actors_priorities_equal_the_learners_for_the_same_parameters(options):
    actor, learner = _agent(options, actor=0), _agent(options)
    model = learner.build_model()
    learner.before_updates(model, {})  # the target is a copy of the online network
    batch = _batch(learner)
    params = model(batch["obs"])[0].policy_params.detach()  # [2, B, P]: x_t, x_{t+n}
    # what the actor records with the same network: at x_t for the action it takes, at x_{t+n} for the greedy one
    at_t = actor.act(QOutput(params[:1], torch.zeros(1, 4, 1)), torch.Generator().manual_seed(0), streams=torch.arange(4))
    at_next = actor.act(QOutput(params[1:], torch.zeros(1, 4, 1)), torch.Generator(), greedy=True)
    batch["action"] = at_t.action
    window = {**batch, "record_t:q_taken": at_t.record["q_taken"], "record_next:q_greedy": at_next.record["q_greedy"]}
    from_actor = initial_priorities(learner, window)
    from_learner = learner.loss(model, batch).per_unroll["priority"]
    torch.testing.assert_close(from_actor, from_learner, rtol=1e-4, atol=1e-5)


def test_what_an_actor_records_is_what_priorities_need():
    agent = _agent("noisy=false", actor=0)
    params = torch.randn(1, 2, 3 * 51)
    act = agent.act(QOutput(params, torch.zeros(1, 2, 1)), torch.Generator().manual_seed(1), streams=torch.arange(2))
    probs = torch.softmax(params[0].unflatten(-1, (3, 51)), -1)
    q = (probs * agent.support).sum(-1)
    for i in range(2):
        assert torch.allclose(act.record["q_taken"][i], probs[i, act.action[i]])
        assert torch.allclose(act.record["q_greedy"][i], probs[i, q[i].argmax()])
    dqn = _agent("noisy=false,distributional=false", actor=0)
    act = dqn.act(QOutput(params[..., :3], torch.zeros(1, 2, 1)), torch.Generator(), streams=torch.arange(2))
    torch.testing.assert_close(act.record["q_greedy"], params[0, :, :3].max(-1).values)


def test_the_target_network_is_refreshed_every_n_updates_and_kept_as_the_agents_state():
    agent = _agent("target_update=2")
    model = agent.build_model()
    agent.before_updates(model, {})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    agent.after_update(model, None)
    assert not torch.equal(next(agent.target.parameters()), next(model.parameters()))
    agent.after_update(model, None)  # the second update copies
    assert torch.equal(next(agent.target.parameters()), next(model.parameters()))
    state = agent.state_dict()
    fresh = _agent("target_update=2")
    fresh.load_state_dict(state)  # before the target exists (a resume): applied when it is made
    other = fresh.build_model()
    fresh.before_updates(other, {})
    assert fresh.updates == 2 and torch.equal(next(fresh.target.parameters()), next(model.parameters()))
    assert not torch.equal(next(other.parameters()), next(model.parameters()))


def test_the_network_keeps_the_runtime_contract():
    support = torch.linspace(-10, 10, 51)
    net = RainbowNet((4,), 3, "mlp", support, mlp_sizes=(8,))
    out, state = net(torch.randn(5, 2, 4))
    assert out.policy_params.shape == (5, 2, 153) and out.values.shape == (5, 2, 1) and state == ()
    q = (torch.softmax(out.policy_params.unflatten(-1, (3, 51)), -1) * support).sum(-1)
    torch.testing.assert_close(out.values[..., 0], q.max(-1).values)


def test_a_skipped_non_finite_update_leaves_the_old_priorities():
    from impala_rl.agents.rainbow.source import PrioritizedSource

    source = PrioritizedSource(_agent("replay_capacity=1000,warmup=100"), backend=None)
    written = []
    source.replay.set_priorities = lambda index, priority: written.append((index.tolist(), priority.tolist()))
    source.feedback({"replay_index": torch.tensor([3, 5, 7])}, {"priority": torch.tensor([0.5, float("nan"), 2.0])})
    assert written == [([3, 7], [0.5, 2.0])]


def test_noise_is_seeded_by_the_run_and_differs_between_copies():
    a, b = _agent(actor=0), _agent(actor=0)
    x = torch.randn(1, 2, 4)
    ma, mb = a.acting_model(a.build_model()), b.acting_model(b.build_model())
    assert torch.equal(ma(x)[0].policy_params, mb(x)[0].policy_params)  # same seed, same actor: same noise
    other = _agent(actor=1)
    mo = other.acting_model(other.build_model())
    assert not torch.equal(ma(x)[0].policy_params, mo(x)[0].policy_params)  # each actor its own
