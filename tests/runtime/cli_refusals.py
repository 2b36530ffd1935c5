"""A shared check for the CLI's refusals: bad input is one line on stderr, exit code 2, and
nothing on disk (importable from every test directory: tests/runtime is on the path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def assert_train_refuses(tmp_path: Path, flags: list[str], message: str) -> None:
    """``impala train FLAGS --run-dir tmp_path/run`` exits 2 with one line containing ``message``
    and leaves no run directory."""
    proc = subprocess.run([sys.executable, "-m", "impala_rl.cli", "train", *flags, "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()
