"""``gaussport demo``: the shipped digits model (or the analytic mixture) with and without a teleport."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ._common import flags

__all__ = ["DIGITS_ONLY", "add_parser", "check", "default_threads", "run"]

DIGITS_ONLY = (
    "nfe",
    "teleport",
    "frechet_samples",
    "frechet_seeds",
    "reference_steps",
    "model",
    "cache_dir",
    "device",
    "recipe",
)


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


def run(args: argparse.Namespace) -> int:
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


def check(args: argparse.Namespace) -> None:
    """Every check of ``gaussport demo`` that needs more than one flag, before any work.

    The parser has checked each flag on its own (its type: range, directory, device, solver name).
    """
    from .. import demo

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
    return {**flags(args), "solvers": "--solver", "nfes": "--nfe", "directory": "--model"}


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
        "recipe": _recipe(args),
    }


def _recipe(args: argparse.Namespace) -> Any:
    """``--recipe``: left out, the model's own recipe; ``none``, no recipe; else the file."""
    from ..demo.digits_demo import DEFAULT_RECIPE

    recipe = getattr(args, "recipe", None)
    if recipe is None:
        return DEFAULT_RECIPE
    return None if recipe == "none" else recipe


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
    from .. import demo

    start = time.perf_counter()
    result = demo.run_digits_demo(**_digits_options(args), disable=args.quiet or None)
    s = result.settings
    print(
        f"gaussport demo: the {s['model']} 8x8-digits model, {s['seeds'][1] - s['seeds'][0] + 1} seeds, "
        f"Karras grid {demo.SIGMA_MAX:g} -> {demo.SIGMA_MIN:g}, device {s['device']}, "
        f"{_threads_label()}"
    )
    if s.get("recipe"):
        print(
            f"tuned recipe: {s['recipe']} (used where it has the solver and NFE; --recipe none: fixed level)"
        )
    print(demo.digits_table(result))
    for path in demo.write_digits_outputs(result, args.out, plots=not args.no_plot):
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - start:.1f} s (exact endpoints {result.reference_seconds:.1f} s)")
    return 0


def _mixture_demo(args: argparse.Namespace) -> int:
    from .. import demo

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


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport demo`` and its flags, each declaring what it accepts (its type or choices)."""
    from ..demo import FRECHET_NOISE, SIGMA_MAX, SIGMA_MIN
    from ..demo._arguments import Device, Directory, Integer, Number, RecipeFile, SolverName

    count, natural = Integer(1), Integer(0)
    demo = subparsers.add_parser(
        "demo",
        help="sample the shipped digits model with and without the analytic warm start",
        description="Sample the shipped 8x8-digits model (or --model DIR) from a fixed set of seeds with "
        "each --solver at each --nfe budget, without and with a teleport (the shipped tuned --recipe's level "
        "and grid where it has the solver and NFE, else --sigma-skip); measure the "
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
        help="noise level to teleport to where the recipe has no entry (or --recipe none); default 2 "
        "(digits: the best level at 6-10 NFE lies in 1-3), "
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
        "--recipe",
        type=RecipeFile(),
        metavar="FILE|none",
        help="a tuned recipe (`gaussport tune`): the teleported run of each solver and NFE it has uses its "
        "level and grid. Default: the model's own (the shipped digits recipe; DIR/digits_recipe.json "
        "with --model DIR, if present); none: the fixed --sigma-skip everywhere",
    )
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
    demo.set_defaults(func=run, check=check)
    return demo
