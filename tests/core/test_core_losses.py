"""Loss values and gradients against hand-derived formulas."""

import math

import pytest
import torch

from impala_rl.core import distributions as D
from impala_rl.core.corrections import EPSILON
from impala_rl.core.losses import LossConfig, baseline_loss, entropy_loss, impala_loss, policy_gradient_loss
from impala_rl.core.vtrace import VTraceParams, from_importance_weights

METRIC_KEYS = {
    "total_loss", "pg_loss", "baseline_loss", "entropy_loss", "entropy", "mean_rho",
    "rho_clipped_fraction", "rho_small_fraction", "mean_vs", "mean_advantage", "vs",
}
T, B, A = 5, 3, 4


def _batch(policy_type, seed=0):
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    P = D.num_params(policy_type, A)
    if policy_type == "categorical":
        actions = torch.randint(0, A, (T, B), generator=g)
    else:
        actions = randn(T, B, A)
    discounts = torch.full((T, B), 0.95, dtype=torch.float64)
    discounts[2, 1] = 0.0
    return dict(
        target_params=(0.5 * randn(T, B, P)).requires_grad_(True),
        values=randn(T, B).requires_grad_(True),
        bootstrap_value=randn(B).requires_grad_(True),
        behaviour_params=0.5 * randn(T, B, P),
        actions=actions,
        rewards=randn(T, B),
        discounts=discounts,
    )


def _reference_log_rhos(policy_type, batch):
    def dist(params):
        if policy_type == "categorical":
            return torch.distributions.Categorical(logits=params)
        mean, log_std = params.chunk(2, -1)
        return torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1)

    with torch.no_grad():
        return (dist(batch["target_params"]).log_prob(batch["actions"])
                - dist(batch["behaviour_params"]).log_prob(batch["actions"]))


def _reference_targets(policy_type, batch, **vtrace_kwargs):
    return from_importance_weights(
        _reference_log_rhos(policy_type, batch), batch["discounts"], batch["rewards"],
        batch["values"].detach(), batch["bootstrap_value"].detach(), **vtrace_kwargs,
    )


def _on_policy_targets(batch):
    """Targets of the corrections that ignore the behaviour policy (rho = c = 1)."""
    on_policy = dict(batch, behaviour_params=batch["target_params"])
    return _reference_targets("categorical", on_policy, clip_rho_threshold=None,
                              clip_c_threshold=None, clip_pg_rho_threshold=None)


def test_policy_gradient_loss_value_and_gradient():
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    advantages = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    loss = policy_gradient_loss(log_probs, advantages)
    assert loss.item() == pytest.approx(-(-1.0 + 4.0 - 0.25 - 9.0))
    loss.backward()
    torch.testing.assert_close(log_probs.grad, -advantages.detach())
    assert advantages.grad is None  # the advantages are constants


def test_baseline_loss_value_and_gradient():
    vs = torch.tensor([[1.0, 2.0]])
    values = torch.tensor([[0.0, 4.0]], requires_grad=True)
    loss = baseline_loss(vs, values)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 4.0))
    loss.backward()
    torch.testing.assert_close(values.grad, -(vs - values.detach()))


@pytest.mark.parametrize("policy_type", D.POLICY_TYPES)
def test_entropy_loss_is_minus_summed_entropy(policy_type):
    batch = _batch(policy_type)
    params = batch["target_params"]
    expected = -sum(
        D.entropy(policy_type, params[t, b]).item() for t in range(T) for b in range(B)
    )
    assert entropy_loss(policy_type, params).item() == pytest.approx(expected)


@pytest.mark.parametrize("correction", ["vtrace", "none"])
def test_categorical_impala_loss_value_and_gradient(correction):
    batch = _batch("categorical")
    baseline_cost, entropy_cost = 0.5, 0.01
    config = LossConfig(correction=correction, baseline_cost=baseline_cost, entropy_cost=entropy_cost,
                        vtrace=VTraceParams(c=0.9))
    loss, metrics = impala_loss(**batch, policy_type="categorical", config=config)
    if correction == "vtrace":
        targets = _reference_targets("categorical", batch, clip_c_threshold=0.9)
    else:
        targets = _on_policy_targets(batch)
    logits = batch["target_params"].detach()
    p, log_p = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
    one_hot = torch.nn.functional.one_hot(batch["actions"], A).double()
    H = -(p * log_p).sum(-1)
    adv, vs, values = targets.pg_advantages, targets.vs, batch["values"].detach()

    expected_pg = -((one_hot * log_p).sum(-1) * adv).sum()
    expected_bl = baseline_cost * 0.5 * ((vs - values) ** 2).sum()
    expected_ent = -entropy_cost * H.sum()
    torch.testing.assert_close(metrics["pg_loss"], expected_pg)
    torch.testing.assert_close(metrics["baseline_loss"], expected_bl)
    torch.testing.assert_close(metrics["entropy_loss"], expected_ent)
    torch.testing.assert_close(loss.detach(), expected_pg + expected_bl + expected_ent)

    loss.backward()
    # d pg / d logits = -adv (onehot - softmax);  d(-H)/d logits = p (log p + H).
    expected_logit_grad = (-adv[..., None] * (one_hot - p)
                           + entropy_cost * p * (log_p + H[..., None]))
    torch.testing.assert_close(batch["target_params"].grad, expected_logit_grad)
    torch.testing.assert_close(batch["values"].grad, -baseline_cost * (vs - values))
    assert batch["bootstrap_value"].grad is None  # bootstrap only enters the targets


def test_gaussian_impala_loss_value_and_gradient():
    batch = _batch("gaussian", seed=1)
    baseline_cost, entropy_cost = 0.25, 0.1
    config = LossConfig(correction="vtrace", baseline_cost=baseline_cost, entropy_cost=entropy_cost)
    loss, metrics = impala_loss(**batch, policy_type="gaussian", config=config)
    targets = _reference_targets("gaussian", batch)
    mean, log_std = batch["target_params"].detach().chunk(2, -1)
    std, a = log_std.exp(), batch["actions"]
    adv = targets.pg_advantages[..., None]

    entropy_per_step = (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1)
    torch.testing.assert_close(metrics["entropy"], entropy_per_step.mean())
    loss.backward()
    # log N(a; m, s) = -(a-m)^2/(2 s^2) - log s - ...:
    #   d/dm = (a-m)/s^2,  d/dlog s = (a-m)^2/s^2 - 1;  entropy = sum log s + const.
    expected_mean_grad = -adv * (a - mean) / std**2
    expected_log_std_grad = -adv * ((a - mean) ** 2 / std**2 - 1) - entropy_cost
    torch.testing.assert_close(batch["target_params"].grad,
                               torch.cat([expected_mean_grad, expected_log_std_grad], -1))
    torch.testing.assert_close(batch["values"].grad,
                               -baseline_cost * (targets.vs - batch["values"].detach()))


def test_metrics_on_a_known_case():
    # Target: uniform over 2 actions (pi = 0.5). Behaviour: mu = [0.25, 0.75].
    # Action 0 -> rho = 2 (clipped at 1), action 1 -> rho = 2/3.
    target = torch.zeros(2, 2, 2, dtype=torch.float64, requires_grad=True)
    behaviour = torch.log(torch.tensor([0.25, 0.75], dtype=torch.float64)).expand(2, 2, 2)
    actions = torch.tensor([[0, 1], [1, 1]])
    batch = dict(target_params=target, values=torch.zeros(2, 2, dtype=torch.float64),
                 bootstrap_value=torch.zeros(2, dtype=torch.float64), behaviour_params=behaviour,
                 actions=actions, rewards=torch.ones(2, 2, dtype=torch.float64),
                 discounts=torch.zeros(2, 2, dtype=torch.float64))
    loss, metrics = impala_loss(**batch, policy_type="categorical", config=LossConfig(correction="vtrace"))
    assert set(metrics) == METRIC_KEYS
    for key, value in metrics.items():
        assert not value.requires_grad, key
        assert value.shape == ((2, 2) if key == "vs" else ()), key
    assert metrics["rho_clipped_fraction"].item() == pytest.approx(0.25)
    assert metrics["rho_small_fraction"].item() == 0.0
    assert metrics["mean_rho"].item() == pytest.approx((2 + 3 * 2 / 3) / 4)
    assert metrics["entropy"].item() == pytest.approx(math.log(2))
    # discounts 0, values 0, reward 1: vs = clipped rho * 1 = [[1, 2/3], [2/3, 2/3]].
    torch.testing.assert_close(metrics["vs"], torch.tensor([[1, 2 / 3], [2 / 3, 2 / 3]],
                                                           dtype=torch.float64))
    assert metrics["mean_vs"].item() == pytest.approx(0.75)
    assert metrics["mean_advantage"].item() == pytest.approx(0.75)
    total = metrics["pg_loss"] + metrics["baseline_loss"] + metrics["entropy_loss"]
    torch.testing.assert_close(metrics["total_loss"], total)
    torch.testing.assert_close(loss.detach(), total)

    _, metrics = impala_loss(**batch, config=LossConfig(vtrace=VTraceParams(rho=None)))
    assert metrics["rho_clipped_fraction"].item() == 0.0
    _, metrics = impala_loss(**batch, config=LossConfig(vtrace=VTraceParams(rho=3.0)))
    assert metrics["rho_clipped_fraction"].item() == 0.0


def test_loss_config_defaults_are_the_papers():
    assert LossConfig() == LossConfig(correction="vtrace", baseline_cost=0.5, entropy_cost=0.01,
                                      vtrace=VTraceParams(rho=1.0, c=1.0, pg_rho=1.0, lambda_=1.0),
                                      normalize_advantages=False)


def test_epsilon_correction_changes_only_the_policy_gradient_log_probs():
    batch = _batch("categorical", seed=2)
    _, none = impala_loss(**batch, config=LossConfig(correction="none"))
    _, eps = impala_loss(**batch, config=LossConfig(correction="epsilon"))
    for key in METRIC_KEYS - {"pg_loss", "total_loss"}:
        torch.testing.assert_close(eps[key], none[key])
    targets = _on_policy_targets(batch)
    pi_a = D.log_prob("categorical", batch["target_params"], batch["actions"]).detach().exp()
    expected = -(torch.log(pi_a + EPSILON) * targets.pg_advantages).sum()
    torch.testing.assert_close(eps["pg_loss"], expected)


def test_losses_are_summed_over_time_and_batch():
    batch = _batch("categorical", seed=3)
    doubled = {}
    for key, value in batch.items():
        dim = 0 if key == "bootstrap_value" else 1
        doubled[key] = torch.cat([value.detach(), value.detach()], dim=dim)
    loss, _ = impala_loss(**batch)
    loss2, _ = impala_loss(**doubled)
    torch.testing.assert_close(loss2, 2 * loss.detach())


def test_popart_value_normalizer():
    batch = _batch("categorical", seed=4)
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(B, generator=g, dtype=torch.float64)
    sigma = torch.rand(B, generator=g, dtype=torch.float64) + 0.5
    baseline_cost = 0.5
    config = LossConfig(baseline_cost=baseline_cost)
    loss, metrics = impala_loss(**batch, config=config, value_normalizer=(mu, sigma))

    unnormalised = dict(batch, values=(sigma * batch["values"] + mu).detach(),
                        bootstrap_value=(sigma * batch["bootstrap_value"] + mu).detach())
    targets = _reference_targets("categorical", unnormalised)
    torch.testing.assert_close(metrics["vs"], targets.vs)  # unnormalised targets
    adv = targets.pg_advantages / sigma
    log_pi = D.log_prob("categorical", batch["target_params"], batch["actions"]).detach()
    torch.testing.assert_close(metrics["pg_loss"], -(log_pi * adv).sum())
    torch.testing.assert_close(metrics["mean_advantage"], adv.mean())
    normalised_vs = (targets.vs - mu) / sigma
    values = batch["values"].detach()
    torch.testing.assert_close(metrics["baseline_loss"],
                               baseline_cost * 0.5 * ((normalised_vs - values) ** 2).sum())
    loss.backward()
    torch.testing.assert_close(batch["values"].grad, -baseline_cost * (normalised_vs - values))

    # The identity normaliser changes nothing.
    plain_batch = _batch("categorical", seed=4)
    plain_loss, _ = impala_loss(**plain_batch)
    identity = (torch.zeros(B, dtype=torch.float64), torch.ones(B, dtype=torch.float64))
    identity_loss, _ = impala_loss(**plain_batch, value_normalizer=identity)
    torch.testing.assert_close(identity_loss, plain_loss)


def test_shape_errors_name_the_shapes():
    batch = _batch("categorical")
    with pytest.raises(ValueError, match=r"values has shape \(5, 2\).*\(5, 3, 4\)"):
        impala_loss(**dict(batch, values=torch.zeros(5, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"\(5, 3, 4\).*\(5, 3, 3\)"):
        impala_loss(**dict(batch, behaviour_params=torch.zeros(5, 3, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"rewards has shape \(4, 3\)"):
        impala_loss(**dict(batch, rewards=torch.zeros(4, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"\(5,\) and \(3,\)"):
        impala_loss(**batch, value_normalizer=(torch.zeros(5), torch.ones(3)))
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(5, 2\)"):
        policy_gradient_loss(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="'vtrace', '1step_is', 'epsilon', 'none'"):
        impala_loss(**batch, config=LossConfig(correction="bogus"))


def _unweighted_advantages(batch, targets):
    """``r_s + gamma_s v_{s+1} - V(x_s)`` (``v_T = V(x_T)``), from the literal definition."""
    next_vs = torch.cat([targets.vs[1:], batch["bootstrap_value"].detach()[None]])
    return batch["rewards"] + batch["discounts"] * next_vs - batch["values"].detach()


def test_normalized_advantages_standardise_the_unweighted_advantage_then_apply_the_weight():
    batch = _batch("categorical", seed=5)
    loss, metrics = impala_loss(**batch, config=LossConfig(normalize_advantages=True))
    targets = _reference_targets("categorical", batch)
    adv = _unweighted_advantages(batch, targets)
    standardised = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    weights = _reference_log_rhos("categorical", batch).exp().clamp(max=1.0)
    log_pi = D.log_prob("categorical", batch["target_params"], batch["actions"]).detach()
    torch.testing.assert_close(metrics["pg_loss"], -(log_pi * weights * standardised).sum())
    torch.testing.assert_close(metrics["mean_advantage"], (weights * standardised).mean())
    # Value targets and the baseline loss do not change.
    _, plain = impala_loss(**_batch("categorical", seed=5))
    torch.testing.assert_close(metrics["vs"], plain["vs"])
    torch.testing.assert_close(metrics["baseline_loss"], plain["baseline_loss"])
    # Scaling every reward and value by 10 leaves the normalised policy gradient unchanged.
    scaled = _batch("categorical", seed=5)
    for key in ("values", "bootstrap_value", "rewards"):
        scaled[key] = (10 * scaled[key].detach()).requires_grad_(key != "rewards")
    _, scaled_metrics = impala_loss(**scaled, config=LossConfig(normalize_advantages=True))
    torch.testing.assert_close(scaled_metrics["pg_loss"], metrics["pg_loss"])


@pytest.mark.parametrize("correction", ["vtrace", "1step_is", "none"])
def test_normalized_advantages_on_policy_equal_the_standardised_weighted_advantage(correction):
    """With rho = 1 everywhere, weighting before or after standardising is the same: the loss
    (value and gradient) equals the one that standardised the weighted advantage."""
    batch = _batch("categorical", seed=6)
    batch["behaviour_params"] = batch["target_params"].detach().clone()
    loss, metrics = impala_loss(**batch, config=LossConfig(correction=correction, normalize_advantages=True))
    adv = _reference_targets("categorical", batch).pg_advantages  # rho = 1: weighted = unweighted
    standardised = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    log_pi = D.log_prob("categorical", batch["target_params"], batch["actions"])
    reference = (-(log_pi * standardised).sum() + 0.5 * baseline_loss(metrics["vs"], batch["values"])
                 + 0.01 * entropy_loss("categorical", batch["target_params"]))
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    assert abs(float(metrics["mean_advantage"])) < 1e-9
    grad = torch.autograd.grad(loss, batch["target_params"])[0]
    ref_grad = torch.autograd.grad(reference, batch["target_params"])[0]
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("correction", ["vtrace", "1step_is"])
@pytest.mark.parametrize("normalize", [True, False])
def test_a_step_the_policy_would_not_take_adds_no_policy_gradient(correction, normalize):
    """Step (1, 2): pi(a) = exp(-1e4), so rho = 0 (log rho = -inf in floating point). Its
    policy-gradient weight is 0, and with standardised advantages too it contributes no
    gradient (before the fix it got -mean/std times a large grad log pi)."""
    batch = _batch("categorical", seed=7)
    target = batch["target_params"].detach().clone()
    action = int(batch["actions"][1, 2])
    target[1, 2, action] = -1e4
    batch["target_params"] = target.requires_grad_(True)
    assert _reference_log_rhos("categorical", batch)[1, 2].exp() == 0
    config = LossConfig(correction=correction, entropy_cost=0.0, normalize_advantages=normalize)
    loss, metrics = impala_loss(**batch, config=config)
    grad = torch.autograd.grad(loss, batch["target_params"])[0]
    assert torch.equal(grad[1, 2], torch.zeros_like(grad[1, 2]))
    assert grad.abs().sum() > 0  # the other steps do contribute
    assert metrics["rho_small_fraction"].item() >= 1 / (T * B)


def test_1step_is_clips_its_weight_at_clip_pg_rho_threshold():
    batch = _batch("categorical", seed=8)
    log_rhos = _reference_log_rhos("categorical", batch)
    assert log_rhos.exp().max() > 1  # some weights above the threshold
    targets = _on_policy_targets(batch)
    log_pi = D.log_prob("categorical", batch["target_params"], batch["actions"]).detach()
    for threshold in (1.0, 0.5, None):
        config = LossConfig(correction="1step_is", vtrace=VTraceParams(pg_rho=threshold))
        _, metrics = impala_loss(**batch, config=config)
        weights = log_rhos.exp() if threshold is None else log_rhos.exp().clamp(max=threshold)
        torch.testing.assert_close(metrics["pg_loss"], -(log_pi * weights * targets.pg_advantages).sum())


def test_replayed_trajectories_get_their_own_rho_figures():
    # pi uniform over 2 actions; mu(a=0) = 0.25 -> rho 2, mu(a=1) = 0.75 -> rho 2/3,
    # and a column whose action pi gives exp(-30): rho ~ 2.5e-13 / 0.75 < 0.1.
    target = torch.zeros(2, 3, 2, dtype=torch.float64)
    target[:, 2, 1] = -30.0
    behaviour = torch.log(torch.tensor([0.25, 0.75], dtype=torch.float64)).expand(2, 3, 2)
    batch = dict(target_params=target, values=torch.zeros(2, 3, dtype=torch.float64),
                 bootstrap_value=torch.zeros(3, dtype=torch.float64), behaviour_params=behaviour,
                 actions=torch.tensor([[0, 1, 1], [0, 1, 1]]), rewards=torch.ones(2, 3, dtype=torch.float64),
                 discounts=torch.zeros(2, 3, dtype=torch.float64))
    _, metrics = impala_loss(**batch, replayed=torch.tensor([False, True, True]))
    rho_small = math.exp(-30) / (1 + math.exp(-30)) / 0.75
    assert metrics["replay_mean_rho"].item() == pytest.approx((2 / 3 + rho_small) / 2)
    assert metrics["replay_rho_clipped_fraction"].item() == 0.0
    assert metrics["replay_rho_small_fraction"].item() == 0.5
    assert metrics["rho_clipped_fraction"].item() == pytest.approx(1 / 3)
    assert metrics["rho_small_fraction"].item() == pytest.approx(1 / 3)
    _, fresh_only = impala_loss(**batch, replayed=torch.tensor([False, False, False]))
    assert not any(key.startswith("replay_") for key in fresh_only)


def test_standardize_handles_constant_input():
    from impala_rl.core.losses import standardize

    torch.testing.assert_close(standardize(torch.full((3, 2), 4.0)), torch.zeros(3, 2))
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    out = standardize(x)
    torch.testing.assert_close(out.mean(), torch.tensor(0.0))
    torch.testing.assert_close(out.std(unbiased=False), torch.tensor(1.0), atol=1e-6, rtol=0)
