"""What every ``gaussport`` command shares: the one-line usage error and the parser that raises it."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["Parser", "UsageError", "add_model_run_flags", "check_nothing", "flags", "one_line"]


class UsageError(Exception):
    """A bad command line, reported as one line ``PROG: error: MESSAGE`` and exit status 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """``argparse`` with a one-line error: :func:`gaussport.cli.main` prints ``PROG: error: MESSAGE``
    and returns 2.

    argparse's own error prints the usage block first and exits; one line naming the problem and
    the fix is what every other bad argument gets (docs/conventions.md#bad-input), and returning
    keeps :func:`gaussport.cli.main` callable in-process.
    """

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        if not message.endswith("."):  # argparse's own messages do not name the fix: point to --help
            message += f"; see `{self.prog} --help`."
        raise UsageError(self.prog, message)


def check_nothing(args: argparse.Namespace) -> None:
    """A command without checks across flags: the parser has checked everything."""


def flags(args: argparse.Namespace) -> dict[str, str]:
    """The argument names -> the flags the user typed (``batch_size`` -> ``--batch-size``)."""
    return {key: f"--{key.replace('_', '-')}" for key in vars(args)}


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name where it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def add_model_run_flags(parser: argparse.ArgumentParser, *, threads: bool = True) -> None:
    """``--device``, ``--threads`` (one by default: the commands that run a small model many times are
    fastest on one thread of a busy machine) and ``--quiet``: the flags every command that runs a
    model shares."""
    from ..demo._arguments import Device, Integer

    parser.add_argument(
        "--device", type=Device(), help="where the model runs, e.g. cpu or cuda (default cpu)"
    )
    if threads:
        parser.add_argument(
            "--threads", type=Integer(1, 256), default=1, metavar="N", help="torch CPU threads (default 1)"
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
