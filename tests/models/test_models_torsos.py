"""Torsos: the paper's layer structure, output sizes, image scaling and the torso factory."""

import pytest
import torch
from torch import nn

from impala_rl.models import torsos
from impala_rl.models.torsos import DeepTorso, MLPTorso, ShallowTorso, make_torso


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_images(n, shape=(4, 84, 84)):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8)


@pytest.mark.parametrize("cls", [ShallowTorso, DeepTorso])
@pytest.mark.parametrize("n", [1, 3])
def test_image_torso_on_atari_frames_gives_256_features(cls, n):
    torso = cls(4)
    out = torso(random_images(n))
    assert torso.output_size == 256
    assert out.shape == (n, 256) and out.dtype == torch.float32
    assert (out >= 0).all()  # ends with ReLU


def test_shallow_torso_layers_match_paper_fig3_left():
    convs = [m for m in ShallowTorso(4).modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (16, (8, 8), (4, 4)),
        (32, (4, 4), (2, 2)),
    ]
    assert ShallowTorso(4).fc.in_features == 32 * 9 * 9  # 84 -> 20 -> 9


def test_deep_torso_layers_match_paper_fig3_right():
    torso = DeepTorso(4)
    assert [s.conv.out_channels for s in torso.stacks] == [16, 32, 32]
    for stack in torso.stacks:
        assert (stack.conv.kernel_size, stack.conv.stride, stack.conv.padding) == (
            (3, 3),
            (1, 1),
            (1, 1),
        )
        assert (stack.pool.kernel_size, stack.pool.stride, stack.pool.padding) == (3, 2, 1)
        assert len(stack.res_blocks) == 2
        for block in stack.res_blocks:
            assert isinstance(block, torsos.ResidualBlock)
            assert block.conv0.out_channels == block.conv1.out_channels == stack.conv.out_channels
    assert torso.fc.in_features == 32 * 11 * 11  # 84 -> 42 -> 21 -> 11


def test_residual_block_adds_its_input():
    block = torsos.ResidualBlock(2)
    for conv in (block.conv0, block.conv1):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("cls", [ShallowTorso, DeepTorso])
def test_image_torso_sizes_its_fc_layer_for_other_image_sizes(cls):
    torso = cls(3, image_size=(64, 48))
    assert torso(random_images(2, (3, 64, 48))).shape == (2, 256)


@pytest.mark.parametrize("cls", [ShallowTorso, DeepTorso])
def test_image_torso_scales_uint8_by_1_over_255(cls):
    torso = cls(4)
    images = random_images(2)
    # A uint8 image and the same image already scaled to [0, 1] give the same features...
    torch.testing.assert_close(torso(images), torso(images.float() / 255), rtol=0, atol=1e-6)
    # ...so full intensity 255 reads as 1.0, not as 255.0.
    white = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    torch.testing.assert_close(torso(white), torso(torch.ones(1, 4, 84, 84)), rtol=0, atol=1e-6)
    assert not torch.allclose(torso(white), torso(torch.full((1, 4, 84, 84), 255.0)))


def test_image_too_small_for_the_convolutions_raises_value_error():
    with pytest.raises(ValueError, match=r"torso 'shallow' cannot take images of size \(6, 6\)"):
        ShallowTorso(1, image_size=(6, 6))


@pytest.mark.parametrize("cls", [ShallowTorso, DeepTorso])
def test_channels_last_gives_the_same_features(cls):
    default = cls(4)
    fast = cls(4, channels_last=True)
    fast.load_state_dict(default.state_dict())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = random_images(3)
    torch.testing.assert_close(fast(images), default(images), rtol=0, atol=1e-5)


def test_mlp_torso_layers_and_output():
    torso = MLPTorso(4, sizes=(32, 16))
    linears = [m for m in torso.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 32), (32, 16)]
    out = torso(torch.randn(5, 4, dtype=torch.float64))
    assert torso.output_size == 16
    assert out.shape == (5, 16) and out.dtype == torch.float32
    assert (out >= 0).all()  # ReLU


def test_mlp_torso_without_hidden_layers_is_the_identity():
    torso = MLPTorso(3, sizes=())
    x = torch.randn(2, 3)
    assert torso.output_size == 3
    torch.testing.assert_close(torso(x), x)


def test_make_torso_builds_each_named_torso():
    assert isinstance(make_torso("mlp", (4,), mlp_sizes=(8,)), MLPTorso)
    assert isinstance(make_torso("shallow", (4, 84, 84)), ShallowTorso)
    assert isinstance(make_torso("deep", (4, 84, 84)), DeepTorso)
    # channels_last is a no-op for the MLP torso, so one setting serves every environment.
    assert isinstance(make_torso("mlp", (4,), channels_last=True), MLPTorso)


@pytest.mark.parametrize(
    "name, obs_shape, message",
    [
        (
            "shallow",
            (4,),
            r"torso 'shallow' needs image observations \[C, H, W\]; this environment's "
            r"observations have shape \(4,\)\. Use --torso mlp",
        ),
        ("deep", (84, 84), r"torso 'deep' needs image observations .* shape \(84, 84\)"),
        (
            "mlp",
            (4, 84, 84),
            r"torso 'mlp' needs flat observations \[D\]; .* shape \(4, 84, 84\)\. "
            r"Use --torso shallow, deep or minatar for images",
        ),
        ("resnet", (4,), r"unknown torso 'resnet'; choose one of \('mlp', 'shallow', 'deep', 'minatar'\)"),
    ],
)
def test_make_torso_rejects_observations_it_cannot_take(name, obs_shape, message):
    with pytest.raises(ValueError, match=message):
        make_torso(name, obs_shape)
