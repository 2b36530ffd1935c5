"""NoisyLinear: initialisation, fresh noise per training forward, mean weights in eval,
factorised noise."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from impala_rl.models.noisy import NoisyLinear, has_noisy


def _layer(in_features=4, out_features=3, seed=0, sigma0=0.5):
    torch.manual_seed(seed)
    return NoisyLinear(in_features, out_features, sigma0=sigma0)


def _x(*shape, seed=123):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_initialisation_follows_the_paper():
    layer = _layer(16, 8, sigma0=0.5)
    bound = 1 / math.sqrt(16)
    for mu in (layer.weight_mu, layer.bias_mu):
        assert mu.abs().max() <= bound
        assert mu.std() > 0
    torch.testing.assert_close(layer.weight_sigma, torch.full((8, 16), 0.5 * bound))
    torch.testing.assert_close(layer.bias_sigma, torch.full((8,), 0.5 * bound))


def test_two_training_forwards_draw_different_noise():
    layer = _layer().train()
    x = _x(5, 4)
    first = layer(x)
    first_eps = layer.weight_epsilon.clone()
    second = layer(x)
    assert not torch.allclose(first, second)
    assert not torch.equal(first_eps, layer.weight_epsilon)


def test_eval_mode_uses_the_mean_weights_exactly():
    layer = _layer()
    x = _x(5, 4)
    layer.train()
    layer(x)  # leave some noise in the buffers
    layer.eval()
    out = layer(x)
    assert torch.equal(out, F.linear(x, layer.weight_mu, layer.bias_mu))
    torch.testing.assert_close(out, x @ layer.weight_mu.T + layer.bias_mu)
    assert torch.equal(layer(x), out)  # deterministic in eval mode


def test_two_instances_with_the_same_weights_differ_in_training():
    online = _layer(seed=0)
    target = _layer(seed=1)
    target.load_state_dict(online.state_dict())
    x = _x(5, 4)
    assert not torch.allclose(online(x), target(x))
    online.eval(), target.eval()
    assert torch.equal(online(x), target(x))


def test_generator_makes_noise_deterministic():
    x = _x(5, 4)
    a, b = _layer(seed=0), _layer(seed=0)
    a.set_generator(torch.Generator().manual_seed(7))
    b.set_generator(torch.Generator().manual_seed(7))
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), b(x))  # and the streams stay in step
    b.set_generator(None)  # back to the global RNG
    torch.manual_seed(7)
    assert not torch.equal(a(x), b(x))


def test_noise_is_factorised_with_f_of_gaussians():
    layer = _layer(6, 5)
    layer.set_generator(torch.Generator().manual_seed(3))
    layer(_x(2, 6))
    g = torch.Generator().manual_seed(3)
    eps_in = torch.randn(6, generator=g)
    eps_out = torch.randn(5, generator=g)
    f = lambda e: e.sign() * e.abs().sqrt()  # noqa: E731
    torch.testing.assert_close(layer.bias_epsilon, f(eps_out))
    torch.testing.assert_close(layer.weight_epsilon, torch.outer(f(eps_out), f(eps_in)))
    assert torch.linalg.matrix_rank(layer.weight_epsilon) == 1


def test_training_output_uses_the_stored_noise():
    layer = _layer()
    x = _x(5, 4)
    out = layer(x)
    weight = layer.weight_mu + layer.weight_sigma * layer.weight_epsilon
    bias = layer.bias_mu + layer.bias_sigma * layer.bias_epsilon
    torch.testing.assert_close(out, x @ weight.T + bias)


def test_noise_buffers_are_not_in_the_state_dict():
    layer = _layer()
    assert set(layer.state_dict()) == {"weight_mu", "weight_sigma", "bias_mu", "bias_sigma"}
    assert {"weight_epsilon", "bias_epsilon"} <= {name for name, _ in layer.named_buffers()}


def test_gradients_reach_mu_and_sigma():
    layer = _layer()
    layer(_x(5, 4)).square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_backward_through_several_training_forwards():
    # The learner runs the online net on x_t and x_{t+n} before one backward: the second
    # draw must not invalidate the first forward's graph.
    layer = _layer()
    loss = layer(_x(5, 4, seed=1)).sum() + layer(_x(5, 4, seed=2)).sum()
    loss.backward()
    assert layer.weight_sigma.grad is not None


def test_inputs_of_any_leading_shape():
    layer = _layer()
    x = _x(2, 3, 4)
    assert layer(x).shape == (2, 3, 3)
    assert layer(_x(4)).shape == (3,)
    layer.eval()
    torch.testing.assert_close(layer(x), x @ layer.weight_mu.T + layer.bias_mu)
    with pytest.raises(ValueError, match="in_features = 4"):
        layer(_x(2, 5))


def test_has_noisy():
    assert has_noisy(nn.Sequential(nn.Linear(2, 2), nn.Sequential(NoisyLinear(2, 2))))
    assert has_noisy(NoisyLinear(2, 2))
    assert not has_noisy(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
