"""The IMPALA agent network: torso -> (optional LSTM core) -> policy and value heads.

One module serves both sides of IMPALA: an actor steps it with T = 1 and carries the
recurrent state between calls; the learner unrolls it over a whole trajectory [T, B] from
the state the actor had at the trajectory's first row. Stepping T times with T = 1 and
unrolling once over T give the same outputs (tested), so the learner reproduces the
actor's policy exactly when the weights are the same.

Policy parameters are packed the way :mod:`impala_rl.core.distributions` reads them:

* ``'categorical'``: logits ``[..., A]``;
* ``'gaussian'``: ``cat([mean, log_std], -1)`` ``[..., 2A]``, with a state-independent
  learned ``log_std`` (initialised to ``NetConfig.init_log_std``, 0 by default: std 1).

The architecture options are one :class:`NetConfig`; what the environment decides (the
observation shape, the action space, the number of tasks, the action bounds) is given
beside it.

Initialisation: the policy head is always orthogonal with gain 0.01 and zero bias, so
that the initial policy is close to uniform (categorical) or centred on 0 (gaussian)
whatever the features are; this gives exploration a fair start and keeps the first
importance ratios near 1. ``NetConfig.init='orthogonal'`` (the default) also makes every torso
layer orthogonal with gain sqrt(2) and zero bias and the value head orthogonal with
gain 1, as cleanba and scalable_agent-style ports do: the torso's features then start
with an RMS of about 0.2 instead of 0.02 under PyTorch's defaults (``init='torch'``).

PopArt (``NetConfig.popart=True``): the value head emits normalised values ``n(x)``; the network
holds the statistics (a :class:`~impala_rl.core.popart.PopArt` buffer pair, published
to actors with the weights) and returns UNNORMALISED values ``sigma * n(x) + mu``, so
actors, evaluation and bootstrapping see values in reward units. The learner recovers
``n(x) = (v - mu) / sigma`` (with its gradient) for the loss and rescales the head after
each statistics update so the returned values do not jump.
"""

from __future__ import annotations

import contextlib

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from impala_rl.core.distributions import POLICY_TYPES
from impala_rl.core.popart import PopArt
from impala_rl.models.normalizer import ObservationNormalizer
from impala_rl.models.torsos import make_torso


INITS = ("orthogonal", "torch")
"""Weight initialisations ``NetConfig(init=...)`` accepts (see the module docstring)."""

CoreState = tuple[torch.Tensor, ...]
"""Recurrent state: ``(h [B, H], c [B, H])`` float32 with an LSTM, ``()`` without."""


class NetOutput(NamedTuple):
    """What :meth:`ImpalaNet.forward` returns besides the new core state.

    Attributes:
        policy_params: float32 ``[T, B, P]``; P = A (logits) or 2A (mean, log_std).
        values: float32 ``[T, B, num_values]``; the baseline V(x_t), one per task
            when ``num_values > 1`` (PopArt multi-task). Squeeze the last dimension
            for a single task.
    """

    policy_params: torch.Tensor
    values: torch.Tensor


def orthogonal_init_(torsos: Sequence[nn.Module], value_head: nn.Linear) -> None:
    """``init='orthogonal'``: every linear and conv layer of ``torsos`` orthogonal with gain
    sqrt 2, the value head with gain 1, zero biases (the policy head is set by its network)."""
    for module in (m for t in torsos for m in t.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            # Through a contiguous copy: orthogonal_ cannot view a channels_last weight.
            weight = torch.empty(module.weight.shape)
            nn.init.orthogonal_(weight, gain=2 ** 0.5)
            with torch.no_grad():
                module.weight.copy_(weight)
            nn.init.zeros_(module.bias)
    nn.init.orthogonal_(value_head.weight, gain=1.0)
    nn.init.zeros_(value_head.bias)


@dataclass(frozen=True)
class NetConfig:
    """The architecture options of :class:`ImpalaNet` (what the environment does not decide).

    Attributes:
        torso: ``'mlp'``, ``'shallow'``, ``'deep'`` or ``'minatar'``
            (:func:`~impala_rl.models.torsos.make_torso`).
        use_lstm: add the paper's LSTM core, fed with the torso features, the last action
            (one-hot for categorical, the action vector for gaussian) and the last reward.
        lstm_size: H, the LSTM hidden size (used only with ``use_lstm``).
        mlp_sizes: hidden widths of the ``'mlp'`` torso (kept as a tuple).
        activation: the MLP torso's nonlinearity, ``'relu'`` or ``'tanh'``.
        init: ``'orthogonal'`` or ``'torch'`` (see the module docstring).
        channels_last: run an image torso in channels_last memory format (same outputs;
            a throughput option). Ignored by the ``'mlp'`` torso.
        popart: keep PopArt statistics and return unnormalised values (module docstring).
        popart_beta: the statistics' EMA step.
        normalize_observations: normalise observations by running statistics kept in the
            network (:class:`~impala_rl.models.normalizer.ObservationNormalizer`); the
            learner updates them. For vector observations (MuJoCo).
        separate_value_torso: give the value head a torso of its own (same architecture,
            its own weights) so value and policy share no features, as PPO's MuJoCo
            setups do. Not with ``use_lstm`` (the core would feed the policy only).
        init_log_std: a Gaussian policy's initial ``log_std`` (every dimension).

    Raises:
        ValueError: an unknown ``init``, ``lstm_size < 1`` with the LSTM, or the LSTM with a
            separate value torso. The torso's name and activation are checked with the
            observation shape, by :class:`ImpalaNet`.
    """

    torso: str = "mlp"
    use_lstm: bool = False
    lstm_size: int = 256
    mlp_sizes: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    init: str = "orthogonal"
    channels_last: bool = False
    popart: bool = False
    popart_beta: float = 3e-4
    normalize_observations: bool = False
    separate_value_torso: bool = False
    init_log_std: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "mlp_sizes", tuple(self.mlp_sizes))
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {INITS}")
        if self.use_lstm and self.lstm_size < 1:
            raise ValueError(f"lstm_size must be >= 1; got {self.lstm_size}")
        if self.use_lstm and self.separate_value_torso:
            raise ValueError("a separate value torso cannot be combined with the LSTM core; "
                             "use one or the other")


class ImpalaNet(nn.Module):
    """Torso, optional LSTM core and heads (Espeholt et al. 2018, Fig. 3).

    Args:
        obs_shape: shape of one observation: ``(D,)`` for ``torso='mlp'``,
            ``(C, H, W)`` for ``'shallow'``, ``'deep'`` and ``'minatar'``.
        action_dim: A, the number of discrete actions (categorical) or the size of the
            action vector (gaussian).
        policy_type: ``'categorical'`` or ``'gaussian'``.
        config: the architecture (:class:`NetConfig`; its defaults: an MLP torso, no LSTM).
        num_values: number of value outputs (one per task for PopArt multi-task).
        mean_bounds: ``(low, high)``, finite per-dimension action bounds: a Gaussian
            policy's mean becomes ``center + half_range * tanh(head)``, so it cannot leave
            the box the environment clips actions to (where the return no longer depends
            on it and it would drift). Gaussian policies only.

    Raises:
        ValueError: an unknown option, or an ``obs_shape`` the torso cannot take (the
            message names the torso, the shape and what would be accepted).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_dim: int,
        policy_type: str = "categorical",
        config: NetConfig = NetConfig(),
        *,
        num_values: int = 1,
        mean_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    ):
        super().__init__()
        if policy_type not in POLICY_TYPES:
            raise ValueError(f"unknown policy_type {policy_type!r}; choose one of {POLICY_TYPES}")
        for name, value in (("action_dim", action_dim), ("num_values", num_values)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")

        self.config = config
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.action_dim = int(action_dim)
        self.policy_type = policy_type
        self.use_lstm = config.use_lstm
        self.num_values = int(num_values)

        self.obs_norm = ObservationNormalizer(self.obs_shape) if config.normalize_observations else None
        torso_args = (config.torso, self.obs_shape, config.mlp_sizes, config.channels_last, config.activation)
        self.torso = make_torso(*torso_args)
        self.value_torso = make_torso(*torso_args) if config.separate_value_torso else None
        features = self.torso.output_size
        if config.use_lstm:
            # Input: torso features, last action (A), last reward (1).
            self.lstm = nn.LSTMCell(features + self.action_dim + 1, config.lstm_size)
            self.core_output_size = config.lstm_size
        else:
            self.core_output_size = features

        self.policy_head = nn.Linear(self.core_output_size, self.action_dim)
        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)
        nn.init.zeros_(self.policy_head.bias)
        if policy_type == "gaussian":
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(config.init_log_std)))
        self.bounded_mean = mean_bounds is not None
        if self.bounded_mean:
            low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(-1) for b in mean_bounds)
            if policy_type != "gaussian" or low.shape != (self.action_dim,) or high.shape != (self.action_dim,):
                raise ValueError(f"mean_bounds needs a gaussian policy and {self.action_dim} lows and highs")
            if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
                raise ValueError(f"mean_bounds must be finite with high > low; got low {low.tolist()}, "
                                 f"high {high.tolist()}")
            self.register_buffer("mean_center", (high + low) / 2)
            self.register_buffer("mean_half_range", (high - low) / 2)
        # PopArt rescales this layer in place: keep the attribute name.
        self.value_head = nn.Linear(self.core_output_size, self.num_values)
        self.popart = PopArt(self.num_values, beta=config.popart_beta) if config.popart else None
        if config.init == "orthogonal":
            orthogonal_init_([self.torso] + ([self.value_torso] if self.value_torso is not None else []),
                             self.value_head)

    @property
    def policy_param_size(self) -> int:
        """P, the last dimension of ``policy_params``: A (categorical) or 2A (gaussian)."""
        return self.action_dim * (2 if self.policy_type == "gaussian" else 1)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> CoreState:
        """Zero recurrent state for ``batch_size`` environments.

        Returns ``(h, c)``, each float32 ``[batch_size, lstm_size]`` on ``device``
        (default: the device of the network's parameters), or ``()`` without an LSTM.
        """
        if not self.use_lstm:
            return ()
        if device is None:
            device = self.value_head.weight.device
        h = torch.zeros(batch_size, self.lstm.hidden_size, device=device)
        return (h, torch.zeros_like(h))

    def forward(
        self,
        obs: torch.Tensor,
        last_action: torch.Tensor,
        last_reward: torch.Tensor,
        first: torch.Tensor,
        core_state: CoreState = (),
    ) -> tuple[NetOutput, CoreState]:
        """Unroll the network over T steps of B environments.

        Args:
            obs: uint8 or float32 ``[T, B, *obs_shape]``; obs[t] is observed at step t.
            last_action: the action taken before obs[t]: int64 ``[T, B]`` (categorical)
                or float32 ``[T, B, A]`` (gaussian); zeros on the first step of an episode.
            last_reward: float32 ``[T, B]``, the (already clipped) reward received with
                obs[t]; zero on the first step of an episode.
            first: bool ``[T, B]``; True where obs[t] is the first observation of an
                episode. The LSTM state is reset to zeros *before* step t there.
            core_state: the state before step 0, ``(h [B, H], c [B, H])`` with an LSTM
                (see :meth:`initial_state`), ``()`` without.

        Without an LSTM, ``last_action``, ``last_reward`` and ``first`` are checked but do
        not affect the outputs.

        Returns:
            ``(NetOutput(policy_params [T, B, P], values [T, B, num_values]), new_state)``
            where ``new_state`` is the core state after step T - 1 (``()`` without LSTM).

        Raises:
            ValueError: an argument of the wrong shape (the message shows the shape got).
        """
        T, B = self._check_inputs(obs, last_action, last_reward, first, core_state)
        # One batched torso call over all T * B observations.
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        flat_obs = obs.reshape(T * B, *self.obs_shape)
        features = self.torso(flat_obs).view(T, B, -1).float()
        value_features = self.value_torso(flat_obs).view(T, B, -1).float() if self.value_torso is not None else None
        # Under the learner's bfloat16 autocast (runtime/precision.py) only the torsos run in
        # bfloat16: the LSTM, the heads and PopArt stay float32, so the policy's log-probabilities
        # (and with them V-trace's importance weights) and the values lose no precision.
        with (torch.autocast(features.device.type, enabled=False) if torch.is_autocast_enabled(features.device.type)
              else contextlib.nullcontext()):
            if self.use_lstm:
                features, core_state = self._unroll_lstm(
                    features, last_action, last_reward, first, core_state
                )
            policy_params = self.policy_head(features)
            if self.bounded_mean:
                policy_params = self.mean_center + self.mean_half_range * torch.tanh(policy_params)
            if self.policy_type == "gaussian":
                policy_params = torch.cat([policy_params, self.log_std.expand_as(policy_params)], -1)
            values = self.value_head(value_features if value_features is not None else features)
            if self.popart is not None:
                values = values * self.popart.sigma + self.popart.mu
        return NetOutput(policy_params, values), core_state

    def _unroll_lstm(
        self,
        features: torch.Tensor,
        last_action: torch.Tensor,
        last_reward: torch.Tensor,
        first: torch.Tensor,
        core_state: CoreState,
    ) -> tuple[torch.Tensor, CoreState]:
        """features float32 [T, B, F] -> LSTM outputs [T, B, H] and the final (h, c)."""
        if self.policy_type == "categorical":
            action_in = F.one_hot(last_action.long(), self.action_dim).to(features.dtype)
        else:
            action_in = last_action.to(features.dtype)
        inputs = torch.cat([features, action_in, last_reward.to(features.dtype)[..., None]], -1)
        # logical_not works for bool and for 0/1 integer masks alike (~ on uint8 would not).
        keep = first.logical_not().to(features.dtype)[..., None]  # [T, B, 1]
        h, c = core_state
        outputs = []
        # LSTMCell stepped over T: on CPU at small batch it is ~3x faster than nn.LSTM
        # stepped one time step at a time, and the reset needs per-step control anyway.
        for t in range(features.shape[0]):
            h, c = self.lstm(inputs[t], (h * keep[t], c * keep[t]))
            outputs.append(h)
        return torch.stack(outputs), (h, c)

    def _check_inputs(
        self,
        obs: torch.Tensor,
        last_action: torch.Tensor,
        last_reward: torch.Tensor,
        first: torch.Tensor,
        core_state: CoreState,
    ) -> tuple[int, int]:
        """Check every argument's shape against obs's [T, B]; return (T, B)."""
        if obs.dim() != 2 + len(self.obs_shape) or tuple(obs.shape[2:]) != self.obs_shape:
            raise ValueError(
                f"obs must have shape [T, B, *obs_shape] = [T, B, "
                f"{', '.join(map(str, self.obs_shape))}]; got {tuple(obs.shape)}"
            )
        T, B = obs.shape[:2]
        action_shape = (T, B) if self.policy_type == "categorical" else (T, B, self.action_dim)
        expected = (
            ("last_action", last_action, action_shape),
            ("last_reward", last_reward, (T, B)),
            ("first", first, (T, B)),
        )
        for name, tensor, shape in expected:
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"{name} must have shape {list(shape)} to match obs {tuple(obs.shape)}; "
                    f"got {tuple(tensor.shape)}"
                )
        if self.use_lstm:
            state_shape = (B, self.lstm.hidden_size)
            shapes = [tuple(s.shape) for s in core_state]
            if shapes != [state_shape, state_shape]:
                raise ValueError(
                    f"core_state must be (h, c), each of shape {list(state_shape)}; got "
                    f"shapes {shapes}. Start from initial_state({B})"
                )
        elif len(core_state) != 0:
            raise ValueError(
                f"this network has no LSTM, so core_state must be (); got {len(core_state)} tensors"
            )
        return T, B
