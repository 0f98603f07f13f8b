"""``gaussport tune``: a tuned sampling recipe (teleport level and grid per solver and NFE) for a model."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from typing import Any

__all__ = [
    "DEFAULT_NFES",
    "DEFAULT_SOLVERS",
    "FIRST_TUNING_SEED",
    "FIRST_VALIDATION_SEED",
    "add_parser",
    "run",
]

DEFAULT_SOLVERS = ("dpmpp_2m", "unipc_bh2", "ipndm", "dpm_solver_v3")
DEFAULT_NFES = (3, 4, 5, 6, 8, 10)
# Tuning and validation seeds lie apart from the seeds results are reported on (0, 1, ...).
FIRST_TUNING_SEED = 10_000
FIRST_VALIDATION_SEED = 20_000


def check(args: argparse.Namespace) -> None:
    """The flags together, before any model is loaded."""
    from ..solvers import get as get_solver
    from ..tuning.tune import _levels_for

    for name in args.solver:
        solver = get_solver(name)
        if not any(_levels_for(solver, n) is not None for n in args.nfe):
            raise ValueError(
                f"--solver {name} cannot spend any of the budgets --nfe {' '.join(map(str, args.nfe))} "
                "exactly (Heun-type solvers make 2n - 1 evaluations: give odd budgets)."
            )


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import digits
    from ..sampling import load_statistics
    from ..tuning import tune

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        start = time.perf_counter()
        net = digits.load_digits_denoiser(device=args.device, directory=args.model)
        gaussian = (
            load_statistics(args.statistics)
            if args.statistics is not None
            else digits.load_digits_gaussian(directory=args.model)
        )
        command = "gaussport " + " ".join(shlex.quote(w) for w in getattr(args, "argv", ["tune"]))
        recipe = tune(
            net,
            gaussian,
            shape=(1, 8, 8),
            solvers=list(dict.fromkeys(args.solver)),
            nfes=sorted(set(args.nfe)),
            seeds=range(FIRST_TUNING_SEED, FIRST_TUNING_SEED + args.seeds),
            validation_seeds=range(FIRST_VALIDATION_SEED, FIRST_VALIDATION_SEED + args.validation_seeds),
            method=args.method,
            max_evaluations=args.max_evaluations,
            reference_steps=args.reference_steps,
            device=args.device,
            provenance={
                "command": command.strip(),
                "model_files": "shipped digits model" if args.model is None else os.fspath(args.model),
                "statistics_file": None if args.statistics is None else os.fspath(args.statistics),
                "threads": args.threads,
            },
            disable=args.quiet or None,
        )
        os.makedirs(args.out.parent, exist_ok=True)
        recipe.save(args.out)
    finally:
        torch.set_num_threads(previous)
    cells = recipe.provenance.get("cells", {})
    seconds = time.perf_counter() - start
    print(f"gaussport tune: {len(recipe.entries)} entries in {seconds:.0f} s; wrote {args.out}")
    print("solver          NFE  sigma_skip  grid   error (tuning)  error (validation)")
    for e in recipe.entries:
        cell = cells.get(f"{e.solver}@{e.nfe}", {})
        kind = cell.get("chosen", "")
        validation = cell.get(kind, {}).get("validation_error") if kind else None
        v = "-" if validation is None else f"{validation:.4g}"
        print(f"{e.solver:15s} {e.nfe:4d}  {e.sigma_skip:10.4g}  {kind:6s} {e.error:14.4g}  {v:>18s}")
    print(
        f"use it with: gaussport demo --recipe {args.out}, or gaussport.sample(..., recipe={str(args.out)!r})"
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport tune`` and its flags, each declaring what it accepts (its type or choices)."""
    from ..demo._arguments import Directory, InputFile, Integer, OutputFile, SolverName
    from ..tuning.tune import METHODS
    from ._common import add_model_run_flags

    tune = subparsers.add_parser(
        "tune",
        help="tune the teleport level and grid per solver and NFE on reference trajectories",
        description="Tune a sampling recipe for the digits model (the shipped one, or --model DIR): for "
        "each --solver at each --nfe budget, the level to teleport to and the solver's grid below it. "
        "Reference trajectories are exact ODE solves (RK4 in log sigma) from --seeds tuning seeds "
        f"({FIRST_TUNING_SEED}, {FIRST_TUNING_SEED + 1}, ...: apart from the seeds results are reported "
        "on); first the best Karras grid (teleport level and rho jointly), then, with --method free, "
        "every level optimised freely (Nelder-Mead in log sigma) to minimise the RMS distance to the "
        f"exact endpoints. --validation-seeds seeds ({FIRST_VALIDATION_SEED}, ...) guard against "
        "fitting the tuning seeds: a free grid that does not beat the Karras grid there too is not "
        "kept. Writes a small JSON recipe (--out) with its provenance; `gaussport demo --recipe FILE` "
        "and gaussport.sample(..., recipe=FILE) read it. About 1 min per solver and budget at the "
        "defaults on one CPU thread. Method and file format: docs/recipes.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument(
        "--solver",
        type=SolverName(),
        nargs="+",
        metavar="NAME",
        default=list(DEFAULT_SOLVERS),
        help=f"registered solver names (default: {' '.join(DEFAULT_SOLVERS)})",
    )
    tune.add_argument(
        "--nfe",
        type=Integer(1, 64),
        nargs="+",
        metavar="N",
        default=list(DEFAULT_NFES),
        help=f"NFE budgets (default: {' '.join(map(str, DEFAULT_NFES))}); a budget a solver cannot spend "
        "exactly (Heun: 2n - 1) is skipped for it",
    )
    tune.add_argument(
        "--seeds", type=Integer(1, 4096), default=32, metavar="N", help="tuning seeds (default 32)"
    )
    tune.add_argument(
        "--validation-seeds",
        type=Integer(0, 4096),
        default=16,
        metavar="N",
        help="validation seeds for the overfitting guard (default 16; 0: no guard)",
    )
    tune.add_argument(
        "--method",
        choices=METHODS,
        default="free",
        help="free (default): every level optimised; family: the best Karras grid only (cheaper)",
    )
    tune.add_argument(
        "--max-evaluations",
        type=Integer(0, 100_000),
        default=120,
        metavar="K",
        help="optimiser runs per solver and budget, each sampling the tuning seeds once (default 120)",
    )
    tune.add_argument(
        "--reference-steps",
        type=Integer(1, 1000),
        default=10,
        metavar="K",
        help="RK4 steps per unit of log sigma of the reference solves (default 10)",
    )
    tune.add_argument(
        "--model",
        type=Directory("model"),
        metavar="DIR",
        help="a model written by `gaussport train-demo --out DIR`",
    )
    tune.add_argument(
        "--statistics",
        type=InputFile((".safetensors", ".npz"), "statistics"),
        metavar="FILE",
        help="the warm-start Gaussian (a `gaussport fit` file); default: the model's own",
    )
    tune.add_argument(
        "-o",
        "--out",
        type=OutputFile((".json",), "recipe"),
        default="recipe.json",
        metavar="FILE",
        help="the recipe to write (default recipe.json); replaced atomically if it exists",
    )
    add_model_run_flags(tune)
    tune.set_defaults(func=run, check=check)
    return tune
