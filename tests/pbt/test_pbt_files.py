"""A population directory read back: the summary and the plot read it through impala_rl.runfiles,
and neither the readers nor the plot need the pbt package."""

import ast
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from impala_rl.pbt.population import Population
from impala_rl.pbt.rules import Rules
from impala_rl.pbt.settings import PopulationConfig
from impala_rl.pbt.summary import summarize
from impala_rl.runfiles import is_population, member_dir, read_episodes, read_events, read_population

RULES = Rules(ready_episodes=10, bounds={"learning_rate": (1e-6, 1e-1), "entropy_cost": (1e-5, 1.0)})


def population_dir(tmp_path, returns: dict[str, list[float]]):
    """A population of two members that reported twice (m0 copies m1), with their episodes.csv."""
    start = {"m0": {"learning_rate": 1e-3, "entropy_cost": 0.01}, "m1": {"learning_rate": 2e-3, "entropy_cost": 0.01}}
    pop = Population(start, RULES, seed=0, out_dir=tmp_path, settings={"members": start})
    pop.ready("m1", 10.0, 100, "c1", start["m1"])
    pop.ready("m0", 1.0, 100, "c0", start["m0"])
    for name, rets in returns.items():
        run = member_dir(tmp_path, name)
        run.mkdir(parents=True)
        rows = "".join(f"{50 * (i + 1)},{r},10\n" for i, r in enumerate(rets))
        (run / "episodes.csv").write_text("frames,return,length\n" + rows)
    return pop


def test_summary_reads_each_members_episodes(tmp_path):
    pop = population_dir(tmp_path, {"m0": [1.0, 3.0], "m1": list(range(200))})
    cfgs = {name: SimpleNamespace(run_dir=str(member_dir(tmp_path, name))) for name in ("m0", "m1")}
    summary = summarize(pop, cfgs, PopulationConfig(pop_dir=str(tmp_path)), {"m0": {"stop_reason": "frames"}})
    assert summary["members"]["m0"]["final_100_episode_mean"] == 2.0
    assert summary["members"]["m1"]["final_100_episode_mean"] == sum(range(100, 200)) / 100  # the last 100
    assert summary["members"]["m0"]["parent"] == "m1" and summary["members"]["m0"]["stop_reason"] == "frames"
    assert (summary["best"], summary["median"]) == (149.5, (2.0 + 149.5) / 2)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_a_member_without_episodes_has_no_final_mean(tmp_path):
    pop = population_dir(tmp_path, {"m0": [1.0]})
    cfgs = {name: SimpleNamespace(run_dir=str(member_dir(tmp_path, name))) for name in ("m0", "m1")}
    summary = summarize(pop, cfgs, PopulationConfig(pop_dir=str(tmp_path)), {})
    assert summary["members"]["m1"]["final_100_episode_mean"] is None and summary["best"] == 1.0


def test_readers_of_a_population_directory(tmp_path):
    population_dir(tmp_path, {"m0": [1.0, 2.0]})
    assert is_population(tmp_path) and not is_population(member_dir(tmp_path, "m0"))
    saved = read_population(tmp_path)
    assert set(saved["members"]) == {"m0", "m1"} and saved["members"]["m0"]["parent"] == "m1"
    copies = [(e["member"], e["source"]) for e in read_events(tmp_path) if e["event"] == "exploit"]
    assert copies == [("m0", "m1")]
    frames, returns = read_episodes(member_dir(tmp_path, "m0"))
    assert list(frames) == [50.0, 100.0] and list(returns) == [1.0, 2.0]


def test_read_population_refuses_what_is_not_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no population"):
        read_population(tmp_path)
    (tmp_path / "population.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a population"):
        read_population(tmp_path)
    (tmp_path / "population.json").write_text(json.dumps({"members": {}}))
    with pytest.raises(ValueError, match="not a population"):
        read_population(tmp_path)
    with pytest.raises(ValueError, match="not a population"):
        Population.load(tmp_path)


def test_plot_draws_a_population(tmp_path):
    from impala_rl.plot import plot_runs

    population_dir(tmp_path / "pop", {"m0": [float(i) for i in range(30)], "m1": [float(i) for i in range(40)]})
    out = plot_runs([str(tmp_path / "pop")], tmp_path / "pop.png", window=5)
    assert out.stat().st_size > 10_000


def test_the_readers_and_the_plot_import_nothing_of_pbt():
    """No import circle between plot and pbt: plot reads population files through runfiles."""
    code = ("import sys, impala_rl; face = set(sys.modules); import impala_rl.runfiles, impala_rl.plot; "
            "print(sorted(m for m in set(sys.modules) - face if m.startswith('impala_rl')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert ast.literal_eval(out) == ["impala_rl.plot", "impala_rl.runfiles"]
