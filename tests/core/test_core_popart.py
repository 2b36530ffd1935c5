"""PopArt statistics and the output-preserving rescale."""

import math

import pytest
import torch

from impala_rl.core.popart import PopArt, rescale_linear_


def _unnormalised_outputs(popart, linear, h):
    """sigma_k * (W h + b)_k + mu_k for every task k: [N, K]."""
    return popart.sigma * linear(h) + popart.mu


def test_initial_statistics():
    popart = PopArt(3)
    assert popart.mu.tolist() == [0.0, 0.0, 0.0] and popart.nu.tolist() == [1.0, 1.0, 1.0]
    assert popart.sigma.tolist() == [1.0, 1.0, 1.0]
    assert set(popart.state_dict()) == {"mu", "nu"}


def test_update_is_the_hand_computed_ema_for_present_tasks_only():
    beta = 0.1
    popart = PopArt(3, beta=beta)
    targets = torch.tensor([[1.0, 10.0, 3.0], [5.0, 20.0, 7.0]])  # [T=2, B=3]
    task_ids = torch.tensor([0, 2, 0])  # task 1 absent
    old_mu, old_sigma = popart.update(targets, task_ids)
    assert old_mu.tolist() == [0.0, 0.0, 0.0] and old_sigma.tolist() == [1.0, 1.0, 1.0]

    # Task 0 targets: 1, 5, 3, 7 -> mean 4, mean square (1+25+9+49)/4 = 21.
    # Task 2 targets: 10, 20     -> mean 15, mean square (100+400)/2 = 250.
    mu = [0.9 * 0 + 0.1 * 4, 0.0, 0.9 * 0 + 0.1 * 15]
    nu = [0.9 * 1 + 0.1 * 21, 1.0, 0.9 * 1 + 0.1 * 250]
    torch.testing.assert_close(popart.mu, torch.tensor(mu))
    torch.testing.assert_close(popart.nu, torch.tensor(nu))
    sigma = [math.sqrt(n - m * m) for m, n in zip(mu, nu)]
    torch.testing.assert_close(popart.sigma, torch.tensor(sigma))

    # A second step starts from the first one's statistics.
    old_mu, old_sigma = popart.update(torch.tensor([2.0]), torch.tensor([1]))
    torch.testing.assert_close(old_mu, torch.tensor(mu))
    torch.testing.assert_close(old_sigma, torch.tensor(sigma))
    torch.testing.assert_close(popart.mu, torch.tensor([mu[0], 0.2, mu[2]]))
    torch.testing.assert_close(popart.nu, torch.tensor([nu[0], 0.9 + 0.4, nu[2]]))


# float64: exact up to rounding. float32: outputs of a few hundred pass through
# mu ~ 100s and cancel, so the absolute error is ~1e-5 of those magnitudes.
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
@pytest.mark.parametrize("use_free_function", [False, True])
def test_outputs_are_preserved_after_update(use_free_function, dtype, atol):
    torch.manual_seed(0)
    popart = PopArt(3, beta=0.3).to(dtype)
    linear = torch.nn.Linear(8, 3).to(dtype)
    h = torch.randn(16, 8, dtype=dtype)
    for step in range(5):  # several updates, only some tasks each time
        before = _unnormalised_outputs(popart, linear, h).detach()
        targets = 50.0 * torch.randn(4, 2, dtype=dtype) + 100.0 * step
        task_ids = torch.tensor([0, 2]) if step % 2 == 0 else torch.tensor([1, 1])
        old_mu, old_sigma = popart.update(targets, task_ids)
        if use_free_function:
            rescale_linear_(linear.weight, linear.bias, old_mu, old_sigma, popart.mu, popart.sigma)
        else:
            popart.preserve_outputs_(linear, old_mu, old_sigma)
        after = _unnormalised_outputs(popart, linear, h).detach()
        torch.testing.assert_close(after, before, rtol=1e-5, atol=atol)
    assert not torch.allclose(popart.sigma, torch.ones(3, dtype=dtype))  # the statistics did move


def test_preserve_outputs_keeps_parameters_trainable():
    popart = PopArt(2, beta=0.5)
    linear = torch.nn.Linear(3, 2)
    old = popart.update(torch.tensor([[4.0, -2.0]]), torch.tensor([0, 1]))
    popart.preserve_outputs_(linear, *old)
    assert linear.weight.requires_grad and linear.weight.grad_fn is None
    linear(torch.randn(1, 3)).sum().backward()
    assert linear.weight.grad is not None


def test_normalize_and_denormalize_are_inverse():
    popart = PopArt(3, beta=0.5)
    popart.update(torch.tensor([[3.0, -8.0, 40.0], [5.0, 2.0, 60.0]]), torch.tensor([0, 1, 2]))
    x = torch.randn(6, 4)
    task_ids = torch.tensor([2, 0, 1, 2])
    torch.testing.assert_close(popart.denormalize(popart.normalize(x, task_ids), task_ids), x)
    torch.testing.assert_close(popart.normalize(popart.denormalize(x, task_ids), task_ids), x)
    mu, sigma = popart.statistics(task_ids)
    torch.testing.assert_close(popart.normalize(x, task_ids), (x - mu) / sigma)


def test_sigma_is_bounded():
    popart = PopArt(2, sigma_min=1e-2, sigma_max=10.0)
    popart.mu.copy_(torch.tensor([3.0, 0.0]))
    popart.nu.copy_(torch.tensor([9.0, 1e6]))  # variance 0 and 1e6
    torch.testing.assert_close(popart.sigma, torch.tensor([1e-2, 10.0]))


def test_errors_name_the_shapes():
    popart = PopArt(3)
    with pytest.raises(ValueError, match=r"weight shape \(2, 4\)"):
        popart.preserve_outputs_(torch.nn.Linear(4, 2), popart.mu, popart.sigma)
    with pytest.raises(ValueError, match=r"bias has shape \(2,\).*\(3, 4\)"):
        rescale_linear_(torch.zeros(3, 4), torch.zeros(2), *(torch.ones(3),) * 4)
    with pytest.raises(ValueError, match=r"\(4,\).*\(5, 3\)"):
        popart.update(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_tasks"):
        PopArt(0)
