"""Q-learning maths for Rainbow: hand-computed cases for every function, plus properties."""

import math

import pytest
import torch

from impala_rl.core.qlearning import (
    ape_x_epsilons,
    categorical_projection,
    categorical_q_loss,
    double_q_values,
    greedy_actions,
    huber,
    importance_weights,
    n_step_returns,
    q_learning_td,
)

SUPPORT3 = torch.tensor([-1.0, 0.0, 1.0])


def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------- categorical_projection


def test_projection_hand_case_splits_mass_between_neighbours():
    # Atoms 0.5 + 0.5 * [-1, 0, 1] = [0, 0.5, 1]:
    #   0.2 at 0   -> all on z=0
    #   0.3 at 0.5 -> 0.15 on z=0, 0.15 on z=1
    #   0.5 at 1   -> all on z=1 (v_max, integral position K-1)
    out = categorical_projection(_t([[0.2, 0.3, 0.5]]), _t([0.5]), _t([0.5]), SUPPORT3)
    torch.testing.assert_close(out, _t([[0.0, 0.35, 0.65]]))


def test_projection_second_hand_case_with_quarter_offsets():
    # Atoms -0.25 + 1.0 * [-1, 0, 1] = [-1.25, -0.25, 0.75]:
    #   0.5 at -1.25 -> clamped to -1: all on z=-1
    #   0.25 at -0.25 -> 0.25 * 0.25 on z=-1, 0.25 * 0.75 on z=0
    #   0.25 at 0.75 -> 0.25 * 0.25 on z=0, 0.25 * 0.75 on z=1
    out = categorical_projection(_t([[0.5, 0.25, 0.25]]), _t([-0.25]), _t([1.0]), SUPPORT3)
    expected = _t([[0.5 + 0.0625, 0.1875 + 0.0625, 0.1875]])
    torch.testing.assert_close(out, expected)


def test_projection_identity_when_atoms_land_on_the_support():
    # Return 0, discount 1: every atom on its own support point (integral positions).
    probs = _t([[0.1, 0.6, 0.3], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = categorical_projection(probs, torch.zeros(3), torch.ones(3), SUPPORT3)
    torch.testing.assert_close(out, probs, rtol=0, atol=0)
    # Integral shift: return 1 on a 5-atom support of spacing 0.5 moves mass 2 atoms up.
    support = torch.linspace(-1.0, 1.0, 5)
    probs = _t([[0.1, 0.2, 0.3, 0.25, 0.15]])
    out = categorical_projection(probs, _t([1.0]), _t([1.0]), support)
    torch.testing.assert_close(out, _t([[0.0, 0.0, 0.1, 0.2, 0.7]]))
    assert not torch.isnan(out).any()


def test_projection_terminal_is_a_point_mass_at_the_return():
    probs = _t([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    out = categorical_projection(probs, _t([0.0, 0.5]), _t([0.0, 0.0]), SUPPORT3)
    torch.testing.assert_close(out, _t([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]]))


def test_projection_clamps_beyond_v_max_and_below_v_min():
    probs = _t([[0.2, 0.3, 0.5]] * 3)
    out = categorical_projection(probs, _t([5.0, -5.0, 1.5]), _t([0.9, 0.9, 1.0]), SUPPORT3)
    # Row 0: all atoms >= 4.1 -> v_max. Row 1: all <= -4.1 -> v_min.
    # Row 2: atoms [0.5, 1.5, 2.5] -> 0.2 split 0.1/0.1 on z=0/z=1, the rest clamped to z=1.
    torch.testing.assert_close(out, _t([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.1, 0.9]]))


def test_projection_conserves_mass_and_mean_inside_the_support():
    g = torch.Generator().manual_seed(0)
    support = torch.linspace(-10.0, 10.0, 51)
    probs = torch.softmax(torch.randn(64, 51, generator=g), dim=1)
    returns = torch.empty(64).uniform_(-15.0, 15.0, generator=g)
    discounts = torch.empty(64).uniform_(0.0, 1.0, generator=g)
    discounts[:8] = 0.0
    discounts[8:16] = 1.0
    returns[16:24] = returns[16:24].round()  # many integral positions
    out = categorical_projection(probs, returns, discounts, support)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(1), torch.ones(64))
    # The linear split preserves the mean of the clamped atoms.
    atoms = (returns[:, None] + discounts[:, None] * support).clamp(-10.0, 10.0)
    torch.testing.assert_close((out * support).sum(1), (probs * atoms).sum(1), atol=1e-4, rtol=0)


def test_projection_float64_and_shape_checks():
    out = categorical_projection(
        _t([[0.2, 0.3, 0.5]], torch.float64), _t([0.5], torch.float64),
        _t([0.5], torch.float64), SUPPORT3.double())
    assert out.dtype == torch.float64
    with pytest.raises(ValueError, match="next_probs"):
        categorical_projection(torch.ones(3), _t([0.0]), _t([0.0]), SUPPORT3)
    with pytest.raises(ValueError, match=r"K = 3"):
        categorical_projection(torch.ones(1, 4) / 4, _t([0.0]), _t([0.0]), SUPPORT3)
    with pytest.raises(ValueError, match="returns"):
        categorical_projection(torch.ones(2, 3) / 3, _t([0.0]), _t([0.0, 0.0]), SUPPORT3)
    with pytest.raises(ValueError, match="evenly spaced"):
        categorical_projection(torch.ones(1, 3) / 3, _t([0.0]), _t([0.0]), _t([-1.0, 0.0, 2.0]))


# ---------------------------------------------------------------- n_step_returns


def test_n_step_returns_without_terminal_bootstraps_with_gamma_to_the_n():
    terminals = torch.zeros(1, 3, dtype=torch.bool)
    returns, discounts = n_step_returns(_t([[1.0, 2.0, 3.0]]), terminals, 0.5)
    torch.testing.assert_close(returns, _t([1.0 + 0.5 * 2.0 + 0.25 * 3.0]))  # 2.75
    torch.testing.assert_close(discounts, _t([0.125]))


def test_n_step_returns_toy_chain_with_termination_and_truncation():
    gamma = 0.9
    rewards = _t([
        [1.0, 1.0, 1.0, 1.0],   # no end
        [1.0, 2.0, 7.0, 7.0],   # terminated at step 1: the 7s belong to the next episode
        [0.0, 0.0, 0.0, 10.0],  # terminated at the last step
        [1.0, 5.5, -3.0, 4.0],  # truncated at step 1: 5.5 = r (1.0) + gamma * V(final obs) (5.0)
        [3.0, 0.0, 0.0, 0.0],   # terminated at step 0, and terminals after it too
    ])
    terminals = _t([
        [0, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 1],
        [0, 1, 0, 1],
        [1, 0, 1, 1],
    ])
    returns, discounts = n_step_returns(rewards, terminals, gamma)
    expected_returns = _t([
        1.0 + 0.9 + 0.81 + 0.729,
        1.0 + 0.9 * 2.0,
        0.729 * 10.0,
        1.0 + 0.9 * 5.5,
        3.0,
    ])
    torch.testing.assert_close(returns, expected_returns)
    torch.testing.assert_close(discounts, _t([0.9**4, 0.0, 0.0, 0.0, 0.0]))


def test_n_step_returns_ignore_rewards_after_the_terminal_even_nan():
    rewards = _t([[1.0, 2.0, math.nan, math.inf]])
    returns, discounts = n_step_returns(rewards, _t([[False, True, False, False]], torch.bool), 0.5)
    torch.testing.assert_close(returns, _t([2.0]))
    torch.testing.assert_close(discounts, _t([0.0]))


def test_n_step_returns_one_step_is_plain_td():
    rewards = _t([[1.5], [-2.0]])
    returns, discounts = n_step_returns(rewards, _t([[0], [1]]), 0.99)
    torch.testing.assert_close(returns, _t([1.5, -2.0]))
    torch.testing.assert_close(discounts, _t([0.99, 0.0]))


def test_n_step_returns_shape_checks():
    with pytest.raises(ValueError, match="rewards"):
        n_step_returns(torch.ones(3), torch.zeros(3), 0.9)
    with pytest.raises(ValueError, match="terminals"):
        n_step_returns(torch.ones(2, 3), torch.zeros(2, 2), 0.9)
    with pytest.raises(ValueError, match="discount"):
        n_step_returns(torch.ones(2, 3), torch.zeros(2, 3), 1.5)


# ---------------------------------------------------------------- double Q, greedy, TD, Huber


def test_double_q_values_use_the_online_argmax_and_dqn_the_target_max():
    q_target = _t([[1.0, 5.0, 3.0], [2.0, 0.0, -1.0]])
    q_online = _t([[0.0, 1.0, 9.0], [0.0, 4.0, 1.0]])
    torch.testing.assert_close(double_q_values(q_target, q_online), _t([3.0, 0.0]))
    torch.testing.assert_close(double_q_values(q_target, None), _t([5.0, 2.0]))
    with pytest.raises(ValueError, match="q_next_online"):
        double_q_values(q_target, q_online[:, :2])


def test_greedy_actions():
    actions = greedy_actions(_t([[0.0, 2.0, 1.0], [3.0, 3.0, -1.0]]))
    assert actions.tolist() == [1, 0]  # ties: lowest index
    assert actions.dtype == torch.int64
    with pytest.raises(ValueError, match="q"):
        greedy_actions(torch.tensor(1.0))


def test_q_learning_td_hand_case_and_gradient_only_into_q_t():
    q_t = _t([[1.0, 2.0], [0.5, -1.0]]).requires_grad_()
    next_values = _t([4.0, 3.0]).requires_grad_()
    td = q_learning_td(q_t, torch.tensor([1, 0]), _t([1.0, 2.0]), _t([0.5, 0.0]), next_values)
    # Row 0: 1 + 0.5 * 4 - 2 = 1. Row 1: 2 + 0 * 3 - 0.5 = 1.5.
    torch.testing.assert_close(td, _t([1.0, 1.5]))
    td.sum().backward()
    torch.testing.assert_close(q_t.grad, _t([[0.0, -1.0], [-1.0, 0.0]]))
    assert next_values.grad is None
    with pytest.raises(ValueError, match="actions"):
        q_learning_td(q_t, torch.tensor([1]), _t([1.0, 2.0]), _t([0.5, 0.0]), next_values)


def test_huber_hand_values_and_gradient():
    x = _t([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]).requires_grad_()
    loss = huber(x)
    torch.testing.assert_close(loss, _t([2.5, 0.5, 0.125, 0.0, 0.125, 0.5, 1.5]))
    loss.sum().backward()
    torch.testing.assert_close(x.grad, _t([-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(huber(_t([3.0, 1.0]), delta=2.0), _t([2.0 * (3.0 - 1.0), 0.5]))


# ---------------------------------------------------------------- categorical_q_loss


def _c51_case():
    next_probs_target = _t([[[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]])  # [1, 2, 3]
    logits_t = torch.log(_t([[[0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]]]))
    return logits_t, next_probs_target


def test_categorical_q_loss_hand_case():
    logits_t, next_probs_target = _c51_case()
    # a* = 1 (online-selected); its distribution [0.2, 0.3, 0.5] projects to [0, 0.35, 0.65]
    # (see test_projection_hand_case_splits_mass_between_neighbours). Taken action 0 has
    # probabilities [0.25, 0.25, 0.5].
    loss = categorical_q_loss(logits_t, torch.tensor([0]), _t([0.5]), _t([0.5]),
                              next_probs_target, _t([[0.0, 1.0]]), SUPPORT3)
    expected = -(0.35 * math.log(0.25) + 0.65 * math.log(0.5))
    torch.testing.assert_close(loss, _t([expected]))
    # Selecting a* = 0 instead ([1, 0, 0] -> atom at 0 -> point mass on z=0).
    loss = categorical_q_loss(logits_t, torch.tensor([0]), _t([0.5]), _t([0.5]),
                              next_probs_target, _t([[2.0, 1.0]]), SUPPORT3)
    torch.testing.assert_close(loss, _t([-math.log(0.25)]))
    # Terminal (discount 0) at return 1: point mass on z=1; taken action 1 is uniform.
    loss = categorical_q_loss(logits_t, torch.tensor([1]), _t([1.0]), _t([0.0]),
                              next_probs_target, _t([[0.0, 1.0]]), SUPPORT3)
    torch.testing.assert_close(loss, _t([math.log(3.0)]))


def test_categorical_q_loss_gradient_flows_only_into_logits_t():
    g = torch.Generator().manual_seed(1)
    batch, actions, atoms = 4, 3, 5
    support = torch.linspace(-2.0, 2.0, atoms)
    logits_t = torch.randn(batch, actions, atoms, generator=g).requires_grad_()
    next_logits = torch.randn(batch, actions, atoms, generator=g).requires_grad_()
    next_probs = torch.softmax(next_logits, dim=-1)
    next_q = (next_probs * support).sum(-1)
    returns = torch.randn(batch, generator=g).requires_grad_()
    discounts = torch.full((batch,), 0.9).requires_grad_()
    taken = torch.tensor([0, 1, 2, 1])
    loss = categorical_q_loss(logits_t, taken, returns, discounts, next_probs, next_q, support)
    assert loss.shape == (batch,)
    loss.sum().backward()
    assert logits_t.grad is not None
    # Only the taken action's logits receive gradient.
    untaken = torch.ones(batch, actions, dtype=torch.bool)
    untaken[torch.arange(batch), taken] = False
    assert (logits_t.grad[untaken] == 0).all()
    assert (logits_t.grad[~untaken].abs().sum(-1) > 0).all()
    assert next_logits.grad is None and returns.grad is None and discounts.grad is None


def test_categorical_q_loss_shape_checks():
    logits_t, next_probs_target = _c51_case()
    args = (torch.tensor([0]), _t([0.5]), _t([0.5]))
    with pytest.raises(ValueError, match="next_probs_target"):
        categorical_q_loss(logits_t, *args, next_probs_target[:, :1], _t([[0.0, 1.0]]), SUPPORT3)
    with pytest.raises(ValueError, match="next_q_select"):
        categorical_q_loss(logits_t, *args, next_probs_target, _t([0.0, 1.0]), SUPPORT3)
    with pytest.raises(ValueError, match="support"):
        categorical_q_loss(logits_t, *args, next_probs_target, _t([[0.0, 1.0]]), SUPPORT3[:2])
    with pytest.raises(ValueError, match="returns"):
        categorical_q_loss(logits_t, torch.tensor([0]), _t([0.5, 0.1]), _t([0.5]),
                           next_probs_target, _t([[0.0, 1.0]]), SUPPORT3)


# ---------------------------------------------------------------- Ape-X epsilons


def test_ape_x_epsilons_match_the_paper_figures_and_the_formula():
    eps = ape_x_epsilons(4)
    assert len(eps) == 4
    for got, paper in zip(eps, (0.4, 0.0472, 0.00556, 0.00066)):
        assert got == pytest.approx(paper, rel=1e-2)
    for i, got in enumerate(eps):
        assert got == pytest.approx(0.4 ** (1 + 7 * i / 3), rel=1e-12)
    assert eps[-1] == pytest.approx(0.4**8)
    assert ape_x_epsilons(1) == [0.4]
    assert ape_x_epsilons(2, base=0.5, alpha=1.0) == [0.5, 0.25]
    with pytest.raises(ValueError):
        ape_x_epsilons(0)


# ---------------------------------------------------------------- importance weights


def test_importance_weights_hand_case():
    # size 10, beta 0.5: (10 p)^-0.5 = [2^-0.5, 1, 0.5]; / max (1) -> unchanged; rarest gets 1.
    p = _t([0.2, 0.1, 0.4])
    torch.testing.assert_close(importance_weights(p, 10, 0.5), _t([2**-0.5, 1.0, 0.5]))
    # beta 1: w proportional to 1/p, normalised -> p_min / p.
    torch.testing.assert_close(importance_weights(p, 1000, 1.0), _t([0.5, 1.0, 0.25]))
    # beta 0: all ones.
    torch.testing.assert_close(importance_weights(p, 10, 0.0), torch.ones(3))


def test_importance_weights_checks():
    with pytest.raises(ValueError, match="probabilities"):
        importance_weights(torch.ones(2, 2), 10, 0.5)
    with pytest.raises(ValueError, match="positive"):
        importance_weights(_t([0.5, 0.0]), 10, 0.5)
