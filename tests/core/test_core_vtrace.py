"""V-trace against the paper's literal definition, plus property tests."""

import math

import pytest
import torch

import impala_rl.core.vtrace as core_vtrace
from impala_rl.core import distributions as D
from impala_rl.core.vtrace import VTraceReturns, from_importance_weights


def _clip(x, threshold):
    return x if threshold is None else min(x, threshold)


def _ground_truth(log_rhos, discounts, rewards, values, bootstrap_value,
                  rho_bar, c_bar, pg_rho_bar, lambda_):
    """Literal paper definition, one scalar at a time (slow, obviously correct):

    v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t,
    delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)),
    A_s = rho_pg_s (r_s + gamma_s v_{s+1} - V(x_s)), v_T = V(x_T).
    """
    T, B = log_rhos.shape
    lr, d, r, v, bv = (x.tolist() for x in (log_rhos, discounts, rewards, values, bootstrap_value))
    vs = [[0.0] * B for _ in range(T)]
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        value = [v[t][b] for t in range(T)] + [bv[b]]
        rho = [math.exp(lr[t][b]) for t in range(T)]
        for s in range(T):
            total = value[s]
            for t in range(s, T):
                coefficient = 1.0
                for i in range(s, t):
                    coefficient *= d[i][b] * lambda_ * _clip(rho[i], c_bar)
                delta = _clip(rho[t], rho_bar) * (r[t][b] + d[t][b] * value[t + 1] - value[t])
                total += coefficient * delta
            vs[s][b] = total
        vs_next = [vs[t][b] for t in range(1, T)] + [bv[b]]
        for s in range(T):
            adv[s][b] = _clip(rho[s], pg_rho_bar) * (r[s][b] + d[s][b] * vs_next[s] - value[s])
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return as_tensor(vs), as_tensor(adv)


def _batch(T, B, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # rhos from ~0.05 to ~20: both sides of every threshold used below.
    log_rhos = torch.empty(T, B, dtype=dtype).uniform_(-3.0, 3.0, generator=g)
    discounts = torch.full((T, B), 0.9, dtype=dtype)
    episode_end = torch.rand(T, B, generator=g) < 0.2
    if T > 2:
        episode_end[T // 2, 0] = True  # at least one episode ends inside the unroll
    discounts[episode_end] = 0.0
    rewards = torch.randn(T, B, generator=g, dtype=dtype)
    values = torch.randn(T, B, generator=g, dtype=dtype)
    bootstrap_value = torch.randn(B, generator=g, dtype=dtype)
    return dict(log_rhos=log_rhos, discounts=discounts, rewards=rewards, values=values,
                bootstrap_value=bootstrap_value)


# (clip_rho_threshold, clip_c_threshold, clip_pg_rho_threshold, lambda_)
SETTINGS = [
    (1.0, 1.0, 1.0, 1.0),  # the paper's defaults
    (None, None, None, 1.0),  # every threshold off
    (2.0, 0.7, 1.5, 1.0),  # c_bar != rho_bar
    (1.0, 1.0, 1.0, 0.8),  # lambda < 1
    (3.7, None, 0.5, 0.9),
]


@pytest.mark.parametrize("T", [1, 5, 20])
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("settings", SETTINGS)
def test_matches_literal_definition(T, B, settings):
    rho_bar, c_bar, pg_rho_bar, lambda_ = settings
    batch = _batch(T, B, seed=T * 10 + B)
    result = from_importance_weights(
        **batch, clip_rho_threshold=rho_bar, clip_c_threshold=c_bar,
        clip_pg_rho_threshold=pg_rho_bar, lambda_=lambda_,
    )
    expected_vs, expected_adv = _ground_truth(**batch, rho_bar=rho_bar, c_bar=c_bar,
                                              pg_rho_bar=pg_rho_bar, lambda_=lambda_)
    assert isinstance(result, VTraceReturns)
    assert result.vs.dtype == torch.float64 and result.vs.shape == (T, B)
    torch.testing.assert_close(result.vs, expected_vs, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.pg_advantages, expected_adv, rtol=0, atol=1e-6)


def test_test_data_straddles_every_threshold():
    rhos = _batch(20, 4, seed=204)["log_rhos"].exp()
    for threshold in (0.5, 0.7, 1.0, 1.5, 2.0, 3.7):
        assert (rhos < threshold).any() and (rhos > threshold).any()


def test_float32_keeps_dtype_and_agrees_with_float64():
    batch64 = _batch(20, 4, seed=3)
    batch32 = {k: v.float() for k, v in batch64.items()}
    result32 = from_importance_weights(**batch32, clip_c_threshold=0.7)
    result64 = from_importance_weights(**batch64, clip_c_threshold=0.7)
    assert result32.vs.dtype == torch.float32 and result32.pg_advantages.dtype == torch.float32
    torch.testing.assert_close(result32.vs.double(), result64.vs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result32.pg_advantages.double(), result64.pg_advantages,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lambda_", [1.0, 0.7])
def test_trace_split_at_zero_discount_equals_two_halves(lambda_):
    batch = _batch(10, 3, seed=7)
    batch["discounts"][4] = 0.0  # every episode ends at step 4
    full = from_importance_weights(**batch, clip_rho_threshold=2.0, lambda_=lambda_)

    first = {k: v[:5] for k, v in batch.items() if k != "bootstrap_value"}
    # The first half bootstraps from anything: its last discount is 0.
    anything = torch.full((3,), 1e3, dtype=torch.float64)
    first_half = from_importance_weights(**first, bootstrap_value=anything,
                                         clip_rho_threshold=2.0, lambda_=lambda_)
    second = {k: v[5:] for k, v in batch.items() if k != "bootstrap_value"}
    second_half = from_importance_weights(**second, bootstrap_value=batch["bootstrap_value"],
                                          clip_rho_threshold=2.0, lambda_=lambda_)
    torch.testing.assert_close(full.vs, torch.cat([first_half.vs, second_half.vs]))
    torch.testing.assert_close(full.pg_advantages,
                               torch.cat([first_half.pg_advantages, second_half.pg_advantages]))


@pytest.mark.parametrize("thresholds", [(1.0, 1.0, 1.0), (2.0, 1.5, 3.0), (None, None, None)])
def test_on_policy_equals_n_step_return(thresholds):
    batch = _batch(8, 3, seed=11)
    batch["log_rhos"] = torch.zeros_like(batch["log_rhos"])
    rho_bar, c_bar, pg_rho_bar = thresholds
    result = from_importance_weights(**batch, clip_rho_threshold=rho_bar, clip_c_threshold=c_bar,
                                     clip_pg_rho_threshold=pg_rho_bar)
    # n-step bootstrapped return:
    # G_s = sum_{t>=s} (prod_{s<=i<t} gamma_i) r_t + (prod_{s<=i<T} gamma_i) V(x_T).
    d, r = batch["discounts"], batch["rewards"]
    expected = torch.zeros_like(r)
    for s in range(8):
        g, discount = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        for t in range(s, 8):
            g = g + discount * r[t]
            discount = discount * d[t]
        expected[s] = g + discount * batch["bootstrap_value"]
    torch.testing.assert_close(result.vs, expected)
    next_vs = torch.cat([expected[1:], batch["bootstrap_value"][None]])
    torch.testing.assert_close(result.pg_advantages, r + d * next_vs - batch["values"])


def test_targets_before_episode_end_ignore_values_after_it():
    batch = _batch(10, 2, seed=5)
    batch["discounts"][3, 1] = 0.0  # episode in column 1 ends at step 3
    base = from_importance_weights(**batch, clip_rho_threshold=None, clip_c_threshold=None)
    perturbed = dict(batch)
    perturbed["values"] = batch["values"].clone()
    perturbed["values"][4:, 1] += 100.0
    perturbed["bootstrap_value"] = batch["bootstrap_value"] + 100.0
    other = from_importance_weights(**perturbed, clip_rho_threshold=None, clip_c_threshold=None)
    torch.testing.assert_close(other.vs[:4, 1], base.vs[:4, 1])
    torch.testing.assert_close(other.pg_advantages[:4, 1], base.pg_advantages[:4, 1])


def test_no_gradient_flows_into_targets():
    batch = {k: v.clone().requires_grad_(True) for k, v in _batch(5, 2).items()}
    result = from_importance_weights(**batch)
    assert not result.vs.requires_grad and not result.pg_advantages.requires_grad


def test_both_import_paths():
    import impala_rl.vtrace as short_path

    assert short_path.from_importance_weights is core_vtrace.from_importance_weights
    assert short_path.VTraceReturns is VTraceReturns
    assert set(short_path.__all__) == set(core_vtrace.__all__)
    for name in core_vtrace.__all__:
        assert getattr(short_path, name) is getattr(core_vtrace, name)


@pytest.mark.parametrize("policy_type", D.POLICY_TYPES)
def test_targets_from_policy_log_probs_match_the_definition_on_torch_distributions(policy_type):
    """V-trace from ``log pi(a) - log mu(a)`` of packed policy parameters, taken as the loss
    takes them (:mod:`impala_rl.core.distributions`), equals the literal definition on
    torch.distributions' log-probabilities; the targets carry no gradient."""
    T, B, A = 6, 3, 2
    g = torch.Generator().manual_seed(1)
    P = D.num_params(policy_type, A)
    behaviour = 0.5 * torch.randn(T, B, P, generator=g, dtype=torch.float64)
    target = (0.5 * torch.randn(T, B, P, generator=g, dtype=torch.float64)).requires_grad_(True)
    if policy_type == "categorical":
        actions = torch.randint(0, A, (T, B), generator=g)
        dist = lambda params: torch.distributions.Categorical(logits=params)  # noqa: E731
    else:
        actions = torch.randn(T, B, A, generator=g, dtype=torch.float64)
        dist = lambda params: torch.distributions.Independent(  # noqa: E731
            torch.distributions.Normal(params[..., :A], params[..., A:].exp()), 1)
    log_rhos = D.log_prob(policy_type, target, actions) - D.log_prob(policy_type, behaviour, actions)
    reference = (dist(target).log_prob(actions) - dist(behaviour).log_prob(actions)).detach()
    torch.testing.assert_close(log_rhos.detach(), reference)

    common = {k: v for k, v in _batch(T, B, seed=1).items() if k != "log_rhos"}
    result = from_importance_weights(log_rhos, **common, clip_c_threshold=0.9)
    expected_vs, expected_adv = _ground_truth(reference, **common, rho_bar=1.0, c_bar=0.9,
                                              pg_rho_bar=1.0, lambda_=1.0)
    torch.testing.assert_close(result.vs, expected_vs, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.pg_advantages, expected_adv, rtol=0, atol=1e-6)
    assert log_rhos.requires_grad and not result.vs.requires_grad and not result.pg_advantages.requires_grad


def test_shape_errors_name_the_shapes():
    batch = _batch(5, 3)
    bad = dict(batch, rewards=torch.zeros(5, 2, dtype=torch.float64))
    expected = (r"rewards has shape \(5, 2\) but log_rhos has shape \(5, 3\); "
                r"expected all of \[T, B\]")
    with pytest.raises(ValueError, match=expected):
        from_importance_weights(**bad)
    bad = dict(batch, bootstrap_value=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"bootstrap_value has shape \(5,\).*\(5, 3\)"):
        from_importance_weights(**bad)
    bad = dict(batch, log_rhos=torch.zeros(5, 3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"log_rhos has shape \(5, 3, 1\)"):
        from_importance_weights(**bad)
    with pytest.raises(ValueError, match="lambda_"):
        from_importance_weights(**batch, lambda_=1.5)

