"""Feature extractors ("torsos") that turn one batch of observations into flat features.

Four torsos, picked by name through :func:`make_torso`:

``'mlp'``
    Fully connected layers with ReLU for flat observations (classic control). ReLU rather
    than tanh: it is what the rest of the network uses, it trains fine on the small
    control tasks this torso is for, and it keeps one activation across the package.
``'shallow'``
    The paper's shallow network (Espeholt et al. 2018, Fig. 3 left): conv 16 8x8/4,
    ReLU, conv 32 4x4/2, ReLU, FC 256, ReLU.
``'deep'``
    The paper's deep ResNet (Fig. 3 right): three stacks of 16, 32, 32 channels, each a
    conv 3x3/1, a max-pool 3x3/2 and two residual blocks; then ReLU, FC 256, ReLU.
``'minatar'``
    The MinAtar paper's network (Young & Tian 2019) for its 10x10 images: conv 16 3x3/1
    (no padding), ReLU, FC 128, ReLU. MinAtar observations reach it as float32 0/1
    images (see :func:`impala_rl.envs.make_env`), so the uint8 scaling below never applies.

Every torso maps ``[N, *obs_shape]`` to ``[N, output_size]`` float32 features. Image
torsos take ``[N, C, H, W]``; a uint8 image is converted to float and scaled by 1/255
inside the torso, so observations can stay uint8 (4x smaller) all the way from the
environment through shared memory to here. A floating-point image is taken to be scaled
to [0, 1] already and is used as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

TORSOS = ("mlp", "shallow", "deep", "minatar")
"""Names accepted by :func:`make_torso` (and ``NetConfig(torso=...)``)."""

_IMAGE_TORSOS = ("shallow", "deep", "minatar")


def _scale_image(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` in [0, 255] -> float32 in [0, 1]; a float image is returned as is."""
    if x.dtype == torch.uint8:
        return x.float().mul_(1.0 / 255.0)
    return x.float()


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
"""Nonlinearities the MLP torso accepts (``activation=``)."""


class MLPTorso(nn.Module):
    """Fully connected layers, each followed by ReLU (or tanh).

    Args:
        obs_dim: D, the length of a flat observation.
        sizes: hidden layer widths; ``()`` makes the torso the identity on float input.
        activation: ``'relu'`` or ``'tanh'`` (the usual choice for MuJoCo policies).

    forward: ``[N, D]`` (any real dtype) -> float32 ``[N, output_size]``, where
    ``output_size = sizes[-1]`` (or D when ``sizes`` is empty).
    """

    def __init__(self, obs_dim: int, sizes: Sequence[int] = (64, 64), activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {tuple(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        in_size = obs_dim
        for size in sizes:
            layers += [nn.Linear(in_size, size), ACTIVATIONS[activation]()]
            in_size = size
        self.layers = nn.Sequential(*layers)
        self.output_size = in_size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.layers(obs.float())


class _ImageTorso(nn.Module):
    """Shared tail of the image torsos: scale, ``self.convs``, flatten, FC 256, ReLU.

    Subclasses set ``self.convs`` (an ``nn.Module`` mapping float ``[N, C, H, W]`` to
    ``[N, C', H', W']``) and then call :meth:`_build_head`, which sizes the FC layer from a
    dummy forward so that any image size the convolutions accept works.
    """

    convs: nn.Module

    def _build_head(
        self,
        name: str,
        in_channels: int,
        image_size: tuple[int, int],
        fc_size: int,
        channels_last: bool,
    ) -> None:
        dummy = torch.zeros(1, in_channels, *image_size)
        try:
            with torch.no_grad():
                flat_size = self.convs(dummy).flatten(1).shape[1]
        except RuntimeError as err:
            raise ValueError(
                f"torso {name!r} cannot take images of size {tuple(image_size)} "
                f"with {in_channels} channels: {err}"
            ) from err
        self.fc = nn.Linear(flat_size, fc_size)
        self.output_size = fc_size
        self.channels_last = channels_last
        if channels_last:
            # Only the 4-d conv weights change layout; the Linear weights are unaffected.
            self.convs.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs: uint8 (or float in [0, 1]) ``[N, C, H, W]`` -> float32 ``[N, output_size]``."""
        x = _scale_image(obs)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.convs(x)
        # flatten is logical (C, H, W order) whatever the memory format, so the FC layer
        # sees the same vector with and without channels_last.
        return torch.relu(self.fc(torch.relu(x).flatten(1)))


class ShallowTorso(_ImageTorso):
    """The paper's shallow torso (Fig. 3 left).

    conv 16 8x8 stride 4 -> ReLU -> conv 32 4x4 stride 2 -> ReLU -> flatten -> FC 256 -> ReLU.
    On 84x84 input the flattened conv output is 32 x 9 x 9 = 2592.

    Args:
        in_channels: C (e.g. 4 stacked frames).
        image_size: (H, W) the FC layer is sized for.
        channels_last: run the convolutions in channels_last memory format (same outputs;
            can be faster on GPUs with tensor cores and on some CPUs).

    forward: uint8 ``[N, C, H, W]`` -> float32 ``[N, 256]``.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int] = (84, 84),
        channels_last: bool = False,
    ):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2),
        )  # the final ReLU is applied in _ImageTorso.forward
        self._build_head("shallow", in_channels, image_size, 256, channels_last)


class ResidualBlock(nn.Module):
    """ReLU -> conv 3x3 -> ReLU -> conv 3x3, plus the input (pre-activation block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ConvStack(nn.Module):
    """One stack of the deep torso: conv 3x3/1 -> max-pool 3x3/2 -> two residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_blocks = nn.Sequential(*(ResidualBlock(out_channels) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_blocks(self.pool(self.conv(x)))


class DeepTorso(_ImageTorso):
    """The paper's deep ResNet torso (Fig. 3 right).

    Three :class:`ConvStack` of 16, 32, 32 channels (each halves H and W, rounding up),
    then ReLU -> flatten -> FC 256 -> ReLU. On 84x84 input the flattened conv output is
    32 x 11 x 11 = 3872.

    Args: as :class:`ShallowTorso`.

    forward: uint8 ``[N, C, H, W]`` -> float32 ``[N, 256]``.
    """

    CHANNELS = (16, 32, 32)

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int] = (84, 84),
        channels_last: bool = False,
    ):
        super().__init__()
        stacks = []
        stack_in = in_channels
        for out_channels in self.CHANNELS:
            stacks.append(ConvStack(stack_in, out_channels))
            stack_in = out_channels
        self.convs = nn.Sequential(*stacks)
        self._build_head("deep", in_channels, image_size, 256, channels_last)

    @property
    def stacks(self) -> nn.Sequential:
        """The three :class:`ConvStack` modules, in order."""
        return self.convs


class MinAtarTorso(_ImageTorso):
    """The MinAtar paper's network (Young & Tian 2019, the DQN and AC(lambda) baselines).

    conv 16 3x3 stride 1 (no padding) -> ReLU -> flatten -> FC 128 -> ReLU. On 10x10 input
    the flattened conv output is 16 x 8 x 8 = 1024.

    Args:
        in_channels: C, the game's number of object channels (4 to 10).
        image_size: (H, W) the FC layer is sized for; MinAtar's is (10, 10).
        channels_last: as :class:`ShallowTorso`.

    forward: float32 0/1 (or uint8, scaled by 1/255) ``[N, C, H, W]`` -> float32 ``[N, 128]``.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int] = (10, 10),
        channels_last: bool = False,
    ):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, stride=1),
        )  # the ReLU is applied in _ImageTorso.forward
        self._build_head("minatar", in_channels, image_size, 128, channels_last)


_IMAGE_TORSO_CLASSES: dict[str, type[_ImageTorso]] = {
    "shallow": ShallowTorso,
    "deep": DeepTorso,
    "minatar": MinAtarTorso,
}


def make_torso(
    name: str,
    obs_shape: Sequence[int],
    mlp_sizes: Sequence[int] = (64, 64),
    channels_last: bool = False,
    activation: str = "relu",
) -> nn.Module:
    """Build the torso called ``name`` for observations of shape ``obs_shape``.

    ``'mlp'`` needs ``obs_shape == (D,)``; ``'shallow'``, ``'deep'`` and ``'minatar'``
    need ``obs_shape == (C, H, W)``. ``channels_last`` applies to image torsos and is ignored
    by ``'mlp'`` (there is no image to lay out), so one setting can serve every environment;
``activation`` applies to ``'mlp'`` only (the image torsos are the paper's, with ReLU).

    Raises:
        ValueError: unknown name, or an observation rank the torso cannot take.
    """
    obs_shape = tuple(int(d) for d in obs_shape)
    if name not in TORSOS:
        raise ValueError(f"unknown torso {name!r}; choose one of {TORSOS}")
    if name == "mlp":
        if len(obs_shape) != 1:
            raise ValueError(
                f"torso 'mlp' needs flat observations [D]; this environment's observations "
                f"have shape {obs_shape}. Use --torso shallow, deep or minatar for images"
            )
        return MLPTorso(obs_shape[0], mlp_sizes, activation)
    if len(obs_shape) != 3:
        raise ValueError(
            f"torso {name!r} needs image observations [C, H, W]; this environment's "
            f"observations have shape {obs_shape}. Use --torso mlp"
        )
    cls = _IMAGE_TORSO_CLASSES[name]
    return cls(obs_shape[0], image_size=obs_shape[1:], channels_last=channels_last)
