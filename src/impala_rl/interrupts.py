"""Ctrl-C and SIGTERM held back while a change that must not be cut in half is made."""

from __future__ import annotations

import contextlib
import signal
import threading

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def held_interrupts():
    """Within the block, SIGINT and SIGTERM are only noted. When it ends, the handlers from before
    it are back and each noted signal is raised again, so it takes its usual course (for ``impala
    train``: a final checkpoint) with the change complete. Nothing is held outside the main thread,
    where handlers cannot change, or when a handler was not set from Python (it could not be put back)."""
    previous = {signum: signal.getsignal(signum) for signum in HELD}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield
        return
    noted: list[int] = []
    for signum in HELD:
        signal.signal(signum, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(noted):
            signal.raise_signal(signum)
