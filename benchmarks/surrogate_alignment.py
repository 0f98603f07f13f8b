"""How much of the digits network's departure from its Gaussian a data mixture explains, per level.

For probes ``x = x0 + sigma * eps`` (64 training rows, seed 10000; the probe design of
:func:`gaussport.tuning.probe`) it reports the correlation over probes and coordinates of
``D - D_G`` (network minus warm-start Gaussian) with ``D_M - D_G`` for four data mixtures ``D_M``:
the k-means surrogate ``sigma_skip="auto"`` fits (10 diagonal components), full-covariance
k-means mixtures with 10 and 50 clusters, and the training set itself (the exact "memorising"
denoiser), and the size ratio ``|D_M - D_G| / |D - D_G|``. A correlation near 0 means the network's
departure at that level is not the data's structure but the network's own error, which no data
surrogate carries (docs/benchmarks.md#sigma_skipauto-against-the-full-sweep).

Usage: ``PYTHONPATH=src python benchmarks/surrogate_alignment.py`` (about 10 s, one thread). Writes
``benchmarks/results/surrogate_alignment.md``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from auto_level import training_split

import gaussport.digits
from gaussport.analytic import EmpiricalMixture
from gaussport.analytic.mixture import fit_kmeans_mixture
from gaussport.evaluation import markdown_table
from gaussport.tuning.probes import DEFAULT_LEVELS, fit_surrogate

PROBES = 64


def main() -> None:
    torch.set_num_threads(1)
    denoiser = gaussport.digits.load_digits_denoiser()
    gaussian = gaussport.digits.load_digits_gaussian()
    data = training_split()
    flat = data.flatten(1)
    mixtures = {
        "k-means 10, diagonal (the surrogate)": fit_surrogate(data, seed=10_000).mixture(),
        "k-means 10, full": fit_kmeans_mixture(flat, 10, generator=torch.Generator().manual_seed(0)),
        "k-means 50, full": fit_kmeans_mixture(flat, 50, generator=torch.Generator().manual_seed(0)),
        "training set": EmpiricalMixture(data),
    }
    gen = torch.Generator().manual_seed(10_000)
    x0 = data[torch.randint(0, data.shape[0], (PROBES,), generator=gen)]
    rows = []
    for level in DEFAULT_LEVELS:
        x = x0 + level * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        sigma = torch.full((PROBES,), level, dtype=torch.float64)
        with torch.no_grad():
            d = denoiser(x.float(), sigma.float()).double().flatten(1)
        departure = d - gaussian(x, sigma).flatten(1)
        row = [f"{level:.3g}"]
        for name, mixture in mixtures.items():
            arg = (
                x
                if isinstance(mixture, EmpiricalMixture) or name.endswith("(the surrogate)")
                else x.flatten(1)
            )
            other = mixture(arg, sigma).flatten(1) - gaussian(x, sigma).flatten(1)
            rho = float((departure * other).sum() / (departure.norm() * other.norm()))
            row.append(f"{rho:.2f} ({float(other.norm() / departure.norm()):.2f})")
        rows.append(row)
    text = (
        f"Digits network, {PROBES} probes x0 + sigma eps per level (training rows, seed 10000). Cell: "
        "correlation of D - D_G with D_M - D_G (size ratio |D_M - D_G| / |D - D_G|).\n\n"
        + markdown_table(["sigma", *mixtures], rows)
        + "\n"
    )
    out = Path(__file__).parent / "results" / "surrogate_alignment.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
