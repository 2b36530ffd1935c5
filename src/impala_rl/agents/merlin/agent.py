"""MERLIN (Wayne et al. 2018, "Unsupervised Predictive Memory in a Goal-Directed Agent") on
the runtime: IMPALA's actors and V-trace loss, a memory-based predictor trained by an ELBO.

The network is :class:`~impala_rl.agents.merlin.network.MerlinNet` (its docstring gives the
exact step order). The agent is :class:`~impala_rl.agents.impala.ImpalaAgent`'s, with:

- **acting, values, records**: IMPALA's (a sampled categorical policy from ``policy_params``);
- **state**: the network's recurrent state, named (:meth:`MerlinAgent.state_fields`): the two
  LSTMs, the memory and its bookkeeping, the last reads; stored per unroll before row 0 and
  reset by ``first`` inside the network's time loop;
- **loss**: IMPALA's V-trace loss, as :meth:`ImpalaAgent.loss` computes it (policy gradient,
  baseline, entropy, PopArt when on; SUMMED over the T x B steps), plus, with ``mbp_loss``,
  the MBP's weighted negative ELBO (:func:`impala_rl.core.elbo.elbo_loss`) over the same T
  steps (rows 0..T-1), also summed over T x B so it weighs against the RL loss as one more
  per-step term:

      obs_weight * NLL(x_t | z_t) + reward_weight * NLL(r_{t-1} | z_t)
      + action_weight * NLL(a_{t-1} | z_t) + return_weight * NLL(vs_t | z_t, sg(log pi_t))
      + kl_weight * KL(q(z_t) || p(z_t))

  with unit-variance gaussians for the reward (clipped as the network's input), the return
  (the V-trace targets ``vs``, no gradient; normalised by PopArt's statistics when on) and
  the observation when it is not in [0, 1]; Bernoulli for observations in [0, 1] (one-hot
  vectors and images, MinAtar's channels; ``obs_likelihood=auto``); a categorical for the
  previous action (left out at episode starts, where there is none). The Bernoulli matters:
  a unit-variance gaussian on a one-hot of 4 values saves at most 0.375 nats by knowing the
  value, less than the 1.39 nats of KL it costs to carry it in z, so the ELBO's optimum is a
  z that carries nothing (docs/merlin.md, "Why the first MERLIN did not learn"). The policy
  reads ``sg(z)`` and ``sg(memory)``, so the RL loss does not reach the
  encoder or the MBP and the ELBO does not reach the policy.

``mbp_loss=false`` is the paper's RL-MEM ablation: the same memory and policy, no decoders,
no ELBO, no stop-gradient (the RL loss trains the encoder, through z and the memory), and z
the posterior mean everywhere (nothing is sampled without an ELBO to train the variance).

Options (``--agent-options key=value,...``; :class:`MerlinOptions`), and where they come
from: the paper's own table of hyperparameters could not be consulted while writing this, so
the sizes are our scaling-down of the structure for small tasks (Z 32, N 64 slots, LSTMs of
128; HorizonRobotics/alf's reimplementation defaults to latent 200, 1350 slots, LSTMs of
256), and the read heads are 3 (MBP) and 1 (policy), as both public reimplementations we
read (alf, yosider/merlin) have them. The loss weights are all 1, the unweighted negative
ELBO: our choice, to tune. ``memory_gamma`` defaults to the run's ``--discount``. The
observation decoder is an MLP to the flattened observation (the paper's is a deconvolution);
on 4x84x84 Atari frames its last layer is about 3.6M weights.

State size: one unroll stores :func:`~impala_rl.agents.merlin.network.state_nbytes` bytes of
state per environment, ``4 (2 H_mbp + 2 H_pol + N (2Z + 3) + (K_mbp + K_pol) 2Z) + 8``: with
the defaults (Z 32, N 64, K 3 + 1, H 128 + 128) 20,232 bytes (about 20 KiB, the memory's
N x 2Z floats 16 KiB of it), against 1,074 bytes for the rest of a CartPole slot of 20 rows.
(:meth:`MerlinAgent.state_bytes` gives it for the options in force.)

Refused (one line each): continuous actions, several tasks, ``--value-torso separate``,
``--compile``, ``obs_likelihood=bernoulli`` on observations outside [0, 1], and a memory that
does not fit (:meth:`MerlinAgent.check_resources`: the rollout slots and the learner's unrolls).
IMPALA's ``--use-lstm``/``--lstm-size`` do not apply (MERLIN always has its two LSTMs).
Presets: IMPALA's by family and environment, without the continuous-only fields; not tuned
for MERLIN.
"""

from __future__ import annotations

import dataclasses

import torch

from impala_rl.agents.base import (Fields, LossOutput, agent_options, check_fits_in_memory,
                                   require_one_discrete_task)
from impala_rl.agents.impala.agent import ImpalaAgent, resolve_torso
from impala_rl.agents.merlin.network import (OBS_LIKELIHOODS, Z_SAMPLES, MerlinConfig, MerlinNet, state_nbytes,
                                             state_spec)
from impala_rl.config import ConfigError, TrainConfig
from impala_rl.core.elbo import bernoulli_nll, categorical_nll, diag_gaussian_kl, elbo_loss, gaussian_nll
from impala_rl.envs.spec import EnvSpec
from impala_rl.models import net_inputs
from impala_rl.presets import ENV_PRESETS as IMPALA_ENV_PRESETS
from impala_rl.presets import PRESETS as IMPALA_PRESETS


@dataclasses.dataclass(frozen=True)
class MerlinOptions:
    """``--agent-options`` of ``--agent merlin`` (see the module docstring for the sources)."""

    z_size: int = 32  # Z: the latent; memory rows are 2Z wide
    memory_slots: int = 64  # N: filled in order, then the least used slot is overwritten
    mbp_read_heads: int = 3
    policy_read_heads: int = 1
    mbp_hidden: int = 128
    policy_hidden: int = 128
    decoder_hidden: int = 128  # the prior, posterior and decoder MLPs' hidden width
    memory_gamma: float = -1.0  # the retroactive discount; < 0: the run's --discount
    mbp_loss: bool = True  # false: RL-MEM (no ELBO, no stop-gradient)
    z_sample: str = "decoders"  # decoders: the sample feeds the decoders only; all: the paper's (network docstring)
    obs_likelihood: str = "auto"  # gaussian, bernoulli, or auto: bernoulli for observations in [0, 1] (one-hots)
    obs_weight: float = 1.0
    reward_weight: float = 1.0
    action_weight: float = 1.0
    return_weight: float = 1.0
    kl_weight: float = 1.0


WEIGHTS = ("obs", "reward", "action", "return")
"""The reconstruction terms, each weighted by its ``<name>_weight`` option."""


def merlin_options(cfg: TrainConfig, env_spec: EnvSpec) -> MerlinOptions:
    """The options in ``cfg.agent_options``, checked, with ``memory_gamma`` and
    ``obs_likelihood`` resolved (``auto``: Bernoulli when the observations lie in [0, 1] and
    are not normalised, as one-hot vectors and images and MinAtar's channels; gaussian otherwise).
    Raises ConfigError naming the option and what is accepted."""
    opts = agent_options(cfg, MerlinOptions)
    checks = [(name, getattr(opts, name) >= 1, ">= 1") for name in
              ("z_size", "memory_slots", "mbp_read_heads", "policy_read_heads", "mbp_hidden", "policy_hidden",
               "decoder_hidden")]
    checks += [(f"{name}_weight", getattr(opts, f"{name}_weight") >= 0, ">= 0") for name in (*WEIGHTS, "kl")]
    checks += [("memory_gamma", opts.memory_gamma <= 1, "in [0, 1] (or < 0: the run's discount)"),
               ("z_sample", opts.z_sample in Z_SAMPLES, f"one of {', '.join(Z_SAMPLES)}"),
               ("obs_likelihood", opts.obs_likelihood in ("auto", *OBS_LIKELIHOODS),
                f"one of auto, {', '.join(OBS_LIKELIHOODS)}")]
    for name, ok, accepted in checks:
        if not ok:
            raise ConfigError(f"agent option {name}={getattr(opts, name)}: must be {accepted} (agent merlin)")
    if opts.memory_gamma < 0:
        opts = dataclasses.replace(opts, memory_gamma=cfg.discount)
    in_unit_interval = env_spec.obs_in_unit_interval and not cfg.normalize_observations
    if opts.obs_likelihood == "auto":
        opts = dataclasses.replace(opts, obs_likelihood="bernoulli" if in_unit_interval else "gaussian")
    elif opts.obs_likelihood == "bernoulli" and not in_unit_interval:
        # A Bernoulli's log-likelihood of a target outside [0, 1] has no upper bound: the ELBO would diverge.
        why = "--normalize-observations moves them out" if cfg.normalize_observations else f"{cfg.env}'s are not"
        raise ConfigError(f"agent option obs_likelihood=bernoulli needs observations in [0, 1] ({why}): use gaussian "
                          f"or auto (agent merlin)")
    return opts


def net_config(opts: MerlinOptions) -> MerlinConfig:
    """The network's sizes and switches from the (resolved) options."""
    return MerlinConfig(z_size=opts.z_size, memory_slots=opts.memory_slots, mbp_read_heads=opts.mbp_read_heads,
                        policy_read_heads=opts.policy_read_heads, mbp_hidden=opts.mbp_hidden,
                        policy_hidden=opts.policy_hidden, decoder_hidden=opts.decoder_hidden,
                        memory_gamma=opts.memory_gamma, stop_gradient=opts.mbp_loss, decoders=opts.mbp_loss,
                        z_sample=opts.z_sample, obs_likelihood=opts.obs_likelihood)


_NOT_MERLINS = ("value_torso", "bounded_mean", "init_log_std", "use_lstm", "lstm_size")
PRESETS = {family: {k: v for k, v in values.items() if k not in _NOT_MERLINS}
           for family, values in IMPALA_PRESETS.items()}
ENV_PRESETS = {env: {k: v for k, v in values.items() if k not in _NOT_MERLINS}
               for env, values in IMPALA_ENV_PRESETS.items()}


LEARNER_STATE_COPIES = 4
"""What the learner's forward and backward keep per step of its batch, in copies of one step's
state: measured 3.6 copies of the memory (``[T, B, N, 2Z]`` float32) at N = 1,000 and 2,000, T 50,
B 16 (peak resident memory of a forward and backward of the network)."""


class _Capture:
    """Stands in for the learner's forward in IMPALA's loss: asks for the decoders and keeps
    the output; other attributes (``popart``) fall through to the wrapped forward."""

    def __init__(self, forward):
        self.forward = forward
        self.out = None

    def __call__(self, *args, **kwargs):
        out, state = self.forward(*args, decode=True, **kwargs)
        self.out = out
        return out, state

    def __getattr__(self, name):
        if name in ("forward", "out"):  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.forward, name)


class MerlinAgent(ImpalaAgent):
    """MERLIN on the runtime (see the module docstring)."""

    name = "merlin"
    Options = MerlinOptions
    PRESETS, ENV_PRESETS = PRESETS, ENV_PRESETS
    RESUME_FIXED = ("torso", "mlp_sizes", "mlp_activation", "normalize_observations", "popart", "agent_options")

    def __init__(self, cfg: TrainConfig, env_spec: EnvSpec, actor: int | None = None):
        require_one_discrete_task("merlin", cfg, env_spec)
        if cfg.value_torso == "separate":
            raise ConfigError("--agent merlin takes --value-torso shared only (its policy and value share the "
                              "policy core)")
        if cfg.compile:
            # torch.compile traces the whole unroll, T steps of ~100 operations each: a first learner
            # step of RepeatPrevious had not finished compiling after 14 minutes (docs/merlin.md, "Speed").
            raise ConfigError("--agent merlin does not take --compile (torch.compile traces its whole unroll of "
                              "--unroll-length steps and did not finish compiling in 14 minutes); run without it")
        super().__init__(cfg, env_spec, actor)
        self.opts = merlin_options(cfg, env_spec)
        self.net_config = net_config(self.opts)

    def build_model(self) -> MerlinNet:
        cfg, spec = self.cfg, self.env_spec
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                return MerlinNet(tuple(spec.obs_shape), spec.action_dim, self.net_config,
                                 torso=resolve_torso(cfg, spec), mlp_sizes=tuple(cfg.mlp_sizes),
                                 activation=cfg.mlp_activation, channels_last=cfg.channels_last and spec.is_image,
                                 init=cfg.init, num_values=spec.num_tasks, popart=cfg.popart,
                                 popart_beta=cfg.popart_beta, normalize_observations=cfg.normalize_observations)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def state_fields(self) -> Fields:
        return state_spec(self.net_config)

    def check_resources(self) -> None:
        """Every rollout slot stores one unroll's state, and the learner's backward pass keeps the
        memory of every step of its batch: together they must fit in this machine's memory."""
        cfg = self.cfg
        slots = self.state_bytes() * cfg.slots
        learner = LEARNER_STATE_COPIES * (cfg.unroll_length + 1) * cfg.batch_size * self.state_bytes()
        check_fits_in_memory(slots + learner, f"MERLIN's state in {cfg.slots} rollout slots and the learner's "
                             f"unrolls ({LEARNER_STATE_COPIES} copies of the memory per step of its batch)",
                             "lower --agent-options memory_slots or z_size, or --unroll-length or --batch-size")

    def state_bytes(self) -> int:
        """Bytes of state one unroll stores per environment (the module docstring's figure)."""
        return state_nbytes(self.net_config)

    def loss(self, forward, batch: dict[str, torch.Tensor]) -> LossOutput:
        if not self.opts.mbp_loss:
            return super().loss(forward, batch)  # RL-MEM: IMPALA's loss alone
        capture = _Capture(forward)
        rl = super().loss(capture, batch)
        mbp, metrics = self.mbp_loss(capture.out, batch, rl.per_unroll["value_targets"].transpose(0, 1),
                                     getattr(forward, "popart", None))
        return LossOutput(rl.loss + mbp, {**rl.metrics, **metrics}, rl.per_unroll)

    def mbp_loss(self, out, batch: dict[str, torch.Tensor], vs: torch.Tensor,
                 popart=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The MBP's weighted negative ELBO over rows 0..T-1, summed over T x B, and its metrics.

        ``out``: the network's decoded output for the batch's T+1 rows; ``vs``: ``[T, B]`` the
        V-trace value targets (reward units), the return decoder's target.
        """
        opts, T = self.opts, vs.shape[0]
        inputs = net_inputs(batch["obs"], batch["first"], batch["last_action"], batch["reward"], self.cfg.reward_clip)
        not_first = (~batch["first"][:T]).float()
        obs_pred, obs_target = out.obs_pred[:T].flatten(2), out.obs_target[:T].flatten(2)
        if opts.obs_likelihood == "bernoulli":
            recon_obs = bernoulli_nll(obs_pred, obs_target)
        else:
            recon_obs = gaussian_nll(obs_pred, obs_target)
        target_return = vs.detach()
        if popart is not None:  # the return decoder predicts in the value head's normalised units
            mu, sigma = popart.statistics(batch["task"])
            target_return = (target_return - mu) / sigma
        recon = {
            "obs": recon_obs,
            "reward": gaussian_nll(out.reward_pred[:T, :, None], inputs["last_reward"][:T, :, None]),
            "action": categorical_nll(out.action_logits[:T], batch["last_action"][:T]) * not_first,
            "return": gaussian_nll(out.return_pred[:T, :, None], target_return[:, :, None]),
        }
        kl = diag_gaussian_kl(out.post_mu[:T], out.post_logvar[:T], out.prior_mu[:T], out.prior_logvar[:T])
        weights = {name: getattr(opts, f"{name}_weight") for name in WEIGHTS}
        loss, metrics = elbo_loss(recon, kl, weights, opts.kl_weight)
        loss = loss * kl.numel()  # summed over the T x B steps, as impala_loss's terms
        metrics["mbp_loss"] = loss.detach()
        with torch.no_grad():
            metrics["posterior_std"] = torch.exp(0.5 * out.post_logvar[:T]).mean()
        return loss, metrics
