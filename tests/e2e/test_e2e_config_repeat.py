"""`impala train --config RUN` repeats a run from its recorded config.json: every recorded
value (preset included) comes back, flags given beside it win, and it trains in a new
directory; a bad record is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys


def _train(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "impala_rl.cli", "train", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_run_repeated_from_its_record_has_the_same_config_and_flags_win(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    proc = _train("--env", "CartPole-v1", "--backend", "serial", "--total-frames", "2000", "--entropy-cost", "0.02",
                  "--seed", "3", "--run-dir", str(first), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = json.loads((first / "config.json").read_text())
    # the directory or the file itself; --total-frames given beside it wins
    proc = _train("--config", str(first), "--total-frames", "3000", "--run-dir", str(again), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "config from" in proc.stderr and "no preset applied" in proc.stderr
    repeated = json.loads((again / "config.json").read_text())
    differ = {k for k in recorded if recorded[k] != repeated[k]}
    assert differ == {"run_dir", "total_frames"}, differ
    assert repeated["total_frames"] == 3000 and repeated["entropy_cost"] == 0.02 and repeated["seed"] == 3
    assert recorded["mlp_activation"] == repeated["mlp_activation"] == "tanh"  # the classic preset, from the record
    # without --run-dir: a new directory, never the recorded one
    proc = _train("--config", str(first / "config.json"), "--total-frames", "1000", "--quiet",
                  "--run-dir", str(tmp_path / "third"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((first / "config.json").read_text()) == recorded


def test_a_bad_record_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    cases = {
        str(tmp_path / "missing"): "cannot read",
        str(bad): "is not JSON",
    }
    bad.write_text("{not json")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"env": "CartPole-v1", "warp_drive": 9}))
    cases[str(unknown)] = "unknown config keys: warp_drive"
    for path, expected in cases.items():
        out = tmp_path / "out"
        proc = _train("--config", path, "--run-dir", str(out), timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert not out.exists()
    proc = _train("--config", str(unknown), "--resume", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "give one" in proc.stderr
