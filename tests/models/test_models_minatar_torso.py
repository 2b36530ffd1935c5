"""The 'minatar' torso: MinAtar's network (Young & Tian 2019), its output, gradients, ImpalaNet."""

import pytest
import torch
from torch import nn

from impala_rl.models import TORSOS, ImpalaNet, NetConfig, make_torso
from impala_rl.models.torsos import MinAtarTorso


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def binary_images(n, channels=4):
    """MinAtar observations as make_env gives them: float32 0/1 [N, C, 10, 10]."""
    return (torch.rand(n, channels, 10, 10) < 0.2).float()


def test_minatar_is_a_named_torso():
    assert "minatar" in TORSOS
    assert isinstance(make_torso("minatar", (4, 10, 10)), MinAtarTorso)


def test_layers_match_the_minatar_paper():
    # conv 16 3x3 stride 1, ReLU, flatten, FC 128, ReLU; 10x10 -> 8x8 without padding.
    torso = make_torso("minatar", (6, 10, 10))
    convs = [m for m in torso.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in torso.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (6, 16, (3, 3), (1, 1), (0, 0))
    ]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 8 * 8, 128)]


@pytest.mark.parametrize("channels", [4, 6, 10])  # Breakout, SpaceInvaders, Seaquest
@pytest.mark.parametrize("n", [1, 5])
def test_output_shape_and_relu(channels, n):
    torso = make_torso("minatar", (channels, 10, 10))
    out = torso(binary_images(n, channels))
    assert torso.output_size == 128
    assert out.shape == (n, 128) and out.dtype == torch.float32
    assert (out >= 0).all()


def test_float_images_are_used_as_they_are():
    # A 0/1 float image is not divided by 255 (only uint8 images are).
    torso = make_torso("minatar", (4, 10, 10))
    x = binary_images(3)
    torch.testing.assert_close(torso(x), torso((x * 255).to(torch.uint8)))
    assert not torch.allclose(torso(x), torso(x / 255))


def test_channels_last_gives_the_same_features():
    default = make_torso("minatar", (4, 10, 10))
    fast = make_torso("minatar", (4, 10, 10), channels_last=True)
    fast.load_state_dict(default.state_dict())
    x = binary_images(3)
    torch.testing.assert_close(fast(x), default(x), rtol=0, atol=1e-5)


def test_gradients_reach_every_parameter():
    torso = make_torso("minatar", (4, 10, 10))
    x = binary_images(8).requires_grad_()
    (torso(x) * torch.randn(8, 128)).sum().backward()
    for name, param in torso.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_other_image_sizes_and_refusals():
    assert make_torso("minatar", (3, 12, 7))(torch.zeros(2, 3, 12, 7)).shape == (2, 128)
    with pytest.raises(ValueError, match=r"torso 'minatar' needs image observations .* \(4,\)"):
        make_torso("minatar", (4,))
    with pytest.raises(ValueError, match=r"torso 'minatar' cannot take images of size \(2, 2\)"):
        make_torso("minatar", (4, 2, 2))


@pytest.mark.parametrize("use_lstm", [False, True])
def test_impala_net_with_the_minatar_torso(use_lstm):
    T, B, A, C = 3, 2, 5, 4
    net = ImpalaNet((C, 10, 10), A, config=NetConfig(torso="minatar", use_lstm=use_lstm, lstm_size=16))
    obs = (torch.rand(T, B, C, 10, 10) < 0.2).float()
    last_action = torch.randint(0, A, (T, B))
    out, state = net(obs, last_action, torch.randn(T, B), torch.zeros(T, B, dtype=torch.bool),
                     net.initial_state(B))
    assert out.policy_params.shape == (T, B, A) and out.values.shape == (T, B, 1)
    assert len(state) == (2 if use_lstm else 0)
    loss = sum((x * torch.randn_like(x)).sum() for x in out)
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
