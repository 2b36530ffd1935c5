"""The flags every training command takes (one per :class:`~impala_rl.config.TrainConfig` field)
and :class:`UsageError`, the one-line error of a bad input."""

# Project imports stay inside the functions: `impala --help` and a mistyped flag must not import torch.

from __future__ import annotations

import argparse
import dataclasses


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; help from the field's metadata, grouped by section."""
    from impala_rl.config import ENV_PRESETS, PRESETS, TrainConfig, flag_value

    parser.add_argument("--preset", nargs="?", const="auto", default="auto", metavar="NAME",
                        help=f"apply a preset to the options not given: the environment family's (default), or "
                        f"NAME, one of {', '.join(PRESETS)} (`impala presets` lists their values; docs/learning.md "
                        f"says why)")
    parser.add_argument("--no-preset", dest="preset", action="store_const", const=None,
                        help="no preset: the paper's Atari defaults plus the options given")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        by_preset = [f"{family} {flag_value(values[f.name])}" for family, values in {**PRESETS, **ENV_PRESETS}.items()
                     if f.name in values]
        help_text = (f"{f.metadata['help']} (default: {default if default != '' else 'auto'}"
                     + (f"; presets: {', '.join(by_preset)})" if by_preset else ")"))
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, tuple):
            group.add_argument(flag, nargs="+", type=int, metavar="N", **kw)
        else:
            group.add_argument(flag, type=type(default), metavar=type(default).__name__.upper(), **kw)


def explicit_fields(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (flags default to SUPPRESS)."""
    from impala_rl.config import TrainConfig

    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if "mlp_sizes" in explicit:
        explicit["mlp_sizes"] = tuple(explicit["mlp_sizes"])
    return explicit
