"""RMSpropTF against TensorFlow's RMSProp update written out in NumPy, and against torch's."""

import numpy as np
import pytest
import torch

from impala_rl.core.optim import RMSpropTF


def tf_rmsprop_reference(w0, grads, lr, decay, eps, momentum):
    """tf.train.RMSPropOptimizer (centered=False), literally: ms starts at 1, eps inside the root."""
    w = w0.astype(np.float64).copy()
    ms = np.ones_like(w)
    mom = np.zeros_like(w)
    for g in grads:
        ms = decay * ms + (1 - decay) * g * g
        mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        w = w - mom
    return w


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_update_equals_tensorflows_formula(momentum):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    grads = [rng.normal(scale=s, size=(3, 4)) for s in (0.01, 1.0, 50.0, 0.1, 3.0)]
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = RMSpropTF([w], lr=6e-4, alpha=0.99, eps=0.01, momentum=momentum)
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    expected = tf_rmsprop_reference(w0, grads, 6e-4, 0.99, 0.01, momentum)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-14)


def test_first_step_is_much_smaller_than_torchs():
    """torch's accumulator starts at 0, so its first step is ~lr/sqrt(1-decay) = 10 lr per weight."""
    g = torch.full((5,), 1e-3)
    steps = {}
    for name, cls in (("tf", RMSpropTF), ("torch", torch.optim.RMSprop)):
        w = torch.nn.Parameter(torch.zeros(5))
        opt = cls([w], lr=1.0, alpha=0.99, eps=0.01)
        w.grad = g.clone()
        opt.step()
        steps[name] = float(-w.detach()[0])
    assert steps["tf"] == pytest.approx(1e-3 / np.sqrt(0.99 * 1 + 0.01 * 1e-6 + 0.01), rel=1e-6)  # ms_0 = 1
    assert steps["torch"] > 30 * steps["tf"]


def test_learning_rate_is_read_from_param_groups_each_step():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = RMSpropTF([w], lr=1.0, alpha=0.5, eps=0.0)
    for group in opt.param_groups:
        group["lr"] = 0.0
    w.grad = torch.ones(1)
    opt.step()
    assert float(w) == 0.0


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        RMSpropTF([torch.nn.Parameter(torch.zeros(1))], alpha=1.0)
