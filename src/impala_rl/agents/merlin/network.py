"""MERLIN's network (Wayne et al. 2018), small: an encoder, a memory-based predictor (MBP)
with a variational latent ``z_t``, an external memory, a policy with its own LSTM and reads
over the same memory, and the MBP's decoders.

It keeps the network contract of :class:`impala_rl.agents.base.Network`: ``forward(obs,
last_action, last_reward, first, core_state) -> (MerlinOutput, new_state)`` with
``MerlinOutput.policy_params [T, B, A]`` (logits) and ``values [T, B, num_values]``, so actors,
central inference, evaluation and IMPALA's V-trace loss use it unchanged. The loss reads the
MBP's extras (prior, posterior, decoder outputs) off the same output by attribute.

One step ``t`` (the loop over T is in Python: the memory is read and written every step)::

    reset     every state tensor of the environments whose episode starts (first[t]) -> zeros
    e_t       = [torso(obs_t), one_hot(a_{t-1}), r_{t-1}]                (batched over T first)
    prior     p(z_t)   = N(mu_p, var_p),  (mu_p, logvar_p) = MLP_p([h^mbp_{t-1}, m^mbp_{t-1}])
    posterior q(z_t)   = N(mu_p + d_mu, exp(logvar_p + d_logvar)),
              (d_mu, d_logvar) = MLP_q([e_t, h^mbp_{t-1}, m^mbp_{t-1}, mu_p, logvar_p])
    z_t       = mu_q (see "Sampling" below)
    MBP core  h^mbp_t = LSTM_mbp([z_t, m^mbp_{t-1}], h^mbp_{t-1})
    MBP read  m^mbp_t = cosine_read(M_{t-1}, K_mbp keys and sharpnesses from h^mbp_t)
    policy    h^pol_t = LSTM_pol([sg(z_t), m^pol_{t-1}], h^pol_{t-1})
    pol read  m^pol_t = cosine_read(sg(M_{t-1}), K_pol keys and sharpnesses from h^pol_t)
    write     w_t = fill_then_least_used(usage, step);  M_t = update(M_{t-1}, z_t, w_t, reads' weights)
    heads     logits_t, V_t = Linear([h^pol_t, m^pol_t])

Both reads see the memory as it was after step t-1 (:mod:`impala_rl.core.memory`: read, then
write); z_t is then written to the slot ``w_t`` (its retro-half starts at 0 and accumulates
the later latents with the discount ``memory_gamma``). The MBP LSTM steps on z_t and its
previous reads, and the read keys come from its new output, as in the paper.

``sg`` is a stop-gradient (``stop_gradient=True``, MERLIN): the policy's loss reaches neither
z nor the memory, so the encoder, the MBP and the memory's contents are trained by the ELBO
alone. ``stop_gradient=False`` (RL-MEM, the paper's ablation) lets the RL loss train them.

Decoders (computed when ``decode``; by default in training mode only, so actors do not pay
for them), each from ``z`` (a posterior sample in training mode):

- the observation x_t (flattened; gaussian means, or Bernoulli logits for 0/1 images),
- the previous reward r_{t-1} (a gaussian mean), the previous action a_{t-1} (logits),
- the return, from ``[z_t, sg(log pi_t)]`` (the policy's log-probabilities as the paper's
  return predictor sees them; stop-gradient so the MBP's loss does not move the policy).

Sampling: in eval mode (actors, evaluation) z is the posterior mean everywhere. In training
mode ``z_sample='decoders'`` (default) draws a reparameterised sample for the decoders only,
while the recurrence, the memory and the policy run on the posterior mean: the learner's
unroll then reproduces the actor's policy exactly (V-trace's importance weights are 1 for
fresh data) and unrolling equals stepping in either mode. ``z_sample='all'`` is the paper's:
the sample also drives the MBP core, the memory and the policy in training mode (actors,
in eval mode, use the mean, so the learner's policy differs from the behaviour policy by
the sampling noise; V-trace corrects for it).

Log-variances are kept in ``[-8, 8]`` by a soft bound (``8 tanh(x / 8)``) so the KL's
exponentials stay finite.

The recurrent state is explicit, named (:func:`state_spec`), stored by the runtime per
unroll before row 0 and reset by ``first`` inside the time loop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import nn
from torch.nn import functional as F

from impala_rl.core.memory import (MemoryState, cosine_read, fill_then_least_used_write_weights, positive_sharpness,
                                   reset, unit_rows, update)
from impala_rl.core.elbo import reparameterize
from impala_rl.core.popart import PopArt
from impala_rl.models.normalizer import ObservationNormalizer
from impala_rl.models.net import orthogonal_init_
from impala_rl.models.torsos import make_torso

LOGVAR_BOUND = 8.0
"""Log-variances are soft-bounded to ``[-LOGVAR_BOUND, LOGVAR_BOUND]``."""

Z_SAMPLES = ("decoders", "all")
OBS_LIKELIHOODS = ("gaussian", "bernoulli")

STATE_NAMES = ("mbp_h", "mbp_c", "pol_h", "pol_c", "memory", "usage", "write_weights", "retro_weights", "step",
               "mbp_reads", "pol_reads")
"""The recurrent state's tensors, in the order of ``core_state``."""


@dataclass(frozen=True)
class MerlinConfig:
    """The sizes and switches of :class:`MerlinNet` (the agent's options, resolved).

    Attributes:
        z_size: Z, the latent's width; memory rows are ``2Z`` wide (z-half, retro-half).
        memory_slots: N, rows of the memory (filled in order, then the least used is overwritten).
        mbp_read_heads, policy_read_heads: K of each reader.
        mbp_hidden, policy_hidden: the two LSTMs' sizes.
        decoder_hidden: the hidden width of the prior, posterior and decoder MLPs.
        memory_gamma: the retroactive discount of the memory's retro-halves.
        stop_gradient: the policy reads ``sg(z)`` and ``sg(memory)`` (MERLIN); False: RL-MEM.
        decoders: build the MBP's decoders (False for RL-MEM, which has no ELBO).
        z_sample: ``'decoders'`` or ``'all'`` (module docstring, "Sampling").
        obs_likelihood: ``'gaussian'`` (means) or ``'bernoulli'`` (logits) for the observation decoder.
    """

    z_size: int = 32
    memory_slots: int = 64
    mbp_read_heads: int = 3
    policy_read_heads: int = 1
    mbp_hidden: int = 128
    policy_hidden: int = 128
    decoder_hidden: int = 128
    memory_gamma: float = 0.99
    stop_gradient: bool = True
    decoders: bool = True
    z_sample: str = "decoders"
    obs_likelihood: str = "gaussian"

    def __post_init__(self):
        for name in ("z_size", "memory_slots", "mbp_read_heads", "policy_read_heads", "mbp_hidden", "policy_hidden",
                     "decoder_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if not 0.0 <= self.memory_gamma <= 1.0:
            raise ValueError(f"memory_gamma={self.memory_gamma}: must be in [0, 1]")
        if self.z_sample not in Z_SAMPLES:
            raise ValueError(f"z_sample={self.z_sample}: must be one of {', '.join(Z_SAMPLES)}")
        if self.obs_likelihood not in OBS_LIKELIHOODS:
            raise ValueError(f"obs_likelihood={self.obs_likelihood}: must be one of {', '.join(OBS_LIKELIHOODS)}")

    @property
    def width(self) -> int:
        """W = 2Z, a memory row's width."""
        return 2 * self.z_size


def state_spec(config: MerlinConfig) -> dict[str, tuple[tuple, torch.dtype]]:
    """name -> (shape of one environment's entry, dtype), in the order of ``core_state``."""
    n, w, f32 = config.memory_slots, config.width, torch.float32
    return {
        "mbp_h": ((config.mbp_hidden,), f32),
        "mbp_c": ((config.mbp_hidden,), f32),
        "pol_h": ((config.policy_hidden,), f32),
        "pol_c": ((config.policy_hidden,), f32),
        "memory": ((n, w), f32),
        "usage": ((n,), f32),
        "write_weights": ((n,), f32),
        "retro_weights": ((n,), f32),
        "step": ((), torch.int64),  # writes since the episode began (core.memory.MemoryState.step)
        "mbp_reads": ((config.mbp_read_heads * w,), f32),
        "pol_reads": ((config.policy_read_heads * w,), f32),
    }


def state_nbytes(config: MerlinConfig) -> int:
    """Bytes of one unroll's stored state (one environment): what the state adds to a rollout slot."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in state_spec(config).values())


class MerlinOutput(NamedTuple):
    """What :meth:`MerlinNet.forward` returns besides the new state (all ``[T, B, ...]``).

    ``policy_params`` and ``values`` are the network contract's; the rest is the MBP's, for
    the loss. The decoder fields are None unless the forward decoded.
    """

    policy_params: torch.Tensor  # float32 [T, B, A], logits
    values: torch.Tensor  # float32 [T, B, num_values]
    prior_mu: torch.Tensor  # [T, B, Z]
    prior_logvar: torch.Tensor
    post_mu: torch.Tensor
    post_logvar: torch.Tensor
    z: torch.Tensor  # [T, B, Z], the latent that drove the recurrence and was written to memory
    obs_target: Optional[torch.Tensor] = None  # [T, B, *obs_shape] float32: the observation as the torso
    # sees it (normalised when the network normalises observations; uint8 images scaled to [0, 1])
    obs_pred: Optional[torch.Tensor] = None  # gaussian means or Bernoulli logits, like obs_target
    reward_pred: Optional[torch.Tensor] = None  # [T, B]
    action_logits: Optional[torch.Tensor] = None  # [T, B, A]
    return_pred: Optional[torch.Tensor] = None  # [T, B]


def _soft_bound(x: torch.Tensor) -> torch.Tensor:
    return LOGVAR_BOUND * torch.tanh(x / LOGVAR_BOUND)


def _mlp(in_size: int, hidden: int, out_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_size, hidden), nn.Tanh(), nn.Linear(hidden, out_size))


class MerlinNet(nn.Module):
    """MERLIN's network (see the module docstring).

    Args:
        obs_shape: one observation's shape, ``(D,)`` or ``(C, H, W)``.
        num_actions: A (discrete actions only).
        config: the sizes and switches (:class:`MerlinConfig`).
        torso: the encoder's torso (:func:`~impala_rl.models.torsos.make_torso`: ``'mlp'``,
            ``'shallow'``, ``'deep'``, ``'minatar'``), with ``mlp_sizes``, ``activation``,
            ``channels_last`` as IMPALA's.
        init: ``'orthogonal'`` (the torso as IMPALA's; policy head gain 0.01, value head 1) or ``'torch'``.
        num_values: value outputs (1: one task).
        popart: keep PopArt statistics and return unnormalised values, as
            :class:`~impala_rl.models.ImpalaNet` (IMPALA's agent updates them).
        normalize_observations: normalise observations by running statistics kept here.
    """

    def __init__(self, obs_shape: Sequence[int], num_actions: int, config: MerlinConfig = MerlinConfig(), *,
                 torso: str = "mlp", mlp_sizes: Sequence[int] = (64, 64), activation: str = "relu",
                 channels_last: bool = False, init: str = "orthogonal", num_values: int = 1, popart: bool = False,
                 popart_beta: float = 3e-4, normalize_observations: bool = False):
        super().__init__()
        if num_actions < 1 or num_values < 1:
            raise ValueError(f"num_actions and num_values must be >= 1; got {num_actions}, {num_values}")
        self.config = c = config
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.action_dim = int(num_actions)
        self.num_values = int(num_values)
        self.policy_type = "categorical"
        Z, W = c.z_size, c.width

        self.obs_norm = ObservationNormalizer(self.obs_shape) if normalize_observations else None
        self.torso = make_torso(torso, self.obs_shape, tuple(mlp_sizes), channels_last, activation)
        embed = self.torso.output_size + self.action_dim + 1  # e_t
        mbp_reads, pol_reads = c.mbp_read_heads * W, c.policy_read_heads * W

        # The MBP: prior, posterior correction, core, read keys (K keys of width W and K sharpnesses).
        self.prior = _mlp(c.mbp_hidden + mbp_reads, c.decoder_hidden, 2 * Z)
        self.posterior = _mlp(embed + c.mbp_hidden + mbp_reads + 2 * Z, c.decoder_hidden, 2 * Z)
        self.mbp_lstm = nn.LSTMCell(Z + mbp_reads, c.mbp_hidden)
        self.mbp_keys = nn.Linear(c.mbp_hidden, c.mbp_read_heads * (W + 1))
        # The policy: its core, read keys, heads.
        self.pol_lstm = nn.LSTMCell(Z + pol_reads, c.policy_hidden)
        self.pol_keys = nn.Linear(c.policy_hidden, c.policy_read_heads * (W + 1))
        head_in = c.policy_hidden + pol_reads
        self.policy_head = nn.Linear(head_in, self.action_dim)
        self.value_head = nn.Linear(head_in, self.num_values)  # PopArt rescales this layer: keep the name
        self.popart = PopArt(self.num_values, beta=popart_beta) if popart else None
        # The decoders.
        if c.decoders:
            obs_size = math.prod(self.obs_shape)
            self.obs_decoder = nn.Sequential(nn.Linear(Z, c.decoder_hidden), nn.ReLU(),
                                             nn.Linear(c.decoder_hidden, obs_size))
            self.reward_decoder = _mlp(Z, c.decoder_hidden, 1)
            self.action_decoder = _mlp(Z, c.decoder_hidden, self.action_dim)
            self.return_decoder = _mlp(Z + self.action_dim, c.decoder_hidden, 1)

        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)
        nn.init.zeros_(self.policy_head.bias)
        if init == "orthogonal":
            orthogonal_init_([self.torso], self.value_head)  # as IMPALA's network
        elif init != "torch":
            raise ValueError(f"unknown init {init!r}; choose orthogonal or torch")

    @property
    def policy_param_size(self) -> int:
        return self.action_dim

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
        """Zeros, one tensor per :func:`state_spec` entry, ``[batch_size, *shape]``."""
        if device is None:
            device = self.value_head.weight.device
        return tuple(torch.zeros((batch_size,) + shape, dtype=dtype, device=device)
                     for shape, dtype in state_spec(self.config).values())

    def forward(self, obs: torch.Tensor, last_action: torch.Tensor, last_reward: torch.Tensor, first: torch.Tensor,
                core_state: tuple = (), *, decode: bool | None = None,
                generator: torch.Generator | None = None) -> tuple[MerlinOutput, tuple]:
        """Unroll over T steps of B environments from ``core_state`` (the state before step 0).

        Args:
            obs: ``[T, B, *obs_shape]``; last_action: int64 ``[T, B]``; last_reward: float
                ``[T, B]`` (clipped, 0 at episode starts: :func:`impala_rl.models.net_inputs`);
                first: bool ``[T, B]``, the state is reset before step t where set.
            core_state: :meth:`initial_state`'s tuple (or a state this returned).
            decode: compute the decoders' outputs (default: in training mode, when it has decoders).
            generator: the noise of the posterior samples (training mode).

        Returns:
            ``(MerlinOutput, the state after step T - 1)``.
        """
        T, B = self._check_inputs(obs, last_action, last_reward, first, core_state)
        c = self.config
        decode = (self.training if decode is None else decode) and c.decoders
        sample_all = self.training and c.z_sample == "all" and c.decoders
        seen = self.obs_norm(obs) if self.obs_norm is not None else obs
        features = self.torso(seen.reshape(T * B, *self.obs_shape)).view(T, B, -1).float()
        # Under the learner's bfloat16 autocast only the torso runs in bfloat16 (as ImpalaNet).
        with (torch.autocast(features.device.type, enabled=False) if torch.is_autocast_enabled(features.device.type)
              else contextlib.nullcontext()):
            action_in = F.one_hot(last_action.long(), self.action_dim).float()
            embed = torch.cat([features, action_in, last_reward.float()[..., None]], -1)
            out, state = self._unroll(embed, first, core_state, sample_all, generator)
            if decode:
                z = out.z if sample_all else (
                    reparameterize(out.post_mu, out.post_logvar, generator) if self.training else out.post_mu)
                out = out._replace(
                    obs_target=seen.float() / 255.0 if seen.dtype == torch.uint8 else seen.float(),
                    obs_pred=self.obs_decoder(z).view(T, B, *self.obs_shape),
                    reward_pred=self.reward_decoder(z)[..., 0],
                    action_logits=self.action_decoder(z),
                    return_pred=self.return_decoder(
                        torch.cat([z, F.log_softmax(out.policy_params, -1).detach()], -1))[..., 0])
        return out, state

    def _read_keys(self, layer: nn.Linear, h: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """keys ``[B, K, W]`` and positive sharpnesses ``[B, K]`` from a core's output."""
        raw = layer(h).view(h.shape[0], heads, self.config.width + 1)
        keys, sharpness = raw.split((self.config.width, 1), dim=-1)  # one backward op, not one per slice
        return keys, positive_sharpness(sharpness.squeeze(-1))

    def _unroll(self, embed: torch.Tensor, first: torch.Tensor, core_state: tuple, sample_all: bool,
                generator: torch.Generator | None) -> tuple[MerlinOutput, tuple]:
        c = self.config
        T = embed.shape[0]
        first = first.bool()
        mbp_h, mbp_c, pol_h, pol_c, memory, usage, write_w, retro_w, step, mbp_reads, pol_reads = core_state
        mem = MemoryState(memory, usage, write_w, retro_w, step)
        record: dict[str, list] = {k: [] for k in ("pol_h", "pol_reads", "prior_mu", "prior_logvar", "post_mu",
                                                  "post_logvar", "z")}
        starts = first.any(dim=1).tolist()  # one host copy: steps where no episode starts skip the reset
        for t in range(T):
            if starts[t]:
                mbp_h, mbp_c, pol_h, pol_c, mbp_reads, pol_reads = reset(mbp_h, mbp_c, pol_h, pol_c, mbp_reads,
                                                                         pol_reads, first=first[t])
                mem = mem.reset(first[t])
            # Prior and posterior of z_t.
            prior = self.prior(torch.cat([mbp_h, mbp_reads], -1))
            prior_mu, prior_logvar = prior.chunk(2, dim=-1)
            prior_logvar = _soft_bound(prior_logvar)
            delta = self.posterior(torch.cat([embed[t], mbp_h, mbp_reads, prior_mu, prior_logvar], -1))
            delta_mu, delta_logvar = delta.chunk(2, dim=-1)
            post_mu, post_logvar = prior_mu + delta_mu, _soft_bound(prior_logvar + delta_logvar)
            z = reparameterize(post_mu, post_logvar, generator) if sample_all else post_mu
            # The MBP steps on z_t and reads the memory as it was after step t-1.
            mbp_h, mbp_c = self.mbp_lstm(torch.cat([z, mbp_reads], -1), (mbp_h, mbp_c))
            keys, sharpness = self._read_keys(self.mbp_keys, mbp_h, c.mbp_read_heads)
            unit_memory = unit_rows(mem.memory)  # normalised once for both readers
            mbp_read, mbp_weights = cosine_read(mem.memory, keys, sharpness, unit_memory=unit_memory)
            # The policy: its own core on z_t (stop-gradient for MERLIN) and its own reads.
            z_pol = z.detach() if c.stop_gradient else z
            pol_h, pol_c = self.pol_lstm(torch.cat([z_pol, pol_reads], -1), (pol_h, pol_c))
            keys, sharpness = self._read_keys(self.pol_keys, pol_h, c.policy_read_heads)
            pol_memory, pol_unit = ((mem.memory.detach(), unit_memory.detach()) if c.stop_gradient
                                    else (mem.memory, unit_memory))
            pol_read, pol_weights = cosine_read(pol_memory, keys, sharpness, unit_memory=pol_unit)
            # Write z_t; the usage counts both readers' weights.
            write = fill_then_least_used_write_weights(mem.usage, mem.step)
            mem = update(mem, z, write, torch.cat([mbp_weights, pol_weights], 1), c.memory_gamma)
            mbp_reads, pol_reads = mbp_read.flatten(1), pol_read.flatten(1)
            for name, value in (("pol_h", pol_h), ("pol_reads", pol_reads), ("prior_mu", prior_mu),
                                ("prior_logvar", prior_logvar), ("post_mu", post_mu), ("post_logvar", post_logvar),
                                ("z", z)):
                record[name].append(value)
        seq = {k: torch.stack(v) for k, v in record.items()}
        head_in = torch.cat([seq["pol_h"], seq["pol_reads"]], -1)
        values = self.value_head(head_in)
        if self.popart is not None:
            values = values * self.popart.sigma + self.popart.mu
        out = MerlinOutput(self.policy_head(head_in), values, seq["prior_mu"], seq["prior_logvar"], seq["post_mu"],
                           seq["post_logvar"], seq["z"])
        state = (mbp_h, mbp_c, pol_h, pol_c, *mem, mbp_reads, pol_reads)
        return out, state

    def _check_inputs(self, obs, last_action, last_reward, first, core_state) -> tuple[int, int]:
        if obs.dim() != 2 + len(self.obs_shape) or tuple(obs.shape[2:]) != self.obs_shape:
            raise ValueError(f"obs must have shape [T, B, {', '.join(map(str, self.obs_shape))}]; "
                             f"got {tuple(obs.shape)}")
        T, B = obs.shape[:2]
        for name, tensor in (("last_action", last_action), ("last_reward", last_reward), ("first", first)):
            if tuple(tensor.shape) != (T, B):
                raise ValueError(f"{name} must have shape [{T}, {B}] to match obs {tuple(obs.shape)}; "
                                 f"got {tuple(tensor.shape)}")
        want = [(B,) + shape for shape, _ in state_spec(self.config).values()]
        got = [tuple(s.shape) for s in core_state]
        if got != want:
            raise ValueError(f"core_state must be {len(want)} tensors ({', '.join(STATE_NAMES)}) of shapes {want}; "
                             f"got {got}. Start from initial_state({B})")
        return T, B
