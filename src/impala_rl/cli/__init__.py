"""The ``impala`` command: ``train``, ``bench``, ``pbt``, ``eval``, ``presets``, ``plot``.

Every bad input (unknown flag, bad value, unknown environment, inconsistent sizes) ends
in one line on stderr naming the problem and what is accepted, exit code 2, and nothing
written to disk.

- :mod:`~impala_rl.cli.parser`: the commands and their flags (``build_parser``);
  :mod:`~impala_rl.cli.flags`: the flags of every training command, one per config field,
  and :class:`UsageError`.
- :mod:`~impala_rl.cli.train`: ``impala train``: the config from a preset, a recorded
  config or a run to resume; :mod:`~impala_rl.cli.pbt`: ``impala pbt``;
  :mod:`~impala_rl.cli.tools`: ``bench``, ``eval``, ``presets``, ``plot``.
- :mod:`~impala_rl.cli.signals`: SIGTERM as Ctrl-C, the exit code after a signal, OS
  errors of background threads; :func:`main` here; ``python -m impala_rl.cli`` runs it.
"""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

from __future__ import annotations

import signal
import sys

from impala_rl.cli.flags import UsageError
from impala_rl.cli.parser import build_parser
from impala_rl.cli.signals import raise_keyboard_interrupt, thread_exception

__all__ = ["UsageError", "build_parser", "main", "thread_exception"]


def main(argv: list[str] | None = None) -> int:
    import threading

    threading.excepthook = thread_exception
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # SIGTERM = Ctrl-C: final checkpoint, clean exit
        return args.func(args)
    except UsageError as e:
        print(f"impala: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `impala presets | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
