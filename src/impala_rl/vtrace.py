"""Convenience import path: ``impala_rl.vtrace`` re-exports :mod:`impala_rl.core.vtrace`."""

from impala_rl.core.vtrace import *  # noqa: F401,F403
from impala_rl.core.vtrace import __all__  # noqa: F401
