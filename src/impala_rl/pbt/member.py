"""What PBT does to one member's learner: exploit (copy another member) and explore (perturb).

Both happen between two updates of a running learner, without a restart
(:meth:`~impala_rl.runtime.learner.Learner.set_hyperparameters`).
"""

from __future__ import annotations

import copy
import random

import torch

from impala_rl.pbt.rules import Rules, explore


def exploit(learner, source: dict) -> dict[str, float]:
    """Copy another member's weights, optimiser state and hyperparameters into ``learner``.

    ``source`` is that member's checkpoint (:meth:`Learner.state_dict` plus its ``config``
    dict). The member keeps its own frame count and policy version: they count its own
    experience and updates. Returns the hyperparameters now in force."""
    learner.model.load_state_dict(source["model"])
    # A deep copy: torch's load_state_dict keeps tensors that need no cast, so a live source's
    # optimiser state would otherwise be shared (and stepped twice).
    learner.optimizer.load_state_dict(copy.deepcopy(source["optimizer"]))
    hparams = {name: source["config"][name] for name in learner.hyperparameters()}
    learner.set_hyperparameters(**hparams)
    return hparams


def perturb(learner, rules: Rules, rng: random.Random) -> dict[str, float]:
    """Explore: each mutable hyperparameter named in ``rules.bounds`` may move by a factor
    (:func:`~impala_rl.pbt.rules.explore`); returns the new values."""
    new = explore(learner.hyperparameters(), rules, rng)
    learner.set_hyperparameters(**new)
    return new


@torch.no_grad()
def same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
