"""Fixtures shared by every test folder."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal (a shell without job control starts its
    background commands, CI's for one, with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
