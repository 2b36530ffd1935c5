"""Shared fixtures of the runtime tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny ops with 2 OpenMP threads on a busy 2-core machine spin for milliseconds each.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
