"""Each of the paper's corrections against a small case worked out by hand.

The case (T=2, B=1):
    rewards   r = [1, 2]        discounts gamma = [0.9, 0.9]
    values    V = [0.5, 1.0]    bootstrap V(x_2) = 2
    IS weights pi/mu = [2, 0.5]   (log_rhos = [log 2, log 0.5])

'none' (rho = c = 1):
    v_1 = r_1 + 0.9 * 2     = 3.8
    v_0 = r_0 + 0.9 * v_1   = 1 + 3.42 = 4.42     (= 1 + 0.9*2 + 0.81*2, the 2-step return)
    A_0 = r_0 + 0.9 v_1 - V_0 = 4.42 - 0.5 = 3.92
    A_1 = r_1 + 0.9 * 2 - V_1 = 3.8 - 1.0  = 2.8
'1step_is': same vs; the IS weight clipped at 1 (the paper, section 5.2.2):
    A = [min(1, 2) * 3.92, 0.5 * 2.8] = [3.92, 1.4];  unclipped (threshold None): [7.84, 1.4]
'vtrace' (all thresholds 1): rho = c = [1, 0.5]
    delta_1 = 0.5 * (2 + 0.9*2 - 1)   = 1.4          v_1 = 1 + 1.4 = 2.4
    delta_0 = 1 * (1 + 0.9*1 - 0.5)   = 1.4
    v_0 - V_0 = 1.4 + 0.9 * 1 * 1.4   = 2.66         v_0 = 3.16
    A_0 = 1 * (1 + 0.9*2.4 - 0.5)     = 2.66
    A_1 = 0.5 * (2 + 0.9*2 - 1)       = 1.4
'none' with lambda = 0.5 (c = 0.5):
    v_1 = 3.8 (the last step has nothing to trace);  v_0 = 0.5 + 1.4 + 0.9*0.5*2.8 = 3.16
    A_0 = 1 + 0.9*3.8 - 0.5 = 3.92,  A_1 = 2.8
"""

import math

import pytest
import torch

from impala_rl.core.corrections import (
    CORRECTIONS,
    EPSILON,
    compute_targets,
    epsilon_log_prob,
    policy_gradient_log_probs,
)
from impala_rl.core.vtrace import VTraceParams, VTraceReturns, from_importance_weights


def _case():
    column = lambda *x: torch.tensor(x, dtype=torch.float64).reshape(-1, 1)  # noqa: E731
    return dict(
        log_rhos=column(math.log(2.0), math.log(0.5)),
        discounts=column(0.9, 0.9),
        rewards=column(1.0, 2.0),
        values=column(0.5, 1.0),
        bootstrap_value=torch.tensor([2.0], dtype=torch.float64),
    )


@pytest.mark.parametrize(
    "correction, lambda_, clip_pg, vs, advantages",
    [
        ("none", 1.0, 1.0, [4.42, 3.8], [3.92, 2.8]),
        ("epsilon", 1.0, 1.0, [4.42, 3.8], [3.92, 2.8]),
        ("1step_is", 1.0, 1.0, [4.42, 3.8], [3.92, 1.4]),
        ("1step_is", 1.0, None, [4.42, 3.8], [7.84, 1.4]),
        ("vtrace", 1.0, 1.0, [3.16, 2.4], [2.66, 1.4]),
        ("none", 0.5, 1.0, [3.16, 3.8], [3.92, 2.8]),
    ],
)
def test_hand_computed_case(correction, lambda_, clip_pg, vs, advantages):
    result = compute_targets(correction, **_case(), vtrace=VTraceParams(pg_rho=clip_pg, lambda_=lambda_))
    assert isinstance(result, VTraceReturns)
    expected = lambda x: torch.tensor(x, dtype=torch.float64).reshape(-1, 1)  # noqa: E731
    torch.testing.assert_close(result.vs, expected(vs))
    torch.testing.assert_close(result.pg_advantages, expected(advantages))


def test_vtrace_params_default_to_the_papers_and_each_reaches_its_threshold():
    assert VTraceParams() == VTraceParams(rho=1.0, c=1.0, pg_rho=1.0, lambda_=1.0)
    for result, expected in (
        (compute_targets("vtrace", **_case()), from_importance_weights(**_case())),
        (compute_targets("vtrace", **_case(), vtrace=VTraceParams(rho=0.7, c=None, pg_rho=1.5, lambda_=0.6)),
         from_importance_weights(**_case(), clip_rho_threshold=0.7, clip_c_threshold=None,
                                 clip_pg_rho_threshold=1.5, lambda_=0.6)),
    ):
        for actual, wanted in zip(result, expected, strict=True):
            assert torch.equal(actual, wanted)


@pytest.mark.parametrize("correction", ["none", "1step_is", "epsilon"])
def test_value_clip_thresholds_only_affect_vtrace(correction):
    default = compute_targets(correction, **_case())
    clipped = compute_targets(correction, **_case(), vtrace=VTraceParams(rho=0.1, c=0.1))
    torch.testing.assert_close(default.vs, clipped.vs)
    torch.testing.assert_close(default.pg_advantages, clipped.pg_advantages)


@pytest.mark.parametrize("correction, weights", [("none", [1.0, 1.0]), ("epsilon", [1.0, 1.0]),
                                                 ("1step_is", [0.1, 0.1]), ("vtrace", [0.1, 0.1])])
def test_policy_gradient_clip_applies_to_vtrace_and_1step_is(correction, weights):
    """``VTraceParams.pg_rho`` clips the policy gradient's weight (IS weights [2, 0.5])."""
    result = compute_targets(correction, **_case(), vtrace=VTraceParams(pg_rho=0.1))
    torch.testing.assert_close(result.pg_rhos, torch.tensor(weights, dtype=torch.float64).reshape(-1, 1))
    torch.testing.assert_close(result.pg_advantages, result.pg_rhos * result.advantages)


@pytest.mark.parametrize("correction", ["vtrace", "1step_is"])
def test_a_step_with_zero_importance_weight_has_zero_policy_gradient_weight(correction):
    case = _case()
    case["log_rhos"] = torch.tensor([[-math.inf], [math.log(0.5)]], dtype=torch.float64)
    result = compute_targets(correction, **case)
    assert result.pg_rhos[0, 0] == 0 and result.pg_advantages[0, 0] == 0
    assert torch.isfinite(result.advantages).all() and torch.isfinite(result.vs).all()


def test_targets_have_no_gradient():
    case = {k: v.clone().requires_grad_(True) for k, v in _case().items()}
    for correction in CORRECTIONS:
        result = compute_targets(correction, **case)
        assert not result.vs.requires_grad and not result.pg_advantages.requires_grad


def test_epsilon_log_prob_value_and_gradient():
    log_probs = torch.tensor([math.log(0.25), -50.0, 0.0], dtype=torch.float64, requires_grad=True)
    adjusted = epsilon_log_prob(log_probs)
    expected = torch.log(torch.exp(log_probs.detach()) + EPSILON)
    torch.testing.assert_close(adjusted, expected)
    assert adjusted[1].item() == pytest.approx(math.log(EPSILON), abs=1e-12)
    (grad,) = torch.autograd.grad(adjusted.sum(), log_probs)
    p = log_probs.detach().exp()
    torch.testing.assert_close(grad, p / (p + EPSILON))  # d/dlogp log(p + eps)


def test_policy_gradient_log_probs_only_changes_epsilon():
    log_probs = torch.tensor([[math.log(0.25)], [-30.0]], dtype=torch.float64)
    for correction in CORRECTIONS:
        out = policy_gradient_log_probs(correction, log_probs)
        if correction == "epsilon":
            torch.testing.assert_close(out, epsilon_log_prob(log_probs))
        else:
            assert out is log_probs


def test_unknown_correction_lists_accepted_names():
    with pytest.raises(ValueError, match="'vtrace', '1step_is', 'epsilon', 'none'"):
        compute_targets("retrace", **_case())
    with pytest.raises(ValueError, match="'vtrace', '1step_is', 'epsilon', 'none'"):
        policy_gradient_log_probs("v-trace", torch.zeros(2, 1))
