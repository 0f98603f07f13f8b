"""``gaussport info``: what a statistics file holds, its spectrum in numbers and as a plot."""

from __future__ import annotations

import argparse
import importlib.util
import io
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .fit import STATS_SUFFIXES

__all__ = ["add_parser", "check", "run", "spectrum_summary"]

DENSE_RANKS = (16, 64, 256)
TOP = 8


def spectrum_summary(spectrum: Tensor, ranks: tuple[int, ...]) -> dict[str, Any]:
    """Numbers that describe a covariance spectrum (all ``d`` eigenvalues, descending, float64).

    ``effective_rank`` is the participation ratio ``(sum lam)^2 / sum lam^2``: ``k`` for ``k`` equal
    eigenvalues and zeros, between 1 and ``d`` in general. ``explained[r]`` is the fraction of the
    total variance (the trace) in the top ``r`` eigenvalues.
    """
    lam = spectrum.to(torch.float64)
    trace = float(lam.sum())
    squares = float((lam * lam).sum())
    cumulative = torch.cumsum(lam, 0)
    explained = {r: float(cumulative[min(r, lam.numel()) - 1]) / trace if trace > 0 else 1.0 for r in ranks}
    return {
        "top": [float(v) for v in lam[:TOP]],
        "trace": trace,
        "effective_rank": trace * trace / squares if squares > 0 else 0.0,
        "explained": explained,
        "smallest": float(lam[-1]),
    }


def check(args: argparse.Namespace) -> None:
    """``--plot`` needs matplotlib (checked before the file is read)."""
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install 'gaussport[plot]', or drop --plot.")


def run(args: argparse.Namespace) -> int:
    from ..analytic import Gaussian

    gaussian = Gaussian.load(args.stats)
    cov = gaussian.cov
    rank = getattr(cov, "rank", None)
    spectrum = cov.spectrum()
    ranks = (
        (rank,) if rank is not None else tuple(r for r in DENSE_RANKS if r < gaussian.dim) or (gaussian.dim,)
    )
    summary = spectrum_summary(spectrum, ranks)
    lines = [
        f"file            {args.stats}",
        f"shape           {list(gaussian.shape)} (d = {gaussian.dim})",
        f"samples (N)     {gaussian.n_samples if gaussian.n_samples is not None else 'unknown'}",
        f"representation  {gaussian.representation}"
        + (f", rank {rank}, residual variance {cov.residual:.4g}" if rank is not None else ""),  # type: ignore[attr-defined]
        f"values          {gaussian.scale or 'unknown'}",
        f"source          {gaussian.source or 'unknown'}",
        f"mean            {float(gaussian.mean.mean()):.4g} on average, range "
        f"[{float(gaussian.mean.min()):.4g}, {float(gaussian.mean.max()):.4g}]",
        f"top eigenvalues {', '.join(f'{v:.4g}' for v in summary['top'])}",
        f"smallest        {summary['smallest']:.4g}",
        f"trace           {summary['trace']:.6g} (total variance; "
        f"{summary['trace'] / gaussian.dim:.4g} per dimension)",
        f"effective rank  {summary['effective_rank']:.1f} (participation ratio (sum lam)^2 / sum lam^2)",
    ]
    explained = ", ".join(f"{100 * v:.1f}% at rank {r}" for r, v in summary["explained"].items())
    lines.append(f"explained       {explained} (share of the trace in the top eigenvalues)")
    print("\n".join(lines))
    if args.plot is not None:
        _plot(spectrum, rank, args)
        print(f"wrote {args.plot}")
    return 0


def _plot(spectrum: Tensor, rank: int | None, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._files import atomic_writer

    lam = spectrum.numpy()
    index = np.arange(1, len(lam) + 1)
    fig, left = plt.subplots(figsize=(6.4, 4.0))
    try:
        positive = lam > 0
        left.loglog(np.flatnonzero(positive) + 1, lam[positive], color="C0", label="eigenvalue")
        left.set_xlabel("index (descending)")
        left.set_ylabel("eigenvalue", color="C0")
        right = left.twinx()
        right.semilogx(index, lam.cumsum() / max(lam.sum(), 1e-300), color="C1", label="explained variance")
        right.set_ylabel("explained variance (cumulative)", color="C1")
        right.set_ylim(0, 1.02)
        if rank is not None:
            left.axvline(rank, color="0.5", linestyle=":", label=f"rank {rank}")
        left.set_title(f"spectrum of {args.stats.name}")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)  # made completely before the target is opened
    finally:
        plt.close(fig)
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(args.plot) as f:
        f.write(buffer.getvalue())


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport info`` and its flags."""
    from ..demo._arguments import InputFile, OutputFile

    info = subparsers.add_parser(
        "info",
        help="describe a statistics file: shape, N, representation, spectrum; optionally plot it",
        description="Print what a statistics file (written by `gaussport fit` or Gaussian.save) holds: "
        "the data shape, the number of samples N, the representation and rank, the value scale and "
        "source, the top eigenvalues, the trace, the effective rank (participation ratio) and the "
        f"share of the variance explained at the stored rank (dense and diagonal: at ranks "
        f"{', '.join(map(str, DENSE_RANKS))}). --plot writes the spectrum and the cumulative explained "
        "variance as a PNG (needs matplotlib: pip install 'gaussport[plot]').",
    )
    info.add_argument(
        "stats",
        type=InputFile(STATS_SUFFIXES, "statistics"),
        metavar="STATS",
        help="a .safetensors or .npz file",
    )
    info.add_argument(
        "--plot", type=OutputFile((".png",), "plot"), metavar="PNG", help="write the spectrum plot here"
    )
    info.set_defaults(func=run, check=check)
    return info
