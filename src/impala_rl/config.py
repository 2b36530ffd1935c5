"""Training configuration: one validated dataclass, the single source of every default.

Each field's ``help`` metadata becomes its ``impala train --help`` text; ``group``
sorts the help into sections. Defaults are the paper's Atari values (Espeholt et al.
2018, Table G.1 and the text): unroll 20, batch 32, discount 0.99, baseline cost 0.5,
entropy cost 0.01, RMSProp (lr 6e-4 linearly annealed to 0, decay 0.99, momentum 0,
epsilon 0.01), global gradient-norm clip 40.

Per-family presets (``PRESETS`` in :mod:`impala_rl.presets`: atari, classic_control, continuous, minatar, memory) adjust
fields the user did not set (e.g. for Atari: 32 envs per actor and two passes over each
batch in four minibatches); the CLI prints what a preset changed. Derived values (slot
count, frames per learner step) are properties, never fields mutated after parsing.

The config is composed of ``SECTIONS`` (environment, model, agent, optimiser, runtime,
ray, logging): every field belongs to one and ``--help`` groups the flags by them.
They are kept in one flat dataclass rather than a
nested tree: it pickles to actor processes and Ray workers as is, serialises to the one
flat JSON object every run directory already holds (old run directories load
unchanged), and maps one-to-one onto command-line flags. An agent reads the ``agent``
section (IMPALA: discount, costs, V-trace thresholds, PopArt, ...).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from impala_rl.errors import ConfigError
from impala_rl.presets import ENV_PRESETS, PRESETS

__all__ = ["ENV_PRESETS", "PRESETS", "SECTIONS", "ConfigError", "TrainConfig", "apply_preset", "flag_value",
           "lacks_preset"]

DEVICES = ("auto", "cpu", "cuda")
NATIVE_ENV = ("auto", "on", "off")
INFERENCE = ("actor", "central")
OPTIMIZERS = ("rmsprop", "rmsprop_tf", "adam")

VALUE_TORSOS = ("shared", "separate")
LEARNER_PRECISIONS = ("float32", "bfloat16", "auto")


def flag_value(value) -> str:
    """A field's value as it is written on the command line (tuples space-separated)."""
    return " ".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


SECTIONS = ("environment", "model", "agent", "optimiser", "runtime", "ray", "logging")


def _f(default: Any, help: str, group: str, **kw: Any) -> Any:
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={"help": help, "group": group, **kw})
    return field(default=default, metadata={"help": help, "group": group, **kw})


def _vocabulary(name: str) -> tuple[str, ...]:
    """The values a field accepts, from the module that defines them (imported only when
    validating, so that ``--help`` does not load torch)."""
    if name == "correction":
        from impala_rl.core.corrections import CORRECTIONS
        return CORRECTIONS
    if name == "torso":
        from impala_rl.models.torsos import TORSOS
        return ("auto", *TORSOS)
    if name == "init":
        from impala_rl.models.net import INITS
        return INITS
    from impala_rl.models.torsos import ACTIVATIONS
    return tuple(ACTIVATIONS)


@dataclass
class TrainConfig:
    # --- environment -------------------------------------------------------------
    env: str = _f("ALE/Pong-v5", "Gymnasium id; ALE/<Game>-v5 ids get the paper's Atari pipeline. Several "
                  "comma-separated ids train one agent on all of them (multi-task; docs/multitask.md).", "environment")
    sticky_actions: float = _f(0.0, "Atari repeat_action_probability (0 = deterministic, as in the paper).", "environment")
    episodic_life: bool = _f(False, "Atari: treat a lost life as episode end for learning only (returns still span the game).", "environment")
    full_action_space: bool = _f(False, "Atari: use all 18 actions instead of the game's minimal set.", "environment")
    noop_max: int = _f(30, "Atari: up to this many no-op actions after reset.", "environment")
    max_episode_frames: int = _f(108_000, "Atari: cap on emulator frames per episode (truncation).", "environment")
    # --- model --------------------------------------------------------------------
    agent: str = _f("impala", "The agent: impala, or module:Class for an agent defined elsewhere "
                    "(see impala_rl.agents).", "agent")
    agent_options: str = _f("", "The agent's own options, key=value,... (an agent declares them as its Options "
                            "dataclass; see impala_rl.agents.agent_options). IMPALA's are the flags of this section.",
                            "agent")
    torso: str = _f("auto", "Network torso: auto (minatar for MinAtar ids, shallow for other images, mlp for "
                    "vectors), mlp, shallow, deep, minatar.", "model")
    use_lstm: bool = _f(False, "Add the paper's LSTM core (input: features, one-hot last action, clipped reward).", "model")
    lstm_size: int = _f(256, "LSTM hidden size.", "model")
    mlp_sizes: tuple = _f((64, 64), "Hidden layer sizes of the MLP torso.", "model")
    mlp_activation: str = _f("relu", "Nonlinearity of the MLP torso: relu or tanh.", "model")
    value_torso: str = _f("shared", "shared: policy and value heads on one torso (the paper); separate: the value "
                          "head gets a torso of its own (not with --use-lstm).", "model")
    bounded_mean: bool = _f(False, "Gaussian policies: squash the mean into the action bounds with tanh "
                            "(the sampled action is still clipped to them).", "model")
    init_log_std: float = _f(0.0, "Gaussian policies: initial log standard deviation of every action dimension "
                             "(state-independent, learned; 0 = std 1).", "model")
    channels_last: bool = _f(True, "Image torsos: channels-last memory format (faster convolutions on CPU).", "model")
    init: str = _f("orthogonal", "Weight init: orthogonal (torso gain sqrt 2, value head 1, zero biases) or torch "
                   "(PyTorch's defaults); the policy head is always orthogonal with gain 0.01.", "model")
    normalize_observations: bool = _f(False, "Normalise observations by running mean and variance kept in the "
                                      "network (updated by the learner, clipped to [-10, 10]); for vector "
                                      "observations such as MuJoCo's.", "model")
    compile: bool = _f(False, "torch.compile the learner's network (faster steps after a compile at start).", "model")
    learner_precision: str = _f("float32", "The learner network's forward and backward: float32; bfloat16 (autocast; "
                                "weights, optimiser state, V-trace and the losses stay float32); or auto (bfloat16 "
                                "where the device computes it natively: CPUs with AVX512-BF16 or AMX, CUDA with "
                                "bf16; float32 elsewhere).", "model")
    # --- algorithm ------------------------------------------------------------------
    unroll_length: int = _f(20, "Unroll length T (each unroll holds T+1 rows: it overlaps the previous by one).", "agent")
    batch_size: int = _f(32, "Unrolls per learner batch B.", "agent")
    discount: float = _f(0.99, "Discount factor gamma.", "agent")
    baseline_cost: float = _f(0.5, "Weight of the baseline (value) loss.", "agent")
    entropy_cost: float = _f(0.01, "Weight of the entropy bonus.", "agent")
    entropy_anneal_frames: int = _f(0, "Anneal the entropy bonus linearly from --entropy-cost to 0 over this many "
                                    "frames (then 0), so the policy can sharpen once it plays well; 0 = constant.",
                                    "agent")
    correction: str = _f("vtrace", "Off-policy correction: vtrace, 1step_is, epsilon, none (paper Table 2).", "agent")
    clip_rho_threshold: float = _f(1.0, "V-trace rho-bar (truncation of the value-target importance weights).", "agent")
    clip_c_threshold: float = _f(1.0, "V-trace c-bar (truncation of the trace-cutting coefficients).", "agent")
    clip_pg_rho_threshold: float = _f(1.0, "Truncation of the policy-gradient importance weights (V-trace and "
                                      "1step_is; the paper clips both at 1).", "agent")
    vtrace_lambda: float = _f(1.0, "V-trace lambda (c_i = lambda * min(c-bar, rho_i)).", "agent")
    reward_clip: float = _f(1.0, "Clip rewards to [-x, x] in the learner; 0 disables clipping.", "agent")
    normalize_advantages: bool = _f(False, "Standardise the policy-gradient advantages over each batch (mean 0, "
                                    "std 1), as PPO does; not in the paper.", "agent")
    popart: bool = _f(False, "PopArt: normalise value targets by running statistics (one pair per task) and "
                      "rescale the value head so its outputs are preserved (van Hasselt et al. 2016; Hessel et al. "
                      "2018). Turns reward clipping off unless --reward-clip is given: PopArt trains on unclipped "
                      "rewards.", "agent")
    popart_beta: float = _f(3e-4, "PopArt: EMA step of the value-target statistics.", "agent")
    replay_proportion: float = _f(0.0, "Experience replay: this fraction of every batch is unrolls drawn uniformly "
                                  "from a replay buffer, the rest fresh (paper Table 2 uses 0.5); 0 = no replay. "
                                  "The buffer is not checkpointed.", "agent")
    replay_capacity: int = _f(10_000, "Experience replay: unrolls the buffer holds (oldest overwritten); memory = "
                              "capacity x bytes per unroll, printed at start.", "agent")
    learner_epochs: int = _f(1, "Gradient passes over each batch (1 = the paper's single pass); V-trace corrects "
                             "for the policy moving between passes.", "agent")
    learner_minibatches: int = _f(1, "Split each pass over a batch into this many minibatches of unrolls (one "
                                  "gradient step each); must divide batch_size.", "agent")
    # --- optimiser -----------------------------------------------------------------
    optimizer: str = _f("rmsprop", "rmsprop (torch: eps outside the square root, accumulator starts at 0), "
                        "rmsprop_tf (the paper's TensorFlow RMSProp: eps inside the root, accumulator starts at 1), "
                        "or adam.", "optimiser")
    learning_rate: float = _f(6e-4, "Learning rate (linearly annealed to 0 over total_frames unless --no-lr-anneal).",
                              "optimiser")
    lr_anneal: bool = _f(True, "Anneal the learning rate linearly to 0 over total_frames.", "optimiser")
    rmsprop_decay: float = _f(0.99, "RMSProp decay (alpha).", "optimiser")
    rmsprop_momentum: float = _f(0.0, "RMSProp momentum.", "optimiser")
    rmsprop_epsilon: float = _f(0.01, "RMSProp epsilon (rmsprop and rmsprop_tf).", "optimiser")
    adam_epsilon: float = _f(1e-5, "Adam epsilon.", "optimiser")
    grad_norm_clip: float = _f(40.0, "Clip the global gradient norm to this value; 0 disables clipping.", "optimiser")
    # --- runtime -------------------------------------------------------------------
    total_frames: int = _f(50_000_000, "Stop after this many environment frames (agent steps x action repeat).", "runtime")
    backend: str = _f("local", "local: actor processes + shared memory; serial: one process (debugging); "
                      "ray: Ray actors on one or many machines (see docs/distributed.md).", "runtime")
    num_actors: int = _f(2, "Actor processes.", "runtime")
    envs_per_actor: int = _f(8, "Environments stepped by each actor (inference batched over them).", "runtime")
    env_groups: int = _f(1, "Split each actor's envs into this many groups stepped alternately (one steps while "
                         "the actor computes on another).", "runtime")
    native_env: str = _f("auto", "Atari: auto/on use ale-py's native C++ vector env; off uses Gymnasium wrappers.",
                         "runtime")
    inference: str = _f("actor", "actor: each actor runs its own CPU copy of the policy; central: one batched "
                        "inference server on the learner's device (dynamic batching).", "runtime")
    inference_min_batch: int = _f(0, "Central inference: run a batch once this many env steps wait; 0 = auto "
                                  "(half of all envs).", "runtime")
    inference_timeout_ms: float = _f(2.0, "Central inference: longest wait for inference_min_batch before running "
                                     "a partial batch.", "runtime")
    num_slots: int = _f(0, "Rollout slots in shared memory; 0 = auto (2 x actors x envs + batch).", "runtime")
    pace_actors: bool = _f(True, "Local backend: grant actors only as many unrolls ahead of the learner as keep "
                           "it fed (the window shrinks while a spare batch waits, grows when the learner waits), so "
                           "the policy lag stays at 1-2 updates (one unroll in flight per actor) when the learner "
                           "is the bottleneck; --no-pace-actors: actors fill every slot (lag up to num_slots / "
                           "batch).", "runtime")
    sync: bool = _f(False, "Batched A2C, sync trajectories (paper Table 1): actors wait for fresh weights each "
                    "unroll (policy lag 0); with --inference central: batched A2C with dynamic batching.", "runtime")
    sync_step: bool = _f(False, "Batched A2C, sync step (paper Table 1): all environments of all actors step in "
                         "lock-step, one batched forward pass chooses every action (local backend: on the "
                         "learner's device), then the learner updates (implies --sync; serial or local backend).",
                         "runtime")
    device: str = _f("auto", "Learner device: auto (cuda if available), cpu, cuda.", "runtime")
    learner_threads: int = _f(0, "torch threads in the learner; 0 = auto: the cores the local actor processes "
                              "leave free (at least 1); all cores with the serial backend.", "runtime")
    seed: int = _f(0, "Random seed (environments, actions, initial weights).", "runtime")
    max_nonfinite: int = _f(10, "Stop after this many consecutive non-finite losses (updates are skipped).", "runtime")
    stop_at_return: str = _f("", "Stop early (stop_reason 'target', exit 0) once the mean return over the last 100 "
                             "episodes reaches this: one number, or one per task, comma-separated (negative ones "
                             "after '=': --stop-at-return=-150,-200); empty = train to --total-frames.", "runtime")
    # --- ray (--backend ray; docs/distributed.md) -------------------------------------
    ray_address: str = _f("local", "Ray cluster to join: auto (the one `ray start` runs on this machine) or "
                          "HEAD_IP:6379; local = start a private Ray for this run, on 127.0.0.1.", "ray")
    cpus_per_actor: float = _f(1.0, "Ray CPUs each actor reserves (Ray places actors by them, spread over nodes).", "ray")
    unrolls_in_flight: int = _f(2, "Unroll requests outstanding per Ray actor (back-pressure: bounds object-store "
                                "memory and policy lag).", "ray")
    num_learners: int = _f(1, "Data-parallel learners, each fed by its own share of the actors; gradients are "
                           "averaged with torch.distributed (gloo on CPU, NCCL on GPU). Ray backend only.", "ray")
    # --- logging -------------------------------------------------------------------
    run_dir: str = _f("", "Run directory; default runs/<env>-<time>.", "logging")
    log_interval: float = _f(5.0, "Seconds between progress lines and CSV/TensorBoard rows.", "logging")
    checkpoint_interval: float = _f(10.0, "Minutes between checkpoints (one is always written at the end).", "logging")
    quiet: bool = _f(False, "No progress lines on stderr.", "logging")
    eval_interval: int = _f(0, "Every this many frames, play --eval-episodes greedy episodes of each task with the "
                            "learner's current weights (in the learner's process; training waits) and log "
                            "eval_return; 0 = off.", "logging")
    eval_episodes: int = _f(5, "Episodes per task of each --eval-interval evaluation.", "logging")
    eval_max_steps: int = _f(27_000, "Cap on agent steps per evaluation episode (the hook and `impala eval`), so "
                             "that a deterministic policy in an environment without a time limit of its own "
                             "(MinAtar, ...) cannot play forever; 27,000 = Atari's 108k frames at 4 frames per "
                             "step. An environment's own limit ends episodes sooner. 0 = no cap.", "logging")

    @classmethod
    def for_env(cls, env: str, preset: str | None = "auto", presets: tuple[dict, dict] | None = None,
                **overrides: Any) -> "TrainConfig":
        """The config ``impala train --env ENV`` would run: the environment family's preset
        applied to every field not in ``overrides`` (``preset=None``: the paper's defaults;
        or a family name from ``PRESETS``). ``presets``: (by family, by env id) to take them
        from, as :func:`impala_rl.agents.agent_presets` gives them (default: IMPALA's, in
        :mod:`impala_rl.presets`); an agent whose presets lack the family gets its flags'
        defaults, as from the command line. Raises ConfigError / UnknownEnvError (ValueErrors)."""
        cfg = cls(env=env, **overrides)
        if preset == "auto":
            from impala_rl.envs import env_family  # opens the environment once to read its action space

            family = env_family(env)
            preset = None if lacks_preset(family, presets) else family  # as `impala train`
        return apply_preset(cfg, set(overrides) | {"env"}, preset, presets)[0].validate()

    # ---------------------------------------------------------------- derived values
    @property
    def is_atari(self) -> bool:
        from impala_rl.envs.factory import is_atari  # one definition of what gets the Atari pipeline

        return is_atari(self.env)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The run's Gymnasium ids: one, or several for a multi-task run."""
        from impala_rl.envs.tasks import task_ids

        return task_ids(self.env)

    @property
    def stop_returns(self) -> tuple[float, ...]:
        """--stop-at-return as one target per task (empty: no early stop)."""
        if not self.stop_at_return.strip():
            return ()
        try:
            values = tuple(float(v) for v in self.stop_at_return.split(","))
        except ValueError:
            values = ()
        n = len(self.tasks)
        if not values or not all(math.isfinite(v) for v in values) or len(values) not in (1, n):
            raise ConfigError(f"stop_at_return must be one number or one per task ({n}), comma-separated; "
                              f"got '{self.stop_at_return}'")
        return values * n if len(values) == 1 else values

    def default_run_dir(self) -> str:
        """runs/<env>-<time> (several tasks: runs/<Label+Label+...>-<time>)."""
        import time

        from impala_rl.envs.tasks import task_labels

        tasks = self.tasks
        name = self.env.replace("/", "_") if len(tasks) == 1 else "+".join(task_labels(tasks))
        return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")

    @property
    def sync_weights(self) -> bool:
        """Actors wait for the weights of the last update before each unroll (--sync, --sync-step)."""
        return self.sync or self.sync_step

    @property
    def central_inference(self) -> bool:
        """One inference server on the learner's device (--inference central, --sync-step on the local backend)."""
        return self.inference == "central" or (self.sync_step and self.backend == "local")

    @property
    def total_envs(self) -> int:
        return self.num_actors * self.envs_per_actor

    @property
    def slots(self) -> int:
        """Rollout slots: enough for every env to fill one unroll while another waits."""
        return self.num_slots or 2 * self.total_envs + self.batch_size

    @property
    def resolved_learner_threads(self) -> int:
        """Learner threads: more threads than free cores make every op wait on busy cores
        (measured: a CartPole learner step 70x slower with 2 threads beside 2 actors on 2 cores)."""
        if self.learner_threads:
            return self.learner_threads
        cores = os.cpu_count() or 1
        if self.backend == "serial":
            return cores
        return max(1, cores - self.num_actors)

    @property
    def frames_per_step(self) -> int:
        """Environment frames per agent step (the action repeat)."""
        from impala_rl.envs.factory import frames_per_step  # the Atari pipeline's frame_skip, else 1

        return frames_per_step(self.env)

    @property
    def replayed_per_batch(self) -> int:
        """Unrolls of each batch drawn from the replay buffer."""
        return int(self.batch_size * self.replay_proportion + 0.5)

    @property
    def fresh_batch_size(self) -> int:
        """Unrolls of each batch that come fresh from the actors (the backends' batch)."""
        return self.batch_size - self.replayed_per_batch

    @property
    def frames_per_batch(self) -> int:
        """Environment frames behind one batch: its fresh unrolls only (replayed ones were counted before)."""
        return self.unroll_length * self.fresh_batch_size * self.frames_per_step

    @property
    def frames_per_update(self) -> int:
        """Frames consumed by one update: every learner contributes a batch (num_learners > 1)."""
        return self.frames_per_batch * self.num_learners

    # ---------------------------------------------------------------- validation
    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first invalid value and what is accepted."""
        def choice(name: str, accepted: tuple) -> None:
            value = getattr(self, name)
            if value not in accepted:
                raise ConfigError(f"{name} '{value}' is not one of: {', '.join(accepted)}")

        def positive(name: str) -> None:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")

        def non_negative(name: str) -> None:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

        choice("torso", _vocabulary("torso"))
        choice("correction", _vocabulary("correction"))
        choice("device", DEVICES)
        choice("native_env", NATIVE_ENV)
        choice("inference", INFERENCE)
        choice("optimizer", OPTIMIZERS)
        choice("init", _vocabulary("init"))
        choice("mlp_activation", _vocabulary("mlp_activation"))
        choice("value_torso", VALUE_TORSOS)
        choice("learner_precision", LEARNER_PRECISIONS)
        for name in ("unroll_length", "batch_size", "num_actors", "envs_per_actor", "env_groups", "total_frames",
                     "lstm_size", "learning_rate", "log_interval", "checkpoint_interval", "max_nonfinite",
                     "eval_episodes"):
            positive(name)
        for name in ("num_slots", "reward_clip", "grad_norm_clip", "learner_threads", "noop_max",
                     "entropy_cost", "baseline_cost", "rmsprop_epsilon", "rmsprop_momentum", "adam_epsilon",
                     "eval_interval", "eval_max_steps", "entropy_anneal_frames"):
            non_negative(name)
        if not 0.0 <= self.discount <= 1.0:
            raise ConfigError(f"discount must be in [0, 1], got {self.discount}")
        if not 0.0 <= self.sticky_actions <= 1.0:
            raise ConfigError(f"sticky_actions must be in [0, 1], got {self.sticky_actions}")
        if not 0.0 < self.vtrace_lambda <= 1.0:
            raise ConfigError(f"vtrace_lambda must be in (0, 1], got {self.vtrace_lambda}")
        if not -10.0 <= self.init_log_std <= 2.0:
            raise ConfigError(f"init_log_std must be in [-10, 2] (std e^-10 to e^2), got {self.init_log_std}")
        if self.use_lstm and self.value_torso == "separate":
            raise ConfigError("value_torso 'separate' cannot be combined with --use-lstm; use one or the other")
        positive("learner_epochs")
        positive("learner_minibatches")
        if self.batch_size % self.learner_minibatches:
            raise ConfigError(f"learner_minibatches ({self.learner_minibatches}) must divide batch_size "
                              f"({self.batch_size})")
        if not 0.0 < self.popart_beta <= 1.0:
            raise ConfigError(f"popart_beta must be in (0, 1], got {self.popart_beta}")
        if not 0.0 <= self.rmsprop_decay < 1.0:
            raise ConfigError(f"rmsprop_decay must be in [0, 1), got {self.rmsprop_decay}")
        if not self.mlp_sizes or any(int(s) <= 0 for s in self.mlp_sizes):
            raise ConfigError(f"mlp_sizes must be positive integers, got {self.mlp_sizes}")
        if self.stop_returns and self.num_learners > 1:
            raise ConfigError("stop_at_return needs a single learner (each of --num-learners sees only its own "
                              "episodes); drop one of the two")
        non_negative("inference_min_batch")
        non_negative("inference_timeout_ms")
        if self.inference == "central" and (self.backend != "local" or self.env_groups != 1):
            raise ConfigError(f"inference 'central' needs --backend local and --env-groups 1 "
                              f"(got backend {self.backend}, env_groups {self.env_groups})")
        if self.env_groups > self.envs_per_actor:
            raise ConfigError(f"env_groups ({self.env_groups}) must be <= envs_per_actor ({self.envs_per_actor})")
        if self.batch_size > self.slots:
            raise ConfigError(
                f"batch_size ({self.batch_size}) is larger than the number of rollout slots ({self.slots}); "
                f"use a batch_size <= num_slots, or raise num_slots")
        if self.slots < self.batch_size + self.envs_per_actor:
            raise ConfigError(
                f"num_slots ({self.slots}) must be at least batch_size + envs_per_actor "
                f"({self.batch_size + self.envs_per_actor}) so an actor can fill an unroll while the learner holds a batch")
        if not 0.0 <= self.replay_proportion < 1.0:
            raise ConfigError(f"replay_proportion must be in [0, 1), got {self.replay_proportion}")
        if self.fresh_batch_size < 1 or (self.replay_proportion > 0 and self.replayed_per_batch < 1):
            raise ConfigError(f"replay_proportion {self.replay_proportion} of batch_size {self.batch_size} leaves "
                              f"{self.fresh_batch_size} fresh and {self.replayed_per_batch} replayed unrolls; "
                              f"each must be at least 1")
        positive("replay_capacity")
        if self.replay_proportion > 0 and self.replay_capacity < self.fresh_batch_size:
            raise ConfigError(f"replay_capacity ({self.replay_capacity}) must hold at least one batch of fresh "
                              f"unrolls ({self.fresh_batch_size})")
        if self.replay_proportion > 0 and self.num_learners > 1:
            raise ConfigError("replay needs num_learners 1 (one buffer, one learner)")
        if len(self.tasks) > self.total_envs:
            raise ConfigError(f"{len(self.tasks)} tasks need at least as many environments; got num_actors x "
                              f"envs_per_actor = {self.total_envs}")
        self._validate_ray()
        if self.sync_step and (self.backend not in ("serial", "local") or self.env_groups != 1):
            raise ConfigError(f"sync_step needs --backend serial or local and --env-groups 1 (got backend "
                              f"{self.backend}, env_groups {self.env_groups})")
        if self.sync_weights and self.fresh_batch_size != self.total_envs:
            raise ConfigError(
                f"sync mode needs batch_size == num_actors x envs_per_actor ({self.total_envs}) so every "
                f"batch holds one unroll of each env at one policy version; got batch_size {self.batch_size}"
                + (f" of which {self.fresh_batch_size} fresh" if self.replay_proportion else ""))
        return self

    def _validate_ray(self) -> None:
        if self.backend != "ray":
            if self.ray_address not in ("local", "") or self.num_learners != 1:
                raise ConfigError(f"ray_address and num_learners need --backend ray (got backend {self.backend})")
            return
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("the ray backend needs Ray, which is not installed: pip install 'impala-rl[ray]'")
        for name in ("cpus_per_actor", "unrolls_in_flight", "num_learners"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_learners > self.num_actors:
            raise ConfigError(f"num_learners ({self.num_learners}) must be <= num_actors ({self.num_actors}): "
                              f"each learner is fed by its own share of the actors")
        if self.popart and self.num_learners > 1:
            raise ConfigError("popart needs num_learners 1 (each learner would move its own statistics)")
        if self.sync_weights and self.num_learners > 1:
            raise ConfigError("sync mode needs num_learners 1 (one batch of every env at one policy version)")

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mlp_sizes"] = list(self.mlp_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        d = dict(d)
        if "mlp_sizes" in d:
            d["mlp_sizes"] = tuple(int(s) for s in d["mlp_sizes"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def lacks_preset(family: str, presets: tuple[dict, dict] | None = None) -> bool:
    """Whether an agent that declares presets (``presets``: as :func:`apply_preset` takes them) has
    none for ``family``: such a run gets the flags' defaults (the agent may still refuse the env)."""
    by_family = (presets if presets is not None else (PRESETS, ENV_PRESETS))[0]
    return bool(by_family) and family not in by_family


def apply_preset(cfg: TrainConfig, explicit: set[str], family: str | None,
                 presets: tuple[dict, dict] | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """Return (config with ``family``'s preset applied to non-explicit fields, the changes made).

    ``presets``: (by family, by environment id), an agent's own (``AgentBase.PRESETS``,
    ``ENV_PRESETS``); default: IMPALA's (:mod:`impala_rl.presets`). An agent that declares
    none gets none: the flags' defaults. ``family`` None applies no preset. Either way,
    PopArt turns reward clipping off unless ``reward_clip`` is explicit (the PopArt paper
    trains on unclipped rewards)."""
    by_family, by_env = presets if presets is not None else (PRESETS, ENV_PRESETS)
    if family is not None and by_family and family not in by_family:
        raise ConfigError(f"no preset for environment family {family!r}; known: {', '.join(by_family)}")
    preset = by_family.get(family, {}) if family is not None else {}
    if family is not None:
        preset = {**preset, **by_env.get(cfg.env, {})}
    changes = {k: v for k, v in preset.items() if k not in explicit and getattr(cfg, k) != v}
    if changes.get("popart", cfg.popart) and "reward_clip" not in explicit and \
            changes.get("reward_clip", cfg.reward_clip) != 0.0:
        changes["reward_clip"] = 0.0
    return dataclasses.replace(cfg, **changes), changes
