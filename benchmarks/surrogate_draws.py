"""How many surrogate draws ``sigma_skip="auto"`` needs: the auto sweep's pick against the measured sweep.

``sigma_skip="auto"`` runs the teleport sweep on a surrogate on a few draws (docs/auto-level.md). This
screen separates the two things that can make it miss: the surrogate's bias and its draws. For one
target and surrogate it runs the sweep on the 14 levels of ``benchmarks/auto_level.py`` with the
largest draw count asked for (per draw seed), keeps every draw's squared error, and for each smaller
count picks the level from the first ``n`` draws (the argmin of the RMS error; no teleport unless a
level beats it, as the rule does). Each pick is judged on the measured 1,024-seed sweep of
``auto_level.py`` (its ``_per_seed.npz``): accepted when within 10 % of the sweep's best and not
worse than no teleport.

Surrogates: ``model`` (an analytic target's exact denoiser: no bias at all, draws only),
``departure`` and ``mixture`` (the two forms of :mod:`gaussport.tuning.auto`, from the probe record
auto_level uses: 16 probes x 12 levels, seed 10000, 10 mixture components; ``--probes``,
``--probe-seed`` and ``--components`` change it). The teleport term ``T`` of the mixture form is
added as the rule adds it.

Usage::

    PYTHONPATH=src python benchmarks/surrogate_draws.py --target mixture --surrogate model \\
        --sweep benchmarks/results/auto_level_mixture_per_seed.npz
    PYTHONPATH=src python benchmarks/surrogate_draws.py --target digits --surrogate departure \\
        --sweep OUT/auto_level_per_seed.npz      # written by auto_level.py

Writes ``<out>/surrogate_draws_<target>_<surrogate>.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from auto_level import MIXTURES, NFES, SKIPS, SOLVERS, training_split

import gaussport.digits
from gaussport.evaluation import Evaluator, markdown_table
from gaussport.reference import reference_solve
from gaussport.solvers import get as get_solver
from gaussport.tuning import probe
from gaussport.tuning.auto import _SurrogateDenoiser, _sweep_distances, _teleport_error
from gaussport.tuning.probes import SURROGATE_COMPONENTS


def squared_errors(ev, surrogate, record, solver_name: str, nfe: int, draws: int, seed: int, with_t: bool):
    """``{level: (T, per-draw squared endpoint error)}`` of the sweep on ``surrogate``."""
    gaussian = ev.gaussian
    grid = [float(v) for v in ev.budget(solver_name, nfe).grid]
    top = grid[0]
    x_top = gaussian.sample(draws, top, torch.Generator().manual_seed(seed), dtype=torch.float64)
    x_top = x_top.to(torch.float64)
    reference = reference_solve(surrogate, x_top, grid, steps_per_unit=20)
    distances = _sweep_distances(
        surrogate, gaussian, grid, get_solver(solver_name), "respace", SKIPS, x_top, reference
    )
    return {
        s: (
            _teleport_error(record, gaussian, s, top, grid[-1]) if with_t else 0.0,
            distance.square().numpy(),
        )
        for s, distance in distances.items()
    }


def pick(errors, n: int) -> float:
    totals = {s: t + math.sqrt(sq[:n].mean()) for s, (t, sq) in errors.items()}
    best = min(totals, key=lambda s: (totals[s], -s))
    return best if totals[best] < totals[max(totals)] else max(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("digits", *MIXTURES), default="mixture")
    parser.add_argument("--surrogate", choices=("model", "departure", "mixture"), default="model")
    parser.add_argument("--sweep", type=Path, required=True, help="auto_level.py's _per_seed.npz")
    parser.add_argument("--draws", type=int, nargs="+", default=[16, 64, 128, 256, 512])
    parser.add_argument("--draw-seeds", type=int, nargs="+", default=[10_001, 777])
    parser.add_argument("--probes", type=int, default=16, help="probes per level of the record (auto: 16)")
    parser.add_argument("--probe-seed", type=int, default=10_000, help="the record's probe seed")
    parser.add_argument(
        "--components",
        type=int,
        default=SURROGATE_COMPONENTS,
        help=f"k-means clusters of the record's data mixture (probe's surrogate_components; "
        f"default {SURROGATE_COMPONENTS})",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.target == "digits":
        if args.surrogate == "model":
            parser.error("--surrogate model needs an analytic target (its exact denoiser)")
        ev = gaussport.digits.evaluator(seeds=range(8), disable=True, reference_steps=4)
        data = training_split()
    else:
        target = MIXTURES[args.target]()
        ev = Evaluator(
            target, target.moments(), shape=target.shape, seeds=range(8), model_dtype=torch.float64
        )
        data = target.sample(2000, 0.0, torch.Generator().manual_seed(10_000))
    record = probe(
        ev.denoiser,
        ev.gaussian,
        data,
        seed=args.probe_seed,
        probes=args.probes,
        cache=False,
        surrogate_components=args.components,
    )
    if args.surrogate == "model":
        surrogate = ev.denoiser
    else:
        surrogate = _SurrogateDenoiser(ev.gaussian, record, args.surrogate)
    sweep = np.load(args.sweep)
    start = time.perf_counter()
    rows = []
    for seed in args.draw_seeds:
        accepted = dict.fromkeys(args.draws, 0)
        for solver in SOLVERS:
            for nfe in NFES:
                errors = squared_errors(
                    ev, surrogate, record, solver, nfe, max(args.draws), seed, args.surrogate == "mixture"
                )
                measured = {s: math.sqrt(sweep[f"{solver}|{nfe}|{s:g}"].mean()) for s in SKIPS}
                best = min(measured.values())
                for n in args.draws:
                    level = pick(errors, n)
                    accepted[n] += measured[level] <= 1.1 * best and measured[level] <= measured[80.0]
        rows.append([seed, *(f"{accepted[n]}" for n in args.draws)])
    load = os.getloadavg()
    table = markdown_table(["draw seed", *(f"{n} draws" for n in args.draws)], rows)
    text = (
        f"Cells (of 24) whose pick among the 14 sweep levels is within 10 % of the measured 1,024-seed "
        f"best and not worse than no teleport; target {args.target}, surrogate {args.surrogate}, sweep "
        f"{args.sweep.name}; record: {args.probes} probes per level, seed {args.probe_seed}, "
        f"{args.components} mixture components. Load average "
        f"{load[0]:.2f}; {time.perf_counter() - start:.0f} s.\n\n{table}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if (args.probes, args.probe_seed) == (16, 10_000) else f"_p{args.probes}_s{args.probe_seed}"
    suffix += "" if args.components == SURROGATE_COMPONENTS else f"_k{args.components}"
    (args.out / f"surrogate_draws_{args.target.replace('-', '_')}_{args.surrogate}{suffix}.md").write_text(
        text
    )
    print(text)


if __name__ == "__main__":
    main()
