"""``python -m impala_rl.cli``: the ``impala`` command."""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

import sys

from impala_rl.cli import main

if __name__ == "__main__":
    sys.exit(main())
