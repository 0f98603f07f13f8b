"""The ``gaussport`` command line: one module per command, each with ``add_parser`` and ``run``.

A command module exposes ``add_parser(subparsers) -> argparse.ArgumentParser`` (the command and its
flags, each flag declaring what it accepts through a type from :mod:`gaussport.demo._arguments` or
its choices) and ``run(args) -> int``; optionally ``check(args)``, the checks across flags, which
run before any work. :func:`build_parser` registers them; :func:`main` is the console script.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from ._common import Parser, UsageError, check_nothing, one_line
from .demo import DIGITS_ONLY, default_threads
from .train_demo import TRAIN_ON_CPU

__all__ = ["DIGITS_ONLY", "TRAIN_ON_CPU", "UsageError", "build_parser", "default_threads", "main"]

DESCRIPTION = """\
gaussport: sample diffusion models faster and more exactly.

A registry of probability-flow-ODE solvers behind one denoiser protocol, and an analytic
warm start ("teleportation") that replaces the first part of every sampling trajectory by
the exact ODE solution for a Gaussian fitted to the data.
"""

EPILOG = """\
examples:
  gaussport demo                      the shipped digits model, DPM-Solver++(2M) at NFE 6, 8, 10 with and
                                      without the teleport of the shipped tuned recipe (about 30 s):
                                      table, PNGs, JSON, CSV (--recipe none: a fixed teleport to sigma 2)
  gaussport demo --solver heun dpmpp_2m --nfe 5 7 9 --out out/
  gaussport demo --target mixture     the analytic Gaussian-mixture demo (no model needed, ~5 s)
  gaussport train-demo --out my-model retrain the digits model (3000 steps: about 10-20 min on 2 cores)
  gaussport demo --model my-model     the demo on that model
  gaussport solvers                   list the registered solvers with order and cost
  gaussport tune --model my-model --out my-model/digits_recipe.json
                                      tune the teleport level and grid per solver and NFE (the demo's recipe)
  gaussport fit images/ -o stats.safetensors
                                      fit the warm-start Gaussian to a folder of images (or .npy/.npz)
  gaussport info stats.safetensors --plot spectrum.png
                                      shape, N, representation, spectrum summary and plot
  gaussport probe --plot probe.png    1 - explained variance of the Gaussian, the class mixture and the
                                      training set against the digits model per sigma; safe/auto level
  gaussport train images/ --statistics stats.safetensors --out run/
                                      train a small denoiser that learns what the Gaussian misses
                                      (EMA weights, safetensors checkpoints, --resume)

documentation: docs/ in the repository (mkdocs serve), or README.md
"""


def _command_modules() -> list[ModuleType]:
    """The command modules, in the order ``gaussport --help`` lists them."""
    from . import demo, fit, info, probe, sample, solvers, train, train_demo, tune

    return [demo, train_demo, solvers, fit, info, sample, probe, tune, train]


def build_parser() -> argparse.ArgumentParser:
    """The ``gaussport`` parser with every command.

    Every flag that takes a value declares what it accepts through its type (a range, a kind of
    directory or file, a device, a solver name) or its choices: a bad value is refused, in one line,
    while the command line is parsed; tests/bad_input/test_cli.py reads these declarations back.
    """
    from .. import __version__

    parser = Parser(
        prog="gaussport",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gaussport {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in _command_modules():
        command = module.add_parser(sub)
        if command.get_default("func") is None:
            command.set_defaults(func=module.run)
        if command.get_default("check") is None:
            command.set_defaults(check=getattr(module, "check", check_nothing))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gaussport`` console script.

    Every argument is checked before any work: each flag by the parser, the flags together by the
    command's check. Bad input prints one line ``gaussport COMMAND: error: ...`` naming the problem
    and the fix on stderr and returns 2; nothing has been loaded, computed or written by then. A
    file system failure during the run (a full disk, a directory removed meanwhile) prints one line
    and returns 1; the outputs written so far are whole files (docs/conventions.md#files).
    """
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = parser.parse_known_args(words)
        if extra:  # named by the command they were given to, not by the top-level parser
            prog = "gaussport" if args.command is None else f"gaussport {args.command}"
            raise UsageError(prog, f"unrecognized arguments: {' '.join(extra)}; see `{prog} --help`.")
        if args.command is not None:
            try:
                args.check(args)
            except (ValueError, TypeError, FileNotFoundError) as exc:
                raise UsageError(f"gaussport {args.command}", one_line(exc)) from exc
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return 2
    args.argv = words
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (ValueError, TypeError) as exc:
        print(f"gaussport {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gaussport {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1
