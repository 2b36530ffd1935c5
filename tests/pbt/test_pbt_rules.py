"""PBT's rules against hand cases, with fixed seeds."""

import random

import pytest

from impala_rl.pbt.rules import Rules, explore, exploit_source, is_ready, sufficiently_better


def test_ready_after_the_ready_interval():
    rules = Rules(ready_episodes=5000)
    assert not is_ready(4999, 10**9, rules) and is_ready(5000, 0, rules) and is_ready(7000, 0, rules)


def test_a_frames_interval_is_required_as_well_as_the_episodes():
    rules = Rules(ready_episodes=50, ready_frames=20_000)
    assert not is_ready(50, 19_999, rules)  # enough episodes, too few frames
    assert not is_ready(49, 10**6, rules)  # enough frames, too few episodes
    assert is_ready(50, 20_000, rules)
    with pytest.raises(ValueError, match="ready_frames"):
        Rules(ready_frames=-1)


@pytest.mark.parametrize("other,own,better", [
    (105.0, 100.0, True), (104.9, 100.0, False),  # 5% of 100
    (-95.0, -100.0, True), (-95.1, -100.0, False),  # 5% of |-100|: -100 + 5
    (0.1, 0.0, True), (0.0, 0.0, False),  # from zero: any strict improvement
    (99.0, 100.0, False),
])
def test_five_percent_better(other, own, better):
    assert sufficiently_better(other, own, 0.05) is better


def test_exploit_draws_one_other_member_and_copies_it_only_if_it_is_better():
    rules = Rules()
    fitness = {"a": 10.0, "b": 10.4, "c": 20.0}
    picks = [exploit_source("a", fitness, rules, random.Random(seed)) for seed in range(200)]
    assert set(picks) == {None, "c"}  # b is drawn too, but is only 4% better
    assert 70 < picks.count("c") < 130  # c is drawn about half of the time
    assert exploit_source("c", fitness, rules, random.Random(0)) is None  # nobody beats the best
    assert exploit_source("a", {"a": 1.0}, rules, random.Random(0)) is None


def test_explore_multiplies_by_1_2_or_its_inverse_with_probability_one_third_within_bounds():
    rules = Rules()
    start = {"learning_rate": 1e-3, "entropy_cost": 0.01, "rmsprop_epsilon": 0.01, "grad_norm_clip": 40.0,
             "batch_size": 32}
    changed = {name: 0 for name in rules.bounds}
    rng = random.Random(0)
    for _ in range(3000):
        new = explore(start, rules, rng)
        assert new["batch_size"] == 32  # not a mutable hyperparameter
        for name in rules.bounds:
            ratio = new[name] / start[name]
            assert ratio == pytest.approx(1.0) or ratio == pytest.approx(1.2) or ratio == pytest.approx(1 / 1.2)
            changed[name] += ratio != pytest.approx(1.0)
    for name, n in changed.items():
        assert 900 < n < 1100, (name, n)  # 1/3 of 3000
    tight = Rules(bounds={"learning_rate": (1e-3, 1.1e-3)}, probability=1.0)
    values = {explore({"learning_rate": 1e-3}, tight, random.Random(s))["learning_rate"] for s in range(50)}
    assert values == {1e-3, 1.1e-3}  # x1/1.2 clipped up to the lower bound, x1.2 down to the upper


def test_explore_is_deterministic_for_a_seed():
    h = {"learning_rate": 1e-3, "entropy_cost": 0.01}
    assert explore(h, Rules(), random.Random(7)) == explore(h, Rules(), random.Random(7))


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="probability"):
        Rules(probability=1.5)
    with pytest.raises(ValueError, match="bounds of learning_rate"):
        Rules(bounds={"learning_rate": (0.0, 1.0)})
