"""``impala pbt`` end to end: a small CartPole population on this machine and through Ray,
a member killed mid-run, an interrupted population resumed, the plot, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_e2e_cli import IMPALA, _default_sigint, cli_env, impala

pytestmark = pytest.mark.timeout(300)

TINY = ["--env", "CartPole-v1", "--envs-per-actor", "4", "--batch-size", "4", "--unroll-length", "10",
        "--ready-episodes", "10"]


def events(pop_dir: Path) -> list[dict]:
    path = pop_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_exploits_copy_and_explores_perturb(log: list[dict], factors=(1.2, 1 / 1.2)) -> None:
    """Every exploit hands over the source's hyperparameters at that moment; every explore
    multiplies by one of the factors."""
    current: dict[str, dict] = {}
    for e in log:
        if e["event"] == "ready":
            current[e["member"]] = e["hparams"]
        elif e["event"] == "exploit":
            assert e["new"] == current[e["source"]]  # the source's values, as it last trained with them
            assert e["source_fitness"] >= e["fitness"] + 0.05 * abs(e["fitness"])
            current[e["member"]] = dict(e["new"])
        elif e["event"] == "explore":
            for name, (old, new) in e["changed"].items():
                assert any(abs(new / old - f) < 1e-9 for f in factors), (name, old, new)
                current.setdefault(e["member"], {})[name] = new


def test_cartpole_population_runs_exploits_explores_and_plots(tmp_path):
    pop = tmp_path / "pop"
    r = impala("pbt", *TINY, "--population", "3", "--total-frames", "6000", "--pop-dir", str(pop),
               "--initial", "learning_rate=1e-5,1e-3", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    log = events(pop)
    kinds = [e["event"] for e in log]
    assert kinds.count("started") == 3 and kinds.count("finished") == 3
    assert kinds.count("ready") >= 6 and "explore" in kinds
    check_exploits_copy_and_explores_perturb(log)
    summary = json.loads((pop / "summary.json").read_text())
    assert set(summary["members"]) == {"m0", "m1", "m2"}
    for name in ("m0", "m1", "m2"):
        run = pop / "members" / name
        assert (run / "checkpoint.pt").exists() and (run / "episodes.csv").exists()
        assert json.loads((run / "summary.json").read_text())["frames"] >= 6000
    first = json.loads((pop / "population.json").read_text())["settings"]["members"]
    assert [first[n]["learning_rate"] for n in ("m0", "m1", "m2")] == [1e-5, 1e-3, 1e-5]
    assert [first[n]["seed"] for n in ("m0", "m1", "m2")] == [0, 1, 2]
    assert "best" in r.stdout and "m2" in r.stdout
    p = impala("plot", str(pop), "-o", str(tmp_path / "pop.png"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "pop.png").stat().st_size > 10_000


def _start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([IMPALA, "pbt", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=cli_env(), preexec_fn=_default_sigint)


def _wait_for(pop: Path, predicate, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = events(pop)
        if predicate(log):
            return log
        time.sleep(0.2)
    raise AssertionError(f"timed out; events: {[e['event'] for e in events(pop)]}")


def test_a_killed_member_is_restarted_and_the_population_finishes(tmp_path):
    pop = tmp_path / "pop"
    proc = _start([*TINY, "--population", "2", "--total-frames", "10000", "--pop-dir", str(pop)], tmp_path)
    log = _wait_for(pop, lambda log: any(e["event"] == "ready" and e["member"] == "m1" for e in log))
    pid = [e["pid"] for e in log if e["event"] == "started" and e["member"] == "m1"][0]
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    kinds = [(e["event"], e["member"]) for e in events(pop)]
    assert ("died", "m1") in kinds and ("restarted", "m1") in kinds
    assert kinds.count(("finished", "m0")) == 1 and kinds.count(("finished", "m1")) == 1
    restarted = [e for e in events(pop) if e["event"] == "started" and e["member"] == "m1"][1]
    assert restarted["resumed"] is True
    assert json.loads((pop / "members" / "m1" / "summary.json").read_text())["frames"] >= 10000


def test_an_interrupted_population_resumes_to_the_end(tmp_path):
    pop = tmp_path / "pop"
    proc = _start([*TINY, "--population", "2", "--total-frames", "10000", "--pop-dir", str(pop)], tmp_path)
    _wait_for(pop, lambda log: sum(e["event"] == "ready" for e in log) >= 4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    stopped = {e["member"]: e for e in events(pop) if e["event"] == "finished"}
    assert {e["stop_reason"] for e in stopped.values()} == {"interrupted"}
    assert all(e["frames"] < 10000 for e in stopped.values())
    r = impala("pbt", "--resume", str(pop), cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("m0", "m1"):
        assert json.loads((pop / "members" / name / "summary.json").read_text())["frames"] >= 10000
    started = [e for e in events(pop) if e["event"] == "started"]
    assert [e["resumed"] for e in started] == [False, False, True, True]


def test_time_sharing_runs_one_member_at_a_time(tmp_path):
    """--concurrent 1: two members take turns (SIGSTOP / SIGCONT every slice) and both finish."""
    pop = tmp_path / "pop"
    r = impala("pbt", *TINY, "--population", "2", "--total-frames", "6000", "--pop-dir", str(pop),
               "--concurrent", "1", "--slice-seconds", "2", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [e["event"] for e in events(pop)].count("finished") == 2


@pytest.mark.parametrize("args, message", [
    (["--population", "1"], "--population must be at least 2"),
    (["--mutate", "momentum"], "--mutate momentum: not a hyperparameter"),
    (["--initial", "learning_rate=fast"], "--initial learning_rate=fast: cannot read"),
    (["--initial", "gamma=0.9"], "expected NAME=VALUE with NAME one of"),
    (["--bound", "learning_rate=1:0.1"], "bounds of learning_rate"),
    (["--ready-frames", "-5"], "ready_frames must be >= 0"),
    (["--backend", "ray"], "--ray-address runs the population on Ray"),
    (["--resume", "nowhere"], "no population"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    r = impala("pbt", "--env", "CartPole-v1", "--pop-dir", str(tmp_path / "pop"), *args, cwd=tmp_path)
    if args[0] == "--resume":
        r = impala("pbt", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "pop").exists() and not (tmp_path / "runs").exists()


@pytest.mark.exclusive  # the Ray tests check Ray's services machine-wide
def test_population_through_ray(tmp_path):
    pytest.importorskip("ray")
    pop = tmp_path / "pop"
    r = impala("pbt", *TINY, "--population", "2", "--total-frames", "4000", "--pop-dir", str(pop),
               "--ray-address", "local", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    log = events(pop)
    kinds = [e["event"] for e in log]
    assert kinds.count("finished") == 2 and kinds.count("ready") >= 4
    check_exploits_copy_and_explores_perturb(log)
    assert (pop / "members" / "m0" / "episodes.csv").exists()
