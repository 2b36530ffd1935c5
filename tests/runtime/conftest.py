"""Shared fixtures of the runtime tests."""

import subprocess
import time

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny ops with 2 OpenMP threads on a busy 2-core machine spin for milliseconds each.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ray_service_pids() -> set[int]:
    """Pids of Ray's node services (raylet, GCS) running on this machine."""
    out = subprocess.run(["pgrep", "-f", "ray/core/src/ray/(raylet/raylet|gcs/gcs_server)"],
                         capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture
def no_new_ray_services():
    """Whatever a test starts, no Ray service of it (raylet, GCS) may outlive it."""
    before = ray_service_pids()
    yield
    deadline = time.monotonic() + 30
    while ray_service_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_service_pids() - before, "Ray services left running"
