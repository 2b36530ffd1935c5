"""The MERLIN agent (agents/merlin): the network contract and its named state, unrolling equal
to stepping across episode starts and unroll boundaries, the memory reset by ``first`` and
written in order (hand-checked retro-halves), the learner reproducing the actor's policy from
the stored state, the loss (finite; the ELBO trains the encoder, the RL loss does not reach
it unless RL-MEM), the options refused in one line, and a short training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from impala_rl.agents import make_agent
from impala_rl.agents.impala import ImpalaAgent
from impala_rl.agents.merlin import MerlinAgent, MerlinConfig, MerlinNet, state_nbytes
from impala_rl.agents.merlin.network import STATE_NAMES
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.envs import EnvSpec, describe, make_env
from impala_rl.envs.vector import GymEnvGroup
from impala_rl.models import net_inputs
from impala_rl.runtime.actor import Actor
from impala_rl.runtime.builders import build_learner, rollout_spec
from impala_rl.runtime.train import Trainer

VECTOR = EnvSpec((4,), np.dtype(np.float32), "categorical", 2)
SMALL = "z_size=4,memory_slots=5,mbp_hidden=8,policy_hidden=8,decoder_hidden=8"
Z, N = 4, 5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(options: str = SMALL, **kw) -> TrainConfig:
    base = dict(env="CartPole-v1", agent="merlin", torso="mlp", mlp_sizes=(16,), num_actors=1, envs_per_actor=3,
                batch_size=3, unroll_length=5, reward_clip=0.5, seed=3, agent_options=options)
    return TrainConfig(**{**base, **kw}).validate()


def _agent(options: str = SMALL, spec: EnvSpec = VECTOR, **kw) -> MerlinAgent:
    return make_agent(_cfg(options, **kw), spec)


def _net(options: str = SMALL) -> MerlinNet:
    net = _agent(options).build_model()
    with torch.no_grad():  # the policy head starts near zero (gain 0.01): make state mismatches visible
        torch.nn.init.normal_(net.policy_head.weight, std=1.0)
    return net


def _inputs(T: int, B: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    if T > 7:
        first[4, 1] = first[7, 2] = True  # episodes start mid-sequence in environments 1 and 2
    last_action = torch.randint(0, 2, (T, B), generator=g).masked_fill(first, 0)
    reward = torch.randn(T, B, generator=g).masked_fill(first, 0.0)
    return {"obs": torch.randn(T, B, 4, generator=g), "last_action": last_action, "last_reward": reward,
            "first": first}


def _rows(inputs: dict, rows: slice) -> dict:
    return {k: v[rows] for k, v in inputs.items()}


def test_contract_shapes_and_named_state():
    agent = _agent()
    net = agent.build_model()
    fields = agent.state_fields()
    assert tuple(fields) == STATE_NAMES
    state = net.initial_state(3)
    assert [(tuple(s.shape[1:]), s.dtype) for s in state] == [(shape, dtype) for shape, dtype in fields.values()]
    assert fields["memory"][0] == (N, 2 * Z) and fields["mbp_reads"][0] == (3 * 2 * Z,)
    assert fields["pol_reads"][0] == (2 * Z,) and fields["step"] == ((), torch.int64)
    out, new_state = net(core_state=state, **_rows(_inputs(2, 3), slice(None)))
    assert out.policy_params.shape == (2, 3, 2) and out.values.shape == (2, 3, 1)
    assert [s.shape for s in new_state] == [s.shape for s in state]
    assert net.policy_param_size == 2 and net.num_values == 1
    build_learner(_cfg(), VECTOR)  # the runtime's own contract check passes
    # the state one unroll stores, per environment (the agent docstring's figure for the defaults)
    assert agent.state_bytes() == sum(s[0].numel() * s.element_size() for s in net.initial_state(1))
    assert state_nbytes(MerlinConfig()) == _agent("").state_bytes() == 20_232


@pytest.mark.parametrize("mode", ["train", "eval", "train_sample_all"])
def test_unrolling_equals_stepping_across_episode_starts_and_unroll_boundaries(mode):
    """Train mode with the default z_sample=decoders runs its recurrence on the posterior mean
    (deterministic); z_sample=all samples it, reproducibly from one generator."""
    options = SMALL + (",z_sample=all" if mode == "train_sample_all" else "")
    net = _net(options).train(mode != "eval")
    T, B = 9, 3  # 9 steps > 5 slots: environment 0 overwrites its least used slots
    inputs = _inputs(T, B)

    def gen():
        return torch.Generator().manual_seed(7) if mode == "train_sample_all" else None

    with torch.no_grad():
        full, full_state = net(core_state=net.initial_state(B), generator=gen(), **inputs)
        state, steps, g = net.initial_state(B), [], gen()
        for t in range(T):
            out, state = net(core_state=state, generator=g, **_rows(inputs, slice(t, t + 1)))
            steps.append(out)
        g = gen()
        first_half, mid = net(core_state=net.initial_state(B), generator=g, **_rows(inputs, slice(0, 5)))
        second_half, split_state = net(core_state=mid, generator=g, **_rows(inputs, slice(5, T)))
    for name in ("policy_params", "values", "post_mu", "prior_mu", "z"):
        stepped = torch.cat([getattr(o, name) for o in steps])
        split = torch.cat([getattr(first_half, name), getattr(second_half, name)])
        torch.testing.assert_close(stepped, getattr(full, name), atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(split, getattr(full, name), atol=1e-5, rtol=0, msg=name)
    for name, a, b, c in zip(STATE_NAMES, full_state, state, split_state):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(c, a, atol=1e-5, rtol=0, msg=name)
    assert full_state[STATE_NAMES.index("step")].tolist() == [9, 5, 2]  # writes since each episode began
    if mode == "train_sample_all":  # the sample, not the mean, drove the recurrence
        assert (full.z - full.post_mu).abs().max() > 1e-2


def test_memory_is_written_in_order_and_reset_by_first():
    net = _net().eval()
    gamma = net.config.memory_gamma
    assert gamma == pytest.approx(0.99)  # memory_gamma < 0 (default): the run's discount
    inputs = _inputs(3, 3)
    inputs["first"][:] = False
    inputs["first"][0] = True
    with torch.no_grad():
        out, state = net(core_state=net.initial_state(3), **inputs)
    named = dict(zip(STATE_NAMES, state))
    z = out.post_mu  # eval mode: z is the posterior mean
    torch.testing.assert_close(out.z, z)
    memory = named["memory"]
    assert named["step"].tolist() == [3, 3, 3]
    torch.testing.assert_close(memory[:, :3, :Z], z.transpose(0, 1))  # slots 0, 1, 2 hold z_0, z_1, z_2
    assert torch.count_nonzero(memory[:, 3:]) == 0
    # retro-halves: slot k holds sum_{j>k} (1 - gamma) gamma^(j-k-1) z_j; the newest slot none yet
    torch.testing.assert_close(memory[:, 0, Z:], (1 - gamma) * z[1] + (1 - gamma) * gamma * z[2])
    torch.testing.assert_close(memory[:, 1, Z:], (1 - gamma) * z[2])
    assert torch.count_nonzero(memory[:, 2, Z:]) == 0
    torch.testing.assert_close(named["write_weights"], torch.eye(N)[2].expand(3, N))

    # one more step, an episode starting in environment 0 only
    step = _inputs(1, 3, seed=1)
    step["first"][:] = torch.tensor([True, False, False])
    with torch.no_grad():
        after, new_state = net(core_state=state, **step)
        fresh, _ = net(core_state=net.initial_state(3), **step)
    new = dict(zip(STATE_NAMES, new_state))
    assert new["step"].tolist() == [1, 4, 4]
    torch.testing.assert_close(new["memory"][0, 0], torch.cat([after.post_mu[0, 0], torch.zeros(Z)]))
    assert torch.count_nonzero(new["memory"][0, 1:]) == 0  # the old episode's memories are gone
    torch.testing.assert_close(after.policy_params[0, 0], fresh.policy_params[0, 0], atol=1e-6, rtol=0)
    # control: where no episode starts, the carried state (memory, cores) changes the outputs
    assert (after.policy_params[0, 1:] - fresh.policy_params[0, 1:]).abs().max() > 1e-3
    torch.testing.assert_close(new["memory"][1:, :3, :Z], memory[1:, :3, :Z])  # the others write on: slot 3
    torch.testing.assert_close(new["memory"][1:, 3, :Z], after.post_mu[0, 1:])


@pytest.fixture(scope="module")
def unrolls():
    """Two consecutive unrolls of one actor in CartPole cut every 4 steps: (cfg, net, batch 1, batch 2)."""
    torch.set_num_threads(1)
    cfg = _cfg()
    envs = [make_env("CartPole-v1", seed=i, max_episode_steps=4) for i in range(3)]
    env_spec = describe(envs[0])
    spec = rollout_spec(cfg, env_spec)
    assert spec.state_names == STATE_NAMES
    net = _net().eval()
    actor = Actor(spec, net, make_agent(cfg, env_spec), GymEnvGroup(envs), seed=1, reward_clip=cfg.reward_clip)
    buffers = spec.allocate(6)
    actor.unroll(buffers, [0, 1, 2], version=0)
    actor.unroll(buffers, [3, 4, 5], version=0)
    actor.close()
    return cfg, net, spec.gather(buffers, [0, 1, 2]), spec.gather(buffers, [3, 4, 5])


def _learner_forward(cfg, net, batch, rows=slice(None)):
    inputs = net_inputs(batch["obs"][rows], batch["first"][rows], batch["last_action"][rows], batch["reward"][rows],
                        cfg.reward_clip)
    with torch.no_grad():
        return net(core_state=tuple(batch[name] for name in STATE_NAMES), **inputs)


def test_the_learner_reproduces_the_actors_policy_from_the_stored_state(unrolls):
    cfg, net, b1, b2 = unrolls
    assert b1["first"][1:].any() and b2["first"][1:].any()  # episodes end inside both unrolls
    learner_net = _net().train()  # training mode: decoders sample, the recurrence does not
    learner_net.load_state_dict(net.state_dict())
    for batch in (b1, b2):
        out, _ = _learner_forward(cfg, learner_net, batch)
        torch.testing.assert_close(out.policy_params, batch["policy_params"], atol=1e-5, rtol=0)
    _, state = _learner_forward(cfg, learner_net, b1, rows=slice(0, cfg.unroll_length))
    for name, value in zip(STATE_NAMES, state):
        torch.testing.assert_close(b2[name], value, atol=1e-5, rtol=0, msg=name)
    assert b2["memory"].abs().max() > 0 and int(b2["step"].max()) > 0
    learner = build_learner(cfg, describe(make_env("CartPole-v1")), learner_net)
    metrics = learner.step(b2)
    assert metrics["mean_rho"] == pytest.approx(1.0, abs=1e-5)  # fresh data is on-policy
    assert all(math.isfinite(metrics[k]) for k in ("kl", "recon_obs", "recon_return", "mbp_loss", "total_loss"))


MBP_MODULES = ("torso", "prior", "posterior", "mbp_lstm", "mbp_keys")
POLICY_MODULES = ("pol_lstm", "pol_keys", "policy_head", "value_head")


def _grads(net, loss) -> dict[str, float]:
    """The gradient norm of each module's parameters (0 where none reached them)."""
    net.zero_grad(set_to_none=True)
    loss.backward()
    return {name: sum(float(p.grad.norm()) for p in getattr(net, name).parameters() if p.grad is not None)
            for name in MBP_MODULES + POLICY_MODULES}


def _policy_grads(net) -> list[torch.Tensor]:
    return [p.grad.clone() for name in POLICY_MODULES for p in getattr(net, name).parameters()]


def test_the_elbo_trains_the_encoder_and_the_rl_loss_does_not_reach_it(unrolls):
    cfg, net, _, batch = unrolls
    agent = _agent()
    model = _net().train()
    model.load_state_dict(net.state_dict())
    output = agent.loss(model, batch)
    assert torch.isfinite(output.loss) and all(torch.isfinite(v) for v in output.metrics.values())
    assert {"kl", "recon_obs", "recon_reward", "recon_action", "recon_return", "mbp_loss", "pg_loss"} <= set(
        output.metrics)
    full = _grads(model, output.loss)
    assert all(full[name] > 0 for name in MBP_MODULES + POLICY_MODULES), full
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.obs_decoder.parameters())
    from_full = _policy_grads(model)
    rl = _grads(model, ImpalaAgent.loss(agent, model, batch).loss)  # IMPALA's V-trace loss alone
    assert all(rl[name] == 0 for name in MBP_MODULES), rl  # stop-gradient: RL does not train the encoder
    assert all(rl[name] > 0 for name in POLICY_MODULES), rl
    for a, b in zip(from_full, _policy_grads(model)):  # and the ELBO does not train the policy
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)

    rl_mem = _agent(SMALL + ",mbp_loss=false")
    model = rl_mem.build_model().train()
    assert not hasattr(model, "obs_decoder")
    output = rl_mem.loss(model, batch)
    assert "kl" not in output.metrics and torch.isfinite(output.loss)
    grads = _grads(model, output.loss)
    assert all(grads[name] > 0 for name in MBP_MODULES), grads  # RL-MEM: RL trains the encoder through z


def test_options_and_environments_it_does_not_take_are_refused_in_one_line():
    cases = [
        (dict(options="foo=1"), "agent option 'foo=1' is not KEY=VALUE with KEY one of: z_size"),
        (dict(options="z_sample=prior"), "agent option z_sample=prior: must be one of decoders, all"),
        (dict(options="memory_slots=0"), "agent option memory_slots=0: must be >= 1"),
        (dict(options="kl_weight=-1"), "agent option kl_weight=-1.0: must be >= 0"),
        (dict(options="memory_gamma=1.5"), "agent option memory_gamma=1.5: must be in"),
        (dict(spec=EnvSpec((3,), np.dtype(np.float32), "gaussian", 1, (-2.0,), (2.0,))), "needs discrete actions"),
        (dict(spec=EnvSpec((4,), np.dtype(np.float32), "categorical", 3, tasks=("CartPole-v1", "Acrobot-v1"),
                           task_actions=(2, 3))), "trains on one environment"),
        (dict(value_torso="separate"), "takes --value-torso shared only"),
        (dict(compile=True), "does not take --compile"),
        (dict(options=SMALL + ",obs_likelihood=bernoulli"), r"obs_likelihood=bernoulli needs observations in \[0, 1\] "
                                                            r"\(CartPole-v1's are not\): use gaussian or auto"),
        (dict(options=SMALL + ",obs_likelihood=bernoulli", spec=EnvSpec((6,), np.dtype(np.float32), "categorical", 4,
                                                                       obs_in_unit_interval=True),
              normalize_observations=True), "--normalize-observations moves them out"),
    ]
    for kw, message in cases:
        with pytest.raises(ConfigError, match=message) as e:
            _agent(**kw)
        assert "\n" not in str(e.value)
    opts = _agent("memory_gamma=0.5,obs_likelihood=auto").opts
    assert opts.memory_gamma == 0.5 and opts.obs_likelihood == "gaussian"  # CartPole's are vectors


def test_auto_observation_likelihood_is_bernoulli_for_observations_in_the_unit_interval():
    one_hot = EnvSpec((6,), np.dtype(np.float32), "categorical", 4, obs_in_unit_interval=True)
    assert _agent(spec=one_hot).opts.obs_likelihood == "bernoulli"
    assert _agent(spec=VECTOR).opts.obs_likelihood == "gaussian"
    # normalised observations leave [0, 1]; an explicit choice wins over auto
    assert _agent(spec=one_hot, normalize_observations=True).opts.obs_likelihood == "gaussian"
    assert _agent(SMALL + ",obs_likelihood=gaussian", spec=one_hot).opts.obs_likelihood == "gaussian"
    assert _agent(SMALL + ",obs_likelihood=bernoulli", spec=one_hot).opts.obs_likelihood == "bernoulli"
    # the environments' own spaces
    assert describe(make_env("popgym/RepeatPreviousEasy-v0")).obs_in_unit_interval
    assert not describe(make_env("CartPole-v1")).obs_in_unit_interval


def test_a_short_serial_training_run_completes(tmp_path):
    cfg = TrainConfig(env="CartPole-v1", agent="merlin", backend="serial", num_actors=2, envs_per_actor=2,
                      batch_size=4, unroll_length=10, total_frames=400, learner_threads=1, optimizer="adam",
                      reward_clip=0.0, seed=5, quiet=True, log_interval=100.0, agent_options=SMALL,
                      run_dir=str(tmp_path / "run"))
    result = Trainer(cfg).run()
    assert result.stop_reason == "done" and result.frames >= 400 and result.version >= 1


def test_the_mbp_loss_weighs_each_reconstruction_and_the_kl_on_a_hand_case():
    from types import SimpleNamespace

    agent = _agent(SMALL + ",obs_weight=2,reward_weight=3,action_weight=5,return_weight=7,kl_weight=0.5")
    t = torch.tensor
    # T = 2 steps of one environment (rows 0..2; row 2 is the bootstrap row, left out); row 0 starts an episode
    out = SimpleNamespace(
        obs_pred=t([[[0.0, 1.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 1.0]], [[9.0, 9.0, 9.0, 9.0]]]),
        obs_target=t([[[1.0, 1.0, 0.0, 2.0]], [[1.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]),
        reward_pred=t([[0.25], [0.0], [9.0]]), action_logits=t([[[0.0, 0.0]], [[math.log(3.0), 0.0]], [[9.0, 0.0]]]),
        return_pred=t([[1.0], [0.5], [9.0]]),
        post_mu=t([[[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]], [[9.0, 0.0, 0.0, 0.0]]]),
        post_logvar=torch.zeros(3, 1, Z), prior_mu=torch.zeros(3, 1, Z),
        prior_logvar=t([[[0.0, 0.0, 0.0, 0.0]], [[math.log(2.0), 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]))
    batch = {"obs": torch.zeros(3, 1, 4), "first": t([[True], [False], [False]]),
             "last_action": t([[1], [1], [0]]), "reward": t([[3.0], [2.0], [0.0]])}
    vs = t([[2.0], [0.5]])  # the V-trace targets of rows 0 and 1
    loss, metrics = agent.mbp_loss(out, batch, vs)
    obs = [0.5 * (1 + 0 + 0 + 4), 0.5 * 1]  # unit-variance gaussian (CartPole's observations are not in [0, 1])
    # the previous reward, clipped to 0.5 as the network's input and zero at an episode's start
    reward = [0.5 * (0.0 - 0.25) ** 2, 0.5 * (0.5 - 0.0) ** 2]
    action = [0.0, -math.log(1 / 4)]  # none before an episode's start; logits (log 3, 0): p(action 1) = 1/4
    ret = [0.5 * (2.0 - 1.0) ** 2, 0.0]
    kl = [0.5 * 1.0, 0.5 * (0.5 - 1 + math.log(2.0))]  # KL(N(1, 1) || N(0, 1)); KL(N(0, 1) || N(0, 2))
    mean = lambda xs: sum(xs) / 2  # noqa: E731
    expected = 2 * (2 * mean(obs) + 3 * mean(reward) + 5 * mean(action) + 7 * mean(ret) + 0.5 * mean(kl))
    torch.testing.assert_close(loss, t(expected), rtol=1e-5, atol=1e-6)  # summed over the T x B = 2 steps
    torch.testing.assert_close(metrics["mbp_loss"], t(expected), rtol=1e-5, atol=1e-6)
    # with PopArt the return decoder's target is in the value head's normalised units: (vs - mu) / sigma
    popart = SimpleNamespace(statistics=lambda task: (t([1.0]) + 0 * task, t([2.0]) + 0 * task))
    normalised, _ = agent.mbp_loss(out, {**batch, "task": torch.zeros(1, dtype=torch.int64)}, vs, popart)  # per unroll
    ret_normalised = [0.5 * ((2.0 - 1.0) / 2 - 1.0) ** 2, 0.5 * ((0.5 - 1.0) / 2 - 0.5) ** 2]
    torch.testing.assert_close(normalised, t(expected + 2 * 7 * (mean(ret_normalised) - mean(ret))), rtol=1e-5, atol=1e-6)


def test_a_memory_the_learners_unrolls_cannot_hold_is_refused(monkeypatch):
    import os

    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 8 * 2**30 // 4096}  # a machine of 8 GiB
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    # 20,000 slots of 2Z + 3 = 67 floats: 5.4 MB of state per environment. With batches of 3 unrolls, the
    # 2 x 3 + 3 rollout slots hold 48 MB and the learner keeps about 4 copies of every step's state of its
    # batch: 4 x 51 x 3 x 5.4 MB = 3.3 GB. With batches of 7: 70 MB in 13 slots, but 7.6 GB in the learner.
    _agent("memory_slots=20000", unroll_length=50, batch_size=3).check_resources()  # fits in 8 GiB
    with pytest.raises(ConfigError, match=r"MERLIN's state in 13 rollout slots and the learner's unrolls \(4 copies of "
                                          r"the memory per step of its batch\) needs 7.2 GiB but this machine has 8.0 "
                                          r"GiB of memory; lower --agent-options memory_slots or z_size, or "
                                          r"--unroll-length or --batch-size"):
        _agent("memory_slots=20000", unroll_length=50, batch_size=7).check_resources()
