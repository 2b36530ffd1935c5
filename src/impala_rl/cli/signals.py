"""How a command ends on a signal, and where an OS error in a background thread goes."""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

from __future__ import annotations

import signal

STOP_SIGNAL: dict = {}


def raise_keyboard_interrupt(signum, frame):
    STOP_SIGNAL.setdefault("signum", signum)
    raise KeyboardInterrupt


def interrupted_exit_code() -> int:
    """The exit code of a command stopped by a signal: the shell's 128 + the signal's number
    (SIGINT's when none was caught: Ctrl-C raised KeyboardInterrupt itself)."""
    return 128 + STOP_SIGNAL.get("signum", signal.SIGINT)


def thread_exception(args) -> None:
    """An OS error in a background thread (TensorBoard's writer on a full disk) goes to
    train.log only: the main thread reports the failure in its one line."""
    import logging
    import threading
    import traceback

    if not issubclass(args.exc_type, OSError):
        return threading.__excepthook__(args)
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    for handler in logging.getLogger("impala_rl").handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:  # None once closed
            try:
                handler.stream.write(f"background thread {args.thread.name if args.thread else '?'}: {text}")
                handler.flush()
            except (OSError, ValueError):
                pass
