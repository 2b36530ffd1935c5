"""held_interrupts: Ctrl-C and SIGTERM wait for the end of the block, then take their usual course."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from impala_rl.interrupts import held_interrupts


pytestmark = pytest.mark.usefixtures("ctrl_c_raises")  # tests/conftest.py


def test_ctrl_c_inside_the_block_is_raised_once_when_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # twice: still one interrupt, after the work
            done.append("rest of the change")
    assert done == ["rest of the change"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_goes_to_the_handler_from_before_the_block_which_is_back_afterwards():
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []
        assert seen == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is handler
        with held_interrupts():  # nothing came: nothing is raised
            pass
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_nothing_is_held_or_changed():
    seen = []

    def work():
        with held_interrupts():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
