"""ELBO pieces for MERLIN's predictor: closed forms computed by hand, and torch.distributions."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from impala_rl.core.elbo import (
    bernoulli_nll,
    categorical_nll,
    diag_gaussian_kl,
    elbo_loss,
    gaussian_nll,
    reparameterize,
)


def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------- KL


def test_kl_one_dimensional_hand_case():
    # q = N(1, 4), p = N(0, 1): 0.5 * (4 + 1 - 1 - ln 4) = 2 - ln 2.
    out = diag_gaussian_kl(_t([1.0]), _t([math.log(4.0)]), _t([0.0]), _t([0.0]))
    assert out.shape == ()
    torch.testing.assert_close(out, _t(2.0 - math.log(2.0)))


def test_kl_two_dimensional_hand_case_sums_the_dimensions():
    # Dim 0: q = p = N(0, 1) -> 0.
    # Dim 1: q = N(2, 1), p = N(0, 2): 0.5 * (1/2 + 4/2 - 1 + ln 2) = 0.75 + 0.5 ln 2.
    # Row 1 swaps the roles in dim 1: q = N(0, 2), p = N(2, 1): 0.5 * (2 + 4 - 1 - ln 2).
    mu_q = _t([[0.0, 2.0], [0.0, 0.0]])
    logvar_q = _t([[0.0, 0.0], [0.0, math.log(2.0)]])
    mu_p = _t([[0.0, 0.0], [0.0, 2.0]])
    logvar_p = _t([[0.0, math.log(2.0)], [0.0, 0.0]])
    out = diag_gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
    expected = _t([0.75 + 0.5 * math.log(2.0), 2.5 - 0.5 * math.log(2.0)])
    torch.testing.assert_close(out, expected)


def test_kl_matches_torch_distributions_and_is_zero_between_equals():
    g = torch.Generator().manual_seed(0)
    shape = (3, 4, 5)
    mu_q, lv_q, mu_p, lv_p = (
        torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(4)
    )
    out = diag_gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    reference = kl_divergence(
        Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())
    ).sum(-1)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out, reference)
    zero = torch.zeros(3, 4, dtype=torch.float64)
    torch.testing.assert_close(diag_gaussian_kl(mu_q, lv_q, mu_q, lv_q), zero)


def test_kl_shape_errors():
    with pytest.raises(ValueError, match=r"logvar_p has shape \(2, 4\) but mu_q has shape \(2, 3"):
        diag_gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="expected \\[..., D\\]"):
        diag_gaussian_kl(*(torch.tensor(0.0),) * 4)


# ---------------------------------------------------------------- sampling


def test_reparameterize_uses_the_generator_and_passes_gradients():
    mu = _t([[1.0, -2.0]]).requires_grad_()
    logvar = _t([[0.0, math.log(9.0)]]).requires_grad_()
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(3))
    sample = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sample, mu.detach() + _t([[1.0, 3.0]]) * eps)
    sample.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(1, 2))
    torch.testing.assert_close(logvar.grad, 0.5 * _t([[1.0, 3.0]]) * eps)


def test_reparameterize_moments():
    mu = torch.full((20000,), 2.0)
    logvar = torch.full((20000,), math.log(0.25))
    samples = reparameterize(mu, logvar, torch.Generator().manual_seed(4))
    assert abs(samples.mean().item() - 2.0) < 0.02
    assert abs(samples.std().item() - 0.5) < 0.02


# ---------------------------------------------------------------- reconstruction losses


def test_bernoulli_nll_hand_case():
    # sigmoid(0) = 1/2 -> -ln(1/2) = ln 2; sigmoid(ln 3) = 3/4, target 0 -> -ln(1/4) = ln 4.
    out = bernoulli_nll(_t([[0.0, math.log(3.0)], [0.0, 0.0]]), _t([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(out, _t([3.0 * math.log(2.0), 2.0 * math.log(2.0)]))
    with pytest.raises(ValueError, match=r"target has shape \(2, 3\)"):
        bernoulli_nll(torch.zeros(2, 2), torch.zeros(2, 3))


def test_categorical_nll_hand_case():
    # softmax([0, ln 3]) = [1/4, 3/4].
    logits = _t([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    out = categorical_nll(logits, torch.tensor([1, 0]))
    torch.testing.assert_close(out, _t([math.log(4.0 / 3.0), math.log(4.0)]))
    # Any leading shape: [T, B, A] logits, [T, B] targets.
    out = categorical_nll(torch.zeros(3, 2, 5), torch.zeros(3, 2, dtype=torch.long))
    assert out.shape == (3, 2)
    with pytest.raises(ValueError, match=r"target_index has shape \(2, 1\)"):
        categorical_nll(logits, torch.tensor([[1], [0]]))
    with pytest.raises(ValueError, match="expected an integer dtype"):
        categorical_nll(logits, _t([1.0, 0.0]))


def test_gaussian_nll_hand_cases():
    mean, target = _t([[1.0, 2.0]]), _t([[2.0, 0.0]])
    # Unit variance: 0.5 * (1 + 4).
    torch.testing.assert_close(gaussian_nll(mean, target), _t([2.5]))
    # logvar [0, ln 4]: 0.5 * (0 + 1) + 0.5 * (ln 4 + 4 / 4) = 1 + ln 2.
    logvar = _t([[0.0, math.log(4.0)]])
    torch.testing.assert_close(gaussian_nll(mean, target, logvar), _t([1.0 + math.log(2.0)]))
    # With the constant: exactly -log N(x; mu, sigma^2).
    exact = -Normal(mean, (0.5 * logvar).exp()).log_prob(target).sum(-1)
    torch.testing.assert_close(gaussian_nll(mean, target, logvar, include_constant=True), exact)
    torch.testing.assert_close(
        gaussian_nll(mean, target, include_constant=True), _t([2.5 + math.log(2.0 * math.pi)])
    )
    with pytest.raises(ValueError, match=r"logvar has shape \(1, 3\)"):
        gaussian_nll(mean, target, torch.zeros(1, 3))


# ---------------------------------------------------------------- the loss


def test_elbo_loss_hand_case():
    image = _t([[1.0, 3.0]]).requires_grad_()  # mean 2
    reward = _t([[0.5, 1.5]])  # mean 1
    kl = _t([[2.0, 4.0]]).requires_grad_()  # mean 3
    loss, metrics = elbo_loss(
        {"image": image, "reward": reward}, kl, {"image": 2.0, "reward": 0.5}, kl_weight=0.1
    )
    # 2 * 2 + 0.5 * 1 + 0.1 * 3 = 4.8
    torch.testing.assert_close(loss, _t(4.8))
    torch.testing.assert_close(metrics["mbp_loss"], _t(4.8))
    torch.testing.assert_close(metrics["kl"], _t(3.0))
    torch.testing.assert_close(metrics["recon_image"], _t(2.0))
    torch.testing.assert_close(metrics["recon_reward"], _t(1.0))
    torch.testing.assert_close(metrics["neg_elbo"], _t(6.0))
    assert all(m.dim() == 0 and not m.requires_grad for m in metrics.values())
    loss.backward()
    torch.testing.assert_close(image.grad, _t([[1.0, 1.0]]))  # 2 * (1/2)
    torch.testing.assert_close(kl.grad, _t([[0.05, 0.05]]))  # 0.1 * (1/2)


def test_elbo_loss_errors():
    kl = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"missing weights for \['reward'\]"):
        elbo_loss({"image": kl, "reward": kl}, kl, {"image": 1.0}, 1.0)
    with pytest.raises(ValueError, match=r"weights without a term: \['reward'\]"):
        elbo_loss({"image": kl}, kl, {"image": 1.0, "reward": 1.0}, 1.0)
    with pytest.raises(ValueError, match=r"recon_terms\['image'\] has shape \(3, 2\)"):
        elbo_loss({"image": torch.zeros(3, 2)}, kl, {"image": 1.0}, 1.0)
