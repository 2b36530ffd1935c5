"""ImpalaNet: output shapes and packing, the LSTM unroll/step equivalence and episode
resets the learner relies on, gradient flow, shape checks and channels_last."""

import dataclasses
import itertools

import pytest
import torch

from impala_rl.models import TORSOS, ImpalaNet, NetConfig, NetOutput

A = 3  # action_dim used throughout
OBS_SHAPES = {"mlp": (5,), "shallow": (2, 36, 36), "deep": (2, 20, 20), "minatar": (4, 10, 10)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_net(torso="mlp", policy_type="categorical", use_lstm=True, num_values=1, **kwargs):
    """A small net; ``kwargs`` are :class:`NetConfig` fields."""
    kwargs.setdefault("lstm_size", 16)
    kwargs.setdefault("mlp_sizes", (8,))
    config = NetConfig(torso=torso, use_lstm=use_lstm, **kwargs)
    return ImpalaNet(OBS_SHAPES[torso], A, policy_type, config, num_values=num_values)


def make_inputs(net, T, B, first_prob=0.0):
    """Random (obs, last_action, last_reward, first) for ``net``; obs uint8 for images."""
    if len(net.obs_shape) == 3:
        obs = torch.randint(0, 256, (T, B, *net.obs_shape), dtype=torch.uint8)
    else:
        obs = torch.randn(T, B, *net.obs_shape)
    if net.policy_type == "categorical":
        last_action = torch.randint(0, net.action_dim, (T, B))
    else:
        last_action = torch.randn(T, B, net.action_dim)
    last_reward = torch.randn(T, B)
    first = torch.rand(T, B) < first_prob
    return obs, last_action, last_reward, first


def random_state(net, B):
    """A non-zero core state, so that a reset is visible."""
    return tuple(torch.randn_like(s) for s in net.initial_state(B))


def select(out: NetOutput, index) -> NetOutput:
    """The same [T, B] slice of every output."""
    return NetOutput(*(x[index] for x in out))


def assert_outputs_equal(actual, expected, atol=1e-5):
    """Two NetOutputs (or core states) agree tensor by tensor to ``atol`` (float32 rounding:
    a batched convolution may sum in another order than the stepped one; 1.3e-6 was seen)."""
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=atol)


@pytest.mark.parametrize(
    "torso, policy_type, use_lstm, T, B",
    [
        (torso, policy, lstm, T, B)
        for torso, policy, lstm in itertools.product(
            TORSOS, ("categorical", "gaussian"), (False, True)
        )
        for T, B in ((1, 1), (4, 3))
    ],
)
def test_output_shapes_and_dtypes(torso, policy_type, use_lstm, T, B):
    net = make_net(torso, policy_type, use_lstm)
    out, state = net(*make_inputs(net, T, B), net.initial_state(B))
    P = A if policy_type == "categorical" else 2 * A
    assert isinstance(out, NetOutput)
    assert net.policy_param_size == P
    assert out.policy_params.shape == (T, B, P) and out.policy_params.dtype == torch.float32
    assert out.values.shape == (T, B, 1) and out.values.dtype == torch.float32
    if use_lstm:
        assert [s.shape for s in state] == [(B, 16), (B, 16)]
    else:
        assert state == ()


def test_initial_state():
    net = make_net(use_lstm=True, lstm_size=7)
    h, c = net.initial_state(4)
    assert h.shape == c.shape == (4, 7) and h.dtype == torch.float32
    assert not h.any() and not c.any()
    assert make_net(use_lstm=False).initial_state(4) == ()


def test_gaussian_policy_packs_mean_then_state_independent_log_std():
    net = make_net(policy_type="gaussian")
    with torch.no_grad():
        net.log_std.copy_(torch.tensor([-1.0, 0.0, 0.5]))
    out, _ = net(*make_inputs(net, 2, 3), net.initial_state(3))
    mean, log_std = out.policy_params.split(A, dim=-1)
    torch.testing.assert_close(log_std, net.log_std.detach().expand(2, 3, A))
    assert not torch.allclose(mean[0, 0], mean[1, 2])  # the mean depends on the input


def test_init_log_std_sets_every_dimension_and_a_bad_value_is_one_line():
    from impala_rl.config import ConfigError, TrainConfig

    net = make_net(policy_type="gaussian", init_log_std=-1.5)
    out, _ = net(*make_inputs(net, 2, 3), net.initial_state(3))
    _, log_std = out.policy_params.split(A, dim=-1)
    assert torch.equal(log_std, torch.full((2, 3, A), -1.5))
    assert torch.equal(make_net(policy_type="gaussian").log_std.detach(), torch.zeros(A))  # default: std 1
    with pytest.raises(ConfigError, match=r"init_log_std must be in \[-10, 2\]"):
        TrainConfig(init_log_std=3.0).validate()


def test_initial_policy_is_near_uniform():
    # Orthogonal policy-head init with gain 0.01: logits start close to 0.
    net = make_net(torso="shallow", use_lstm=False)
    out, _ = net(*make_inputs(net, 2, 2))
    assert out.policy_params.abs().max() < 0.1


def test_multiple_value_outputs_for_popart():
    net = make_net(num_values=4)
    assert isinstance(net.value_head, torch.nn.Linear) and net.value_head.out_features == 4
    out, _ = net(*make_inputs(net, 2, 3), net.initial_state(3))
    assert out.values.shape == (2, 3, 4)


@pytest.mark.parametrize("torso", ["mlp", "shallow"])
@pytest.mark.parametrize("policy_type", ["categorical", "gaussian"])
def test_unroll_over_T_equals_stepping_T_times(torso, policy_type):
    # The learner unrolls over a trajectory the actor produced one step at a time: both
    # must give the same outputs, episode starts included.
    net = make_net(torso, policy_type)
    T, B = 6, 3
    inputs = make_inputs(net, T, B, first_prob=0.3)
    state0 = random_state(net, B)
    unrolled, unrolled_state = net(*inputs, state0)

    state, steps = state0, []
    for t in range(T):
        out, state = net(*(x[t : t + 1] for x in inputs), state)
        steps.append(out)
    stepped = NetOutput(*(torch.cat(parts) for parts in zip(*steps, strict=True)))
    assert_outputs_equal(unrolled, stepped)
    assert_outputs_equal(unrolled_state, state)


def test_first_flag_resets_state_before_its_step():
    net = make_net()
    T, B, reset_at = 5, 2, 2
    obs, last_action, last_reward, first = make_inputs(net, T, B)
    first[reset_at, 0] = True  # only environment 0 starts a new episode
    state0 = random_state(net, B)
    out, _ = net(obs, last_action, last_reward, first, state0)

    # From reset_at on, environment 0 behaves as a fresh run from the zero state.
    fresh, _ = net(
        *(x[reset_at:, :1] for x in (obs, last_action, last_reward, first)), net.initial_state(1)
    )
    assert_outputs_equal(select(out, (slice(reset_at, None), slice(0, 1))), fresh)

    # The reset really happens: without it the outputs differ...
    no_reset, _ = net(obs, last_action, last_reward, torch.zeros_like(first), state0)
    after = (slice(reset_at, None), 0)
    assert not torch.allclose(out.policy_params[after], no_reset.policy_params[after])
    # ...and only where it was asked for: before reset_at, and in environment 1, they agree.
    for index in (slice(None, reset_at), (slice(None), slice(1, None))):
        assert_outputs_equal(select(out, index), select(no_reset, index))


def test_first_flag_at_step_0_ignores_the_incoming_state():
    net = make_net()
    obs, last_action, last_reward, first = make_inputs(net, 3, 2)
    first[0] = True
    from_random, _ = net(obs, last_action, last_reward, first, random_state(net, 2))
    from_zeros, _ = net(obs, last_action, last_reward, first, net.initial_state(2))
    assert_outputs_equal(from_random, from_zeros)


@pytest.mark.parametrize("policy_type", ["categorical", "gaussian"])
def test_lstm_core_reads_last_action_and_last_reward(policy_type):
    net = make_net(policy_type=policy_type)
    obs, last_action, last_reward, first = make_inputs(net, 1, 2)
    state = net.initial_state(2)
    base, _ = net(obs, last_action, last_reward, first, state)
    other_action = (last_action + 1) % A if policy_type == "categorical" else last_action + 1
    changed_action, _ = net(obs, other_action, last_reward, first, state)
    changed_reward, _ = net(obs, last_action, last_reward + 1, first, state)
    assert not torch.allclose(base.policy_params, changed_action.policy_params)
    assert not torch.allclose(base.values, changed_reward.values)


def test_without_lstm_last_action_reward_and_first_are_unused():
    net = make_net(use_lstm=False)
    obs, last_action, last_reward, first = make_inputs(net, 2, 3)
    out, _ = net(obs, last_action, last_reward, first)
    other, _ = net(obs, (last_action + 1) % A, last_reward + 5, ~first)
    assert_outputs_equal(out, other)


def test_image_net_takes_uint8_or_float_scaled_to_unit_range():
    net = make_net("deep")
    obs, *rest = make_inputs(net, 2, 2)
    state = net.initial_state(2)
    # x / 255 and x * (1 / 255) differ in the last bit; the deep torso's outputs are O(1).
    assert_outputs_equal(net(obs, *rest, state)[0], net(obs.float() / 255, *rest, state)[0], atol=1e-5)


@pytest.mark.parametrize("torso", TORSOS)
@pytest.mark.parametrize("policy_type", ["categorical", "gaussian"])
@pytest.mark.parametrize("use_lstm", [False, True])
def test_gradients_reach_every_parameter(torso, policy_type, use_lstm):
    net = make_net(torso, policy_type, use_lstm)
    out, _ = net(*make_inputs(net, 3, 2), random_state(net, 2))
    # A random linear loss: non-zero gradient for every output (log_std starts at 0, so a
    # squared loss would give it a zero gradient).
    loss = sum((x * torch.randn_like(x)).sum() for x in out)
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("torso", ["shallow", "deep"])
def test_channels_last_gives_the_same_outputs(torso):
    default = make_net(torso)
    fast = make_net(torso, channels_last=True)
    fast.load_state_dict(default.state_dict())
    inputs = make_inputs(default, 3, 2, first_prob=0.3)
    state = random_state(default, 2)
    assert_outputs_equal(fast(*inputs, state)[0], default(*inputs, state)[0], atol=1e-5)


def test_constructor_rejects_observations_the_torso_cannot_take():
    with pytest.raises(
        ValueError,
        match=r"torso 'shallow' needs image observations \[C, H, W\]; this environment's "
        r"observations have shape \(4,\)\. Use --torso mlp",
    ):
        ImpalaNet((4,), 2, config=NetConfig(torso="shallow"))
    with pytest.raises(ValueError, match=r"torso 'mlp' needs flat observations .* \(4, 84, 84\)"):
        ImpalaNet((4, 84, 84), 2, config=NetConfig(torso="mlp"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"policy_type": "beta"}, r"unknown policy_type 'beta'"),
        ({"action_dim": 0}, r"action_dim must be >= 1; got 0"),
        ({"num_values": 0}, r"num_values must be >= 1; got 0"),
    ],
)
def test_constructor_rejects_bad_options(kwargs, message):
    args = {"obs_shape": (4,), "action_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ImpalaNet(**args)


def test_forward_says_which_input_has_the_wrong_shape():
    net = make_net()
    obs, last_action, last_reward, first = make_inputs(net, 4, 2)
    state = net.initial_state(2)
    with pytest.raises(ValueError, match=r"obs must have shape .* \[T, B, 5\]; got \(2, 5\)"):
        net(obs[0], last_action, last_reward, first, state)
    with pytest.raises(ValueError, match=r"last_action must have shape \[4, 2\] .* \(4, 2, 3\)"):
        net(obs, torch.zeros(4, 2, 3), last_reward, first, state)
    with pytest.raises(ValueError, match=r"last_reward must have shape \[4, 2\] .* got \(4,\)"):
        net(obs, last_action, last_reward[:, 0], first, state)
    with pytest.raises(ValueError, match=r"first must have shape \[4, 2\] .* got \(4, 2, 1\)"):
        net(obs, last_action, last_reward, first[..., None], state)
    with pytest.raises(ValueError, match=r"core_state must be \(h, c\), each of shape \[2, 16\]"):
        net(obs, last_action, last_reward, first, net.initial_state(3))
    with pytest.raises(ValueError, match=r"core_state must be \(h, c\)"):
        net(obs, last_action, last_reward, first, ())
    gaussian = make_net(policy_type="gaussian", use_lstm=False)
    with pytest.raises(ValueError, match=r"last_action must have shape \[4, 2, 3\]"):
        gaussian(obs, last_action, last_reward, first)
    with pytest.raises(ValueError, match=r"this network has no LSTM, so core_state must be \(\)"):
        gaussian(obs, torch.zeros(4, 2, 3), last_reward, first, state)


def test_orthogonal_init_gives_larger_features_and_zero_biases():
    _torch = torch

    x = _torch.randint(0, 256, (64, 4, 84, 84), dtype=_torch.uint8)
    rms = {}
    for init in ("torch", "orthogonal"):
        _torch.manual_seed(0)
        net = ImpalaNet((4, 84, 84), 6, config=NetConfig(torso="shallow", init=init))
        with _torch.no_grad():
            rms[init] = float(net.torso(x).pow(2).mean().sqrt())
        if init == "orthogonal":
            assert all(float(m.bias.detach().abs().max()) == 0.0 for m in net.torso.modules() if hasattr(m, "bias")
                       and isinstance(m.bias, _torch.Tensor))
            w = net.value_head.weight
            _torch.testing.assert_close(w @ w.T, _torch.eye(1))  # a unit row: gain 1
    assert rms["orthogonal"] > 5 * rms["torch"]


def test_net_config_is_a_frozen_value_the_net_keeps():
    config = NetConfig(mlp_sizes=[8, 4])
    assert config.mlp_sizes == (8, 4) and config == NetConfig(mlp_sizes=(8, 4))  # a list is kept as a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.use_lstm = True
    assert ImpalaNet((5,), A, config=config).config is config
    assert ImpalaNet((5,), A).config == NetConfig()  # the defaults: an MLP torso, no LSTM
    with pytest.raises(ValueError, match="lstm_size must be >= 1; got 0"):
        NetConfig(use_lstm=True, lstm_size=0)


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="unknown init"):
        ImpalaNet((4,), 2, config=NetConfig(init="xavier"))


def test_popart_network_returns_unnormalised_values():
    _torch = torch

    net = ImpalaNet((4,), 2, config=NetConfig(popart=True))
    net.popart.mu.fill_(3.0)
    net.popart.nu.fill_(9.0 + 4.0)  # sigma = sqrt(nu - mu^2) = 2
    obs = _torch.randn(2, 3, 4)
    zeros = dict(last_action=_torch.zeros(2, 3, dtype=_torch.long), last_reward=_torch.zeros(2, 3),
                 first=_torch.zeros(2, 3, dtype=_torch.bool))
    with _torch.no_grad():
        out = net(obs, **zeros)[0]
        head = net.value_head(net.torso(obs.reshape(6, 4))).view(2, 3, 1)
    _torch.testing.assert_close(out.values, 2.0 * head + 3.0)


def test_tanh_activation_bounds_the_mlp_features():
    obs = torch.randn(3, 2, 5) * 100  # large inputs: ReLU features grow with them, tanh ones cannot
    features = {}
    for activation in ("relu", "tanh"):
        net = make_net(use_lstm=False, activation=activation)
        features[activation] = net.torso(obs.reshape(6, 5))
    assert float(features["tanh"].abs().max()) <= 1.0
    assert float(features["relu"].min()) >= 0.0 and float(features["relu"].max()) > 1.0
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; choose one of \('relu', 'tanh'\)"):
        make_net(use_lstm=False, activation="gelu")


def test_separate_value_torso_shares_no_weights_with_the_policy():
    net = make_net(use_lstm=False, policy_type="gaussian", separate_value_torso=True)
    inputs = make_inputs(net, 4, 2)
    before = net(*inputs)[0]
    with torch.no_grad():  # change the value torso: the policy must not move, the values must
        for p in net.value_torso.parameters():
            p.add_(1.0)
    after = net(*inputs)[0]
    torch.testing.assert_close(after.policy_params, before.policy_params, rtol=0, atol=0)
    assert not torch.allclose(after.values, before.values)
    # ... and the other way round: the policy torso does not feed the values.
    with torch.no_grad():
        for p in net.torso.parameters():
            p.add_(1.0)
    torch.testing.assert_close(net(*inputs)[0].values, after.values, rtol=0, atol=0)
    # Orthogonal init covers the value torso too (zero biases).
    fresh = make_net(use_lstm=False, separate_value_torso=True)
    assert all(float(m.bias.abs().max()) == 0.0 for m in fresh.value_torso.modules() if isinstance(m, torch.nn.Linear))


def test_separate_value_torso_is_refused_with_the_lstm():
    with pytest.raises(ValueError, match="separate value torso cannot be combined with the LSTM"):
        make_net(use_lstm=True, separate_value_torso=True)


def test_bounded_mean_stays_inside_the_action_box_and_learns():
    small = NetConfig(torso="mlp", mlp_sizes=(8,))
    net = ImpalaNet((5,), 2, "gaussian", small, mean_bounds=((-1.0, 0.0), (1.0, 4.0)))
    with torch.no_grad():
        net.policy_head.weight.mul_(1e4)  # push the raw head far out
    obs, last_action, last_reward, first = make_inputs(net, 3, 4)
    out = net(obs * 10, last_action, last_reward, first)[0]
    mean = out.policy_params[..., :2]
    assert float(mean[..., 0].min()) >= -1.0 and float(mean[..., 0].max()) <= 1.0
    assert float(mean[..., 1].min()) >= 0.0 and float(mean[..., 1].max()) <= 4.0
    fresh = ImpalaNet((5,), 2, "gaussian", small, mean_bounds=((-1.0, 0.0), (1.0, 4.0)))
    out = fresh(obs, last_action, last_reward, first)[0]
    torch.testing.assert_close(out.policy_params[..., 1], torch.full((3, 4), 2.0), atol=0.05, rtol=0)  # centre
    out.policy_params.sum().backward()
    assert fresh.policy_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mean_bounds must be finite"):
        ImpalaNet((5,), 1, "gaussian", mean_bounds=((-float("inf"),), (1.0,)))
    with pytest.raises(ValueError, match="mean_bounds needs a gaussian policy"):
        ImpalaNet((5,), 2, "categorical", mean_bounds=((-1.0, -1.0), (1.0, 1.0)))
