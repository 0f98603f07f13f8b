"""Low-rank fit at image scale: d = 196,608 (3x256x256), r = 256, without ever forming d x d.

Synthetic data with a planted spectrum, generated on the fly in batches from a fixed seed (every
pass regenerates the same samples): ``x = mu + U diag(sqrt(lam)) z + sigma_iso * noise`` with ``U``
the Q factor of a random ``[d, r]`` Gaussian matrix. Measured: wall time and peak resident memory
of each sketch variant (single pass, 1 and 2 power iterations), the largest principal angle of the
recovered top-r subspace to the planted one and to the 2-iteration fit (the sketch error; the exact
sample covariance is out of reach at this d), the planted variance captured, eigenvalue errors, the
residual variance, and the teleport ``Gaussian.flow(x, 80, 2)`` per batch of 16 (first call, which
casts the eigenvectors to float32 once, and the median of the following calls).

Run under the heavy lock (one thread)::

    OMP_NUM_THREADS=1 flock /tmp/gaussport-heavy.lock python benchmarks/scale_lowrank.py [--n 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from gaussport.analytic import fit_low_rank

SHAPE = (3, 256, 256)
SEED = 20261206


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


class PeakRSS:
    """The peak resident memory during a ``with`` block, sampled every 5 ms by a thread."""

    def __enter__(self) -> PeakRSS:
        self.peak = rss_gb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_gb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gb())


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest principal angle between two orthonormal [d, r] bases (float64), O(d r^2)."""
    b = b.to(torch.float64)
    return float(torch.asin(torch.linalg.matrix_norm(b - a @ (a.T @ b), ord=2).clamp(max=1.0)))


def planted(d: int, r: int, sigma_iso: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    u = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64)).Q.to(torch.float32)
    lam = torch.logspace(0, -2, r, dtype=torch.float64)  # 1 .. 0.01, geometric
    mu = 0.1 * torch.randn(d, generator=gen, dtype=torch.float32)
    return u, lam, mu


def make_batches(u: torch.Tensor, lam: torch.Tensor, mu: torch.Tensor, n: int, batch: int, sigma_iso: float):
    d, r = u.shape
    root = lam.sqrt().to(torch.float32)

    def batches():
        for i, start in enumerate(range(0, n, batch)):
            b = min(batch, n - start)
            gen = torch.Generator().manual_seed(SEED + 1 + i)
            z = torch.randn(b, r, generator=gen)
            x = torch.addmm(mu, z * root, u.T)
            x += sigma_iso * torch.randn(b, d, generator=gen)
            yield x.reshape(b, *SHAPE)

    return batches


def accuracy(out: Path) -> None:
    """Sketch error of each variant against the exact (dense) sample covariance, at small d.

    Two data sets: a synthetic power-law spectrum ``lam_j = j^-1`` (no gap anywhere: the hard
    case; d = 1,024, n = 2,048, r = 32) and the digits test split (d = 64, [-1, 1], r = 8). Errors:
    the largest principal angle of the top-r subspace, the largest relative eigenvalue error, and the
    variance deficit ``1 - tr(U^T C U) / (lam_1 + ... + lam_r)`` (0: the fitted subspace captures as
    much variance as the exact top-r one). Medians over 5 seeds of the test matrix.
    """
    from gaussport.analytic import Gaussian
    from gaussport.analytic.sketch import largest_principal_angle
    from gaussport.digits import load_digits_test_set

    gen = torch.Generator().manual_seed(SEED)
    d, n = 1024, 2048
    u = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64)).Q
    lam = 1.0 / torch.arange(1, d + 1, dtype=torch.float64)
    synthetic = (torch.randn(n, d, generator=gen, dtype=torch.float64) * lam.sqrt()) @ u.T
    digits = load_digits_test_set().pixels.to(torch.float64).reshape(-1, 64) / 8.0 - 1.0
    rows = []
    for name, data, rank in (("power law d=1024", synthetic, 32), ("digits d=64", digits, 8)):
        dense = Gaussian.fit(data, representation="dense")
        ev, evec = dense.cov.eigenvalues, dense.cov.eigenvectors
        for method, passes in (
            ("randomized", 0),
            ("randomized", 1),
            ("randomized", 2),
            ("krylov", 1),
            ("krylov", 2),
        ):
            angles, errs, deficits = [], [], []
            for seed in range(5):
                g = fit_low_rank(
                    lambda data=data: data.split(256),
                    rank=rank,
                    passes=passes,
                    method=method,
                    generator=torch.Generator().manual_seed(seed),
                    disable=True,
                )
                angles.append(largest_principal_angle(g.cov.eigenvectors, evec[:, :rank]))
                errs.append(float(((g.cov.eigenvalues - ev[:rank]) / ev[:rank]).abs().max()))
                # The variance the fitted subspace captures, against the best possible (top-r).
                u_hat = g.cov.eigenvectors
                captured = float((u_hat * dense.cov.apply(u_hat.T, lambda x: x).T).sum())
                deficits.append(1.0 - captured / float(ev[:rank].sum()))
            rows.append(
                {
                    "data": name,
                    "n": data.shape[0],
                    "rank": rank,
                    "method": method,
                    "data_passes": passes + 1,
                    "angle_median": statistics.median(angles),
                    "angle_max": max(angles),
                    "eig_rel_err_median": statistics.median(errs),
                    "variance_deficit_median": statistics.median(deficits),
                    "gap_lam_l1_over_lam_r": float(ev[min(rank + 10, ev.numel() - 1)] / ev[rank - 1]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"loadavg": os.getloadavg(), "rows": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="number of samples")
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sigma-iso", type=float, default=3e-3)
    parser.add_argument("--passes", type=int, nargs="+", default=[2, 1, 0], help="most passes first")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale_lowrank.json")
    parser.add_argument("--accuracy", action="store_true", help="only the small-d accuracy table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.accuracy:
        accuracy(args.out.with_name("scale_lowrank_accuracy.json"))
        return
    d = 1
    for s in SHAPE:
        d *= s
    load = os.getloadavg()
    u_true, lam, mu = planted(d, args.rank, args.sigma_iso)
    batches = make_batches(u_true, lam, mu, args.n, args.batch, args.sigma_iso)
    base_rss = rss_gb()
    population = lam + args.sigma_iso**2
    rows = []
    best = None
    for passes in args.passes:
        with PeakRSS() as peak:
            start = time.perf_counter()
            g = fit_low_rank(
                batches,
                rank=args.rank,
                passes=passes,
                generator=torch.Generator().manual_seed(0),
                disable=True,
            )
            seconds = time.perf_counter() - start
        u_hat, lam_hat = g.cov.eigenvectors, g.cov.eigenvalues
        row = {
            "passes": passes,
            "data_passes": passes + 1,
            "seconds": seconds,
            "fit_peak_rss_gb": peak.peak,
            "fit_extra_rss_gb": peak.peak - base_rss,
            "angle_to_planted": angle(u_hat, u_true),
            # The fraction of the planted variance the fitted subspace holds (1 = all of it).
            "captured_planted_variance": float(((u_hat.T @ u_true.double()) ** 2).sum(0) @ lam / lam.sum()),
            "eig_rel_err_vs_planted_median": float(((lam_hat - population) / population).abs().median()),
            "eig_rel_err_vs_planted_max": float(((lam_hat - population) / population).abs().max()),
            "residual": g.cov.residual,
        }
        if best is None:
            best = g
        else:
            row["angle_to_most_passes"] = angle(u_hat, best.cov.eigenvectors)
            row["eig_rel_err_vs_most_passes"] = float(
                ((lam_hat - best.cov.eigenvalues) / best.cov.eigenvalues).abs().max()
            )
        del g, u_hat
        rows.append(row)
        print(json.dumps(row), flush=True)
    assert best is not None
    # The teleport per batch of 16, float32 state.
    x = 80.0 * torch.randn((16, *SHAPE), generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    best.flow(x, 80.0, 2.0)
    first = time.perf_counter() - start
    times = []
    for _ in range(5):
        start = time.perf_counter()
        best.flow(x, 80.0, 2.0)
        times.append(time.perf_counter() - start)
    result = {
        "d": d,
        "rank": args.rank,
        "n": args.n,
        "batch": args.batch,
        "sigma_iso": args.sigma_iso,
        "planted": "lam_j = logspace(0, -2, r), U = Q of a random [d, r] Gaussian",
        "threads": torch.get_num_threads(),
        "loadavg_start": load,
        "loadavg_end": os.getloadavg(),
        "rss_before_fit_gb": base_rss,
        "note": "rss_before_fit includes the planted U (float32, d x r) used to generate the data",
        "variants": rows,
        "teleport_first_s": first,
        "teleport_median_s": statistics.median(times),
        "peak_rss_gb": peak_rss_gb(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
