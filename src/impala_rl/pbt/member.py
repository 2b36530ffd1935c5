"""What PBT does to one member's learner: exploit (copy another member).

It happens between two updates of a running learner, without a restart, as does explore
(the controller's :func:`~impala_rl.pbt.rules.explore`, applied by the member's hook with
:meth:`~impala_rl.runtime.learner.Learner.set_hyperparameters`).
"""

from __future__ import annotations

import copy


def exploit(learner, source: dict) -> dict[str, float]:
    """Copy another member's weights, optimiser state, agent state and hyperparameters into ``learner``.

    ``source`` is that member's checkpoint (:meth:`Learner.state_dict` plus its ``config``
    dict). The member keeps its own frame count and policy version: they count its own
    experience and updates. Returns the hyperparameters now in force."""
    learner.model.load_state_dict(source["model"])
    # A deep copy: torch's load_state_dict keeps tensors that need no cast, so a live source's
    # optimiser state would otherwise be shared (and stepped twice).
    learner.optimizer.load_state_dict(copy.deepcopy(source["optimizer"]))
    learner.agent.load_state_dict(copy.deepcopy(source.get("agent", {})))  # e.g. a target network
    hparams = {name: source["config"][name] for name in learner.hyperparameters()}
    learner.set_hyperparameters(**hparams)
    return hparams

