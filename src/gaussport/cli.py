"""The ``gaussport`` command line."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import logging
import os
import shlex
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["main"]

DESCRIPTION = """\
gaussport: sample diffusion models faster and more exactly.

A registry of probability-flow-ODE solvers behind one denoiser protocol, and an analytic
warm start ("teleportation") that replaces the first part of every sampling trajectory by
the exact ODE solution for a Gaussian fitted to the data.
"""

EPILOG = """\
examples:
  gaussport demo                      the shipped digits model, DPM-Solver++(2M) at NFE 6, 8, 10 with and
                                      without a teleport to sigma 2 (about 30 s): table, PNGs, JSON, CSV
  gaussport demo --solver heun dpmpp_2m --nfe 5 7 9 --out out/
  gaussport demo --target mixture     the analytic Gaussian-mixture demo (no model needed, ~5 s)
  gaussport train-demo --out my-model retrain the digits model (3000 steps: about 10-20 min on 2 cores)
  gaussport demo --model my-model     the demo on that model
  gaussport solvers                   list the registered solvers with order and cost

documentation: docs/ in the repository (mkdocs serve), or README.md
"""

DIGITS_ONLY = (
    "nfe",
    "teleport",
    "frechet_samples",
    "frechet_seeds",
    "reference_steps",
    "model",
    "cache_dir",
    "device",
)

TRAIN_ON_CPU = (
    "training runs on the CPU only (the 745k-parameter model trains in minutes there); drop --device "
    "or pass --device cpu."
)


class UsageError(Exception):
    """A bad command line, reported as one line ``PROG: error: MESSAGE`` and exit status 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """``argparse`` with a one-line error: :func:`main` prints ``PROG: error: MESSAGE`` and returns 2.

    argparse's own error prints the usage block first and exits; one line naming the problem and
    the fix is what every other bad argument gets (docs/conventions.md#bad-input), and returning
    keeps :func:`main` callable in-process.
    """

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        if not message.endswith("."):  # argparse's own messages do not name the fix: point to --help
            message += f"; see `{self.prog} --help`."
        raise UsageError(self.prog, message)


def default_threads() -> int:
    """The demo's torch threads: 2 (at most the cores) where idle OpenMP threads sleep, else 1.

    Measured on a 2-core machine (docs/getting-started.md#threads-and-a-busy-machine): threads
    that spin between the small network's ops (OpenMP's default) ran the demo 2-8x slower under
    load than one thread, whereas with ``OMP_WAIT_POLICY=PASSIVE`` -- which the ``gaussport``
    console script sets unless the user chose a policy -- two threads were as fast as one on a
    quiet machine and faster on a busy one, where they get a larger share of the cores.
    """
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    return min(2, os.cpu_count() or 1) if passive else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch

    threads = default_threads() if args.threads is None else args.threads
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _mixture_demo(args) if args.target == "mixture" else _digits_demo(args)
    finally:
        torch.set_num_threads(previous)


def _threads_label() -> str:
    import torch

    n, policy = torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "unset")
    return f"{n} CPU thread{'s' if n != 1 else ''} (OMP_WAIT_POLICY={policy})"


def _check_demo(args: argparse.Namespace) -> None:
    """Every check of ``gaussport demo`` that needs more than one flag, before any work.

    The parser has checked each flag on its own (its type: range, directory, device, solver name).
    """
    from . import demo

    if args.target == "mixture":
        given = [f"--{name.replace('_', '-')}" for name in DIGITS_ONLY if getattr(args, name) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)}: options of the digits model only; drop them with --target mixture."
            )
        for solver in _mixture_solvers(args):
            demo.check_mixture_demo(
                _mixture_steps(args), solver=solver, **_mixture_options(args), names=_flags(args)
            )
        return
    if args.steps is not None:
        raise ValueError(
            "--steps applies to --target mixture; for the digits model give NFE budgets with --nfe."
        )
    demo.check_digits_demo(**_digits_options(args), names=_flags(args))


def _flags(args: argparse.Namespace) -> dict[str, str]:
    """The library's argument names -> the flags the user typed, for the check messages."""
    flags = {key: f"--{key.replace('_', '-')}" for key in vars(args)}
    return {**flags, "solvers": "--solver", "nfes": "--nfe", "directory": "--model"}


def _digits_options(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of ``run_digits_demo``; options the user left out take its defaults."""
    given = {
        name: getattr(args, option)
        for name, option in (
            ("solvers", "solver"),
            ("nfes", "nfe"),
            ("sigma_skip", "sigma_skip"),
            ("teleport", "teleport"),
            ("batch", "batch"),
            ("frechet_samples", "frechet_samples"),
            ("frechet_seeds", "frechet_seeds"),
            ("reference_steps", "reference_steps"),
        )
        if getattr(args, option) is not None
    }
    return {
        **given,
        "seed": args.seed,
        "device": args.device,
        "directory": args.model,
        "cache_dir": args.cache_dir,
    }


def _mixture_solvers(args: argparse.Namespace) -> list[str]:
    return args.solver or ["heun"]


def _mixture_steps(args: argparse.Namespace) -> tuple[int, ...]:
    return tuple(args.steps or (3, 4, 5, 6, 8, 10, 12, 16))


def _mixture_options(args: argparse.Namespace) -> dict[str, Any]:
    """``run_mixture_demo``'s options; the mixture demo's own defaults where the user left them out."""
    return {
        "sigma_skip": 10.0 if args.sigma_skip is None else args.sigma_skip,
        "batch": 64 if args.batch is None else args.batch,
        "seed": args.seed,
    }


def _digits_demo(args: argparse.Namespace) -> int:
    from . import demo

    start = time.perf_counter()
    result = demo.run_digits_demo(**_digits_options(args), disable=args.quiet or None)
    s = result.settings
    print(
        f"gaussport demo: the {s['model']} 8x8-digits model, {s['seeds'][1] - s['seeds'][0] + 1} seeds, "
        f"Karras grid {demo.SIGMA_MAX:g} -> {demo.SIGMA_MIN:g}, device {s['device']}, "
        f"{_threads_label()}"
    )
    print(demo.digits_table(result))
    for path in demo.write_digits_outputs(result, args.out, plots=not args.no_plot):
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - start:.1f} s (exact endpoints {result.reference_seconds:.1f} s)")
    return 0


def _mixture_demo(args: argparse.Namespace) -> int:
    from . import demo

    solvers, steps, options = _mixture_solvers(args), _mixture_steps(args), _mixture_options(args)
    sigma_skip, batch = options["sigma_skip"], options["batch"]
    start = time.perf_counter()
    for solver in solvers:
        rows = demo.run_mixture_demo(steps, solver=solver, **options, disable=args.quiet or None)
        print(
            f"gaussport demo: {solver} on a Gaussian-mixture target (exact denoiser), batch {batch}, "
            f"seed {args.seed}"
        )
        print(demo.format_table(rows, sigma_skip))
        name = "demo_error_vs_nfe.png" if len(solvers) == 1 else f"demo_error_vs_nfe_{solver}.png"
        plot = os.path.join(args.out, name)
        if not args.no_plot:
            os.makedirs(args.out, exist_ok=True)
        if not args.no_plot and demo.plot_rows(rows, plot, solver=solver, sigma_skip=sigma_skip):
            print(f"plot written to {plot}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _check_train_demo(args: argparse.Namespace) -> None:
    """What ``gaussport train-demo`` needs beyond its flags, checked before any work."""
    if importlib.util.find_spec("sklearn") is None:
        raise ValueError("training the digits model needs scikit-learn: pip install 'gaussport[train]'.")


def _check_nothing(args: argparse.Namespace) -> None:
    """A command without flags of its own: the parser has checked everything."""


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from .digits import train_demo_model

    command = "gaussport " + " ".join(shlex.quote(a) for a in args.argv)
    start = time.perf_counter()
    provenance = train_demo_model(
        args.out,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        classifier_epochs=args.classifier_epochs,
        reference_samples=args.reference_samples,
        held_out_images=args.held_out_images,
        num_threads=args.threads,
        disable=args.quiet or None,
        command=command,
    )
    refs = provenance["frechet_reference_points"]
    print(
        f"gaussport train-demo: wrote {args.out} in {time.perf_counter() - start:.0f} s; final loss "
        f"{provenance['denoiser']['final_loss']:.4f}, classifier test accuracy "
        f"{provenance['classifier']['test_accuracy']:.3f}, Frechet of Heun samples {refs['model_heun']:.3g}"
    )
    print(f"use it with: gaussport demo --model {shlex.quote(str(args.out))}")
    return 0


def _cmd_solvers(args: argparse.Namespace) -> int:
    from . import solvers

    names = solvers.available()
    intro = (
        f"{len(names)} registered solvers (gaussport.solve(..., solver=NAME)). order: the global "
        "convergence order with exact history, and from a cold start (empty history: what gaussport.solve "
        "does) where that is lower; cost: denoiser evaluations (NFE) per step. docs/solvers.md compares them."
    )
    print(textwrap.fill(intro, width=106))
    for name in names:
        print()
        print("\n".join(_solver_card(name)))
    return 0


def _solver_card(name: str) -> list[str]:
    """What ``gaussport solvers`` prints for ``name``, all read from the registry and the solver.

    The order and cost come from the solver object (``order``, ``cold_start_order``,
    ``evaluations``), the line that tells this name from the others from the registry
    (:func:`gaussport.solvers.summary`) with the preset options, the reference from the class
    docstring's ``References:`` section.
    """
    from . import solvers

    cls, preset = solvers.solver_class(name)
    solver = solvers.get(name)
    order, cold = solver.order, solver.cold_start_order
    per_step, last = solver.evaluations((2.0, 1.0)), solver.evaluations((2.0, 0.0))
    cost = f"{per_step} evaluation{'s' if per_step != 1 else ''} per step"
    if last != per_step:
        cost += f" ({last} on a final step to sigma = 0)"
    head = f"order {order}" + (f" ({cold} from a cold start)" if cold != order else "")
    wrap = textwrap.TextWrapper(width=106, initial_indent="    ", subsequent_indent="      ")
    lines = [f"{name:<18}{head}, {cost}" + ("; inverts (gaussport.invert)" if cls.supports_inversion else "")]
    options = ", ".join(f"{k}={v!r}" for k, v in preset.items())
    lines += wrap.wrap(solvers.summary(name) + (f" [{cls.__qualname__}({options})]" if options else ""))
    reference = _first_reference(inspect.getdoc(cls) or "")
    if reference:
        lines += wrap.wrap(f"reference: {reference}")
    return lines


def _first_reference(doc: str) -> str:
    """The first work the docstring's ``References:`` section cites (up to its first ``;``)."""
    _, found, rest = doc.partition("References:\n")
    if not found:
        return ""
    text = " ".join(rest.split("\n\n")[0].replace("``", "").split())
    depth = 0
    for k, ch in enumerate(text):  # the first ";" outside parentheses ends the first work
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ";" and depth == 0:
            text = text[:k]
            break
    return text.strip().rstrip(".")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo import FRECHET_NOISE, SIGMA_MAX, SIGMA_MIN
    from .demo._arguments import Device, Directory, Integer, Number, SolverName

    # Every flag that takes a value declares what it accepts through its type (a range, a kind of
    # directory, a device, a solver name) or its choices: a bad value is refused, in one line,
    # while the command line is parsed; tests/bad_input/test_cli.py reads these declarations back.
    count, natural = Integer(1), Integer(0)
    parser = _Parser(
        prog="gaussport",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gaussport {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="sample the shipped digits model with and without the analytic warm start",
        description="Sample the shipped 8x8-digits model (or --model DIR) from a fixed set of seeds with "
        "each --solver at each --nfe budget, without and with a teleport to --sigma-skip; measure the "
        "trajectory error (RMS distance to the exact ODE endpoint of the same seed) and a Frechet "
        "distance to held-out digits; print the table and write sample grids (samples_nfe<N>.png), a "
        "quality-vs-NFE plot (quality_vs_nfe.png), results.json and results.csv into --out. About 30 s "
        "with the defaults on a quiet 2-core machine (--threads). A budget a solver cannot spend exactly "
        "(Heun: 2n - 1 evaluations for n steps) runs the NFE of the largest grid within it: the demo says "
        "so and names rows and files by the NFE used. --target mixture runs the analytic Gaussian-mixture "
        "demo instead (exact denoiser, no model; options --steps, --solver, --sigma-skip, --batch, --seed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--target",
        choices=("digits", "mixture"),
        default="digits",
        help="the shipped digits model (default) or the analytic Gaussian mixture",
    )
    demo.add_argument(
        "--solver",
        type=SolverName(),
        nargs="+",
        metavar="NAME",
        help="registered solver names (`gaussport solvers`); default dpmpp_2m (digits), heun (mixture)",
    )
    demo.add_argument(
        "--nfe",
        type=count,
        nargs="+",
        metavar="N",
        help="NFE budgets (digits; default 6 8 10); Heun-type solvers use the largest 2n-1 <= N",
    )
    demo.add_argument(
        "--sigma-skip",
        type=Number(SIGMA_MIN, SIGMA_MAX),
        help="noise level to teleport to; default 2 (digits: the best level at 6-10 NFE lies in 1-3), "
        "10 (mixture)",
    )
    demo.add_argument(
        "--teleport",
        choices=("respace", "truncate"),
        help="respace (default): the same NFE re-spaced below --sigma-skip; "
        "truncate: the Karras grid below it",
    )
    demo.add_argument(
        "--batch", type=count, help="number of seeds (trajectories); default 32 (digits), 64 (mixture)"
    )
    demo.add_argument(
        "--seed",
        type=Integer(0, 2**64 - 1),
        default=0,
        help="the first seed (digits) or the noise seed (mixture)",
    )
    demo.add_argument(
        "--frechet-samples",
        type=natural,
        metavar="N",
        help=f"samples per Frechet seed; 0 disables the Frechet distance (default 200). {FRECHET_NOISE}",
    )
    demo.add_argument("--frechet-seeds", type=natural, metavar="K", help="Frechet seeds (default 2)")
    demo.add_argument(
        "--reference-steps",
        type=count,
        metavar="K",
        help="RK4 steps per unit of log-sigma for the exact endpoints (default 8: 1.4e-5 RMS accurate)",
    )
    demo.add_argument(
        "--model",
        type=Directory("model"),
        metavar="DIR",
        help="a model written by `gaussport train-demo --out DIR`",
    )
    demo.add_argument(
        "--cache-dir",
        type=Directory("output"),
        metavar="DIR",
        help="keep the exact endpoints on disk between runs",
    )
    demo.add_argument("--device", type=Device(), help="where the model runs, e.g. cpu or cuda (default cpu)")
    demo.add_argument(
        "--steps",
        type=count,
        nargs="+",
        help="mixture only: grid sizes (Karras grid, sigma 80 -> 0.002, then 0); default 3 4 5 6 8 10 12 16",
    )
    demo.add_argument(
        "--threads",
        type=count,
        metavar="N",
        help="torch CPU threads during the run (restored afterwards); default 2 (at most the cores) "
        "where idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE: the gaussport command sets it unless "
        "you chose a policy), else 1, because threads that spin between the small network's ops ran "
        "the demo 2-8x slower on a busy machine",
    )
    demo.add_argument(
        "--out",
        type=Directory("output"),
        default="gaussport-demo",
        help="output directory (default gaussport-demo)",
    )
    demo.add_argument("--no-plot", action="store_true", help="do not write the PNG files")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo, check=_check_demo)

    train = sub.add_parser(
        "train-demo",
        help="retrain the digits model of the demo (about 10-20 min on 2 CPU cores)",
        description="Train the 8x8-digits denoiser (EDM loss, EMA weights), its feature classifier and "
        "the Gaussian statistics of the training split from scikit-learn's digits (pip install "
        "'gaussport[train]'), and write into --out the weights (safetensors), the statistics (npz), the "
        "held-out test split, digits_provenance.json and the model card DIGITS_MODEL.md. The loaders "
        "(gaussport.digits.load_digits_*(directory=DIR)), gaussport.digits.evaluator(directory=DIR) and "
        "`gaussport demo --model DIR` accept the directory. Expected time: 3000 steps take about 10-20 "
        "minutes on 2 CPU cores (the shipped run: 19 min under load). Training runs on "
        "the CPU with 2 threads, whose OpenMP wait policy the gaussport command sets to PASSIVE unless "
        "OMP_WAIT_POLICY is set (spinning OpenMP threads ran 5-10x slower under load). Same seed, same "
        "files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument(
        "--out",
        type=Directory("output"),
        required=True,
        help="output directory (src/gaussport/data regenerates the shipped model)",
    )
    # The run seeds generators with seed, seed + 1 and seed + 2 (gaussport.digits.train).
    train.add_argument("--seed", type=Integer(0, 2**64 - 3), default=0, help="the single seed of the run")
    train.add_argument("--steps", type=count, default=3000, help="denoiser optimiser steps")
    train.add_argument("--batch-size", type=count, default=128, help="denoiser batch size")
    train.add_argument("--classifier-epochs", type=count, default=60, help="classifier training epochs")
    train.add_argument(
        "--reference-samples",
        type=Integer(2),
        default=1000,
        help="samples for the Frechet reference points",
    )
    train.add_argument(
        "--held-out-images",
        type=count,
        metavar="N",
        help="average the held-out losses over the first N images of each split (default: all of them)",
    )
    train.add_argument(
        "--threads", type=count, default=2, help="torch CPU threads during the run (restored afterwards)"
    )
    train.add_argument(
        "--device",
        type=Device(only=("cpu",), why=TRAIN_ON_CPU),
        help="cpu (the only choice: training runs on the CPU)",
    )
    train.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train_demo, check=_check_train_demo)

    lst = sub.add_parser("solvers", help="list the registered solvers")
    lst.set_defaults(func=_cmd_solvers, check=_check_nothing)
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
                raise UsageError(f"gaussport {args.command}", _one_line(exc)) from exc
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
        print(f"gaussport {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gaussport {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
