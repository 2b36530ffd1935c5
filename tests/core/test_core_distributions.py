"""Packed-parameter distributions agree with torch.distributions."""

import math

import pytest
import torch

from impala_rl.core import distributions as D


def _torch_dist(policy_type, params):
    if policy_type == "categorical":
        return torch.distributions.Categorical(logits=params)
    mean, log_std = params.chunk(2, -1)
    return torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1)


def _params_and_actions(policy_type, seed=0, shape=(3, 4), A=5):
    g = torch.Generator().manual_seed(seed)
    P = D.num_params(policy_type, A)
    params = torch.randn(*shape, P, generator=g, dtype=torch.float64).requires_grad_(True)
    if policy_type == "categorical":
        actions = torch.randint(0, A, shape, generator=g)
    else:
        actions = torch.randn(*shape, A, generator=g, dtype=torch.float64)
    return params, actions


@pytest.mark.parametrize("policy_type", D.POLICY_TYPES)
def test_log_prob_and_entropy_match_torch_distributions_with_gradients(policy_type):
    params, actions = _params_and_actions(policy_type)
    for ours, theirs in (
        (D.log_prob(policy_type, params, actions),
         _torch_dist(policy_type, params).log_prob(actions)),
        (D.entropy(policy_type, params), _torch_dist(policy_type, params).entropy()),
    ):
        assert ours.shape == (3, 4)
        torch.testing.assert_close(ours, theirs)
        weights = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
        (g_ours,) = torch.autograd.grad((ours * weights).sum(), params)
        (g_theirs,) = torch.autograd.grad((theirs * weights).sum(), params)
        torch.testing.assert_close(g_ours, g_theirs)


def test_categorical_entropy_is_finite_with_masked_logits():
    logits = torch.tensor([[0.0, -math.inf, 0.0]])
    torch.testing.assert_close(D.entropy("categorical", logits), torch.tensor([math.log(2.0)]))


@pytest.mark.parametrize("policy_type", D.POLICY_TYPES)
def test_sample_shapes_dtypes_and_generator(policy_type):
    params, _ = _params_and_actions(policy_type)
    a = D.sample(policy_type, params, generator=torch.Generator().manual_seed(3))
    b = D.sample(policy_type, params, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert not a.requires_grad
    if policy_type == "categorical":
        assert a.dtype == torch.int64 and a.shape == (3, 4)
    else:
        assert a.dtype == torch.float64 and a.shape == (3, 4, 5)


def test_sample_follows_the_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([0.1, 0.2, 0.7])).expand(20000, 3)
    counts = torch.bincount(D.sample("categorical", logits, generator=g), minlength=3)
    torch.testing.assert_close(counts / 20000.0, torch.tensor([0.1, 0.2, 0.7]), atol=0.015, rtol=0)

    params = torch.tensor([1.0, -2.0, math.log(0.5), math.log(2.0)]).expand(20000, 4)
    draws = D.sample("gaussian", params, generator=g)
    torch.testing.assert_close(draws.mean(0), torch.tensor([1.0, -2.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([0.5, 2.0]), atol=0.05, rtol=0)


def test_mode_and_split():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert D.mode("categorical", logits).tolist() == [1, 0]
    params = torch.tensor([[1.0, 2.0, -0.5, 0.5]])
    mean, log_std = D.split_gaussian(params)
    assert mean.tolist() == [[1.0, 2.0]] and log_std.tolist() == [[-0.5, 0.5]]
    assert D.mode("gaussian", params).tolist() == [[1.0, 2.0]]
    assert D.num_params("categorical", 6) == 6 and D.num_params("gaussian", 6) == 12


def test_errors_are_clear():
    with pytest.raises(ValueError, match="'categorical', 'gaussian'"):
        D.entropy("beta", torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        D.split_gaussian(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"actions have shape \(2, 1\).*\(2, 4\)"):
        D.log_prob("gaussian", torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"actions have shape \(3,\).*\(2, 4\)"):
        D.log_prob("categorical", torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        D.log_prob("categorical", torch.zeros(2, 4), torch.zeros(2))
