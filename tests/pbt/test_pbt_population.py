"""The controller: decisions from the seed's rules, the event log, population.json and resume, fitness."""

import json

import pytest

from impala_rl.pbt.population import Population, Window
from impala_rl.pbt.rules import Rules
from impala_rl.runfiles import read_events

HP = {"learning_rate": 1e-3, "entropy_cost": 0.01}
RULES = Rules(ready_episodes=10, bounds={"learning_rate": (1e-6, 1e-1), "entropy_cost": (1e-5, 1.0)})


def population(tmp_path, n=2, rules=RULES, seed=0):
    return Population({f"m{i}": dict(HP, learning_rate=1e-3 * (i + 1)) for i in range(n)}, rules, seed=seed,
                      out_dir=tmp_path)


def test_first_ready_member_has_no_one_to_copy(tmp_path):
    pop = population(tmp_path)
    d = pop.ready("m0", 10.0, 1000, "ckpt0", {**HP, "learning_rate": 1e-3})
    assert d.source is None and d.checkpoint is None
    assert [e["event"] for e in read_events(tmp_path)][0] == "ready"


def test_copies_a_member_at_least_five_percent_better_with_its_checkpoint_and_hyperparameters(tmp_path):
    rules = Rules(ready_episodes=10, probability=0.0, bounds=dict(RULES.bounds))  # no explore: see the copy
    pop = population(tmp_path, rules=rules)
    pop.ready("m1", 105.0, 1000, "ckpt1", {"learning_rate": 2e-3, "entropy_cost": 0.02})
    d = pop.ready("m0", 100.0, 1000, "ckpt0", {"learning_rate": 1e-3, "entropy_cost": 0.01})
    assert d.source == "m1" and d.checkpoint == "ckpt1"
    assert d.hparams == {"learning_rate": 2e-3, "entropy_cost": 0.02}
    exploit = [e for e in read_events(tmp_path) if e["event"] == "exploit"][0]
    assert exploit["member"] == "m0" and exploit["source"] == "m1"
    assert exploit["old"]["learning_rate"] == 1e-3 and exploit["new"]["learning_rate"] == 2e-3
    assert pop.members["m0"].parent == "m1"


def test_does_not_copy_a_member_less_than_five_percent_better(tmp_path):
    pop = population(tmp_path, rules=Rules(ready_episodes=10, probability=0.0, bounds=dict(RULES.bounds)))
    pop.ready("m1", 104.9, 1000, "ckpt1", HP)
    assert pop.ready("m0", 100.0, 1000, "ckpt0", HP).source is None


def test_explore_after_exploit_perturbs_the_copied_values_by_the_factors(tmp_path):
    rules = Rules(ready_episodes=10, probability=1.0, bounds=dict(RULES.bounds))
    pop = population(tmp_path, rules=rules)
    pop.ready("m1", 200.0, 1000, "ckpt1", {"learning_rate": 2e-3, "entropy_cost": 0.02})
    copied = dict(pop.members["m1"].hparams)  # what m1 trains with now (it explored too)
    d = pop.ready("m0", 100.0, 1000, "ckpt0", {"learning_rate": 1e-3, "entropy_cost": 0.01})
    assert d.source == "m1"
    for name, base in copied.items():
        assert d.hparams[name] / base == pytest.approx(1.2) or d.hparams[name] / base == pytest.approx(1 / 1.2)
    explore = [e for e in read_events(tmp_path) if e["event"] == "explore" and e["member"] == "m0"][0]
    assert explore["changed"]["learning_rate"] == [copied["learning_rate"], d.hparams["learning_rate"]]


def test_population_json_resumes_the_same_decisions(tmp_path):
    """Saved after every event; a loaded population (resume) continues with the same state and
    random stream as the one that was not interrupted."""
    a = population(tmp_path / "a", n=3, seed=7)
    for name, f in (("m0", 1.0), ("m1", 5.0), ("m2", 9.0)):
        a.ready(name, f, 100, f"ckpt-{name}", a.members[name].hparams)
    b = Population.load(tmp_path / "a")
    b.out_dir = tmp_path / "b"
    b.out_dir.mkdir()
    for step in range(6):
        name = f"m{step % 3}"
        da = a.ready(name, float(step), 200 + step, f"x{step}", a.members[name].hparams)
        db = b.ready(name, float(step), 200 + step, f"x{step}", b.members[name].hparams)
        assert (da.source, da.hparams, da.checkpoint) == (db.source, db.hparams, db.checkpoint)
    assert json.loads((tmp_path / "a" / "population.json").read_text())["members"] == \
        json.loads((tmp_path / "b" / "population.json").read_text())["members"]


def test_load_refuses_a_directory_without_a_population(tmp_path):
    with pytest.raises(FileNotFoundError, match="population.json"):
        Population.load(tmp_path)
    (tmp_path / "population.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a population"):
        Population.load(tmp_path)


def test_a_population_needs_two_members():
    with pytest.raises(ValueError, match="at least 2"):
        Population({"m0": HP}, RULES)


def test_fitness_is_the_mean_return_or_the_capped_human_normalised_score():
    w = Window(("CartPole-v1",))
    for r in (10.0, 20.0, 30.0):
        w.add(0, r)
    assert len(w) == 3 and w.fitness() == pytest.approx(20.0)
    # Pong: random -20.7, human 14.6. A mean of 21 is 118% (capped at 100); a mean of -20.7 is 0%.
    atari = Window(("ALE/Pong-v5", "ALE/Pong-v5"))
    atari.add(0, 21.0)
    atari.add(1, -20.7)
    assert atari.fitness() == pytest.approx(50.0)
    atari.clear()
    assert len(atari) == 0


def test_a_limited_window_keeps_only_the_last_episodes():
    w = Window(("CartPole-v1",), limit=2)
    for r in (10.0, 20.0, 30.0, 50.0):
        w.add(0, r)
    assert len(w) == 2 and w.fitness() == pytest.approx(40.0)
