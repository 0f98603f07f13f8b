"""DPM-Solver-v3 benchmarks: solver comparison, accuracy facts, EMS cost (docs/benchmarks-v3.md).

Usage::

    python benchmarks/v3.py solvers   [--problem mixture|digits-mixture|digits|all] [--quick]
    python benchmarks/v3.py accuracy  # exact-EMS floor, DPM-Solver++ reduction, mid-start, orders, estimator
    python benchmarks/v3.py cost      # seconds to build analytic EMS vs the estimator's per-sample cost
    python benchmarks/v3.py all

Results go to ``benchmarks/results/v3_<part>.json`` (and ``.md`` tables, ``.png`` plots when
matplotlib is installed). Errors are measured against a high-accuracy reference endpoint
(:func:`gaussport.reference_solve`, RK4 in lambda) with the same final step ``x = D(x, sigma_min)``,
so they isolate solver error. Every run compares solvers measured in the same process.

The solver list is taken from ``gaussport.solvers.available()``: besides Euler and Heun it picks up
``dpmpp_*``, ``ddim`` and ``unipc*`` solvers when they are registered, and the trained digits model
when ``gaussport.digits`` can be imported -- rerun after those land.
"""

from __future__ import annotations

import os

# Shared cores: spinning OpenMP workers stall each other under contention. Set before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

import gaussport  # noqa: E402
from gaussport import grids  # noqa: E402
from gaussport.analytic import Dense, Gaussian, LowRankPlusIsotropic, anisotropic_mixture  # noqa: E402
from gaussport.ems import EMS, EMSEstimator, analytic_ems, estimate_ems  # noqa: E402
from gaussport.testing import anisotropic_gaussian, measured_order  # noqa: E402

RESULTS = Path(__file__).parent / "results"
NFES = (4, 5, 6, 8, 10, 12, 15, 20)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the batch of ||a - b|| / ||b||."""
    return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).mean())


def _environment() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "load_average": load,
    }


def _write(part: str, payload: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"environment": _environment(), "command": " ".join(sys.argv), **payload}
    (RESULTS / f"v3_{part}.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / f"v3_{part}.md").write_text(markdown)
    print(markdown)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4) else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ============================================================================ solver comparison
def _solver_configs(ems_sets: dict[str, EMS]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registry name, options) for every solver to compare: v3 with each EMS, then every
    other registered solver (Euler, Heun, and DPM-Solver++ / UniPC / ... when they are registered)."""
    configs = [(f"v3 ({label})", "dpm_solver_v3", {"ems": ems}) for label, ems in ems_sets.items()]
    for name in gaussport.solvers.available():
        if name != "dpm_solver_v3" and not name.startswith("_"):
            configs.append((name, name, {}))
    return configs


FAMILIES = {"Karras rho=7": grids.KarrasFamily(7.0), "logSNR-uniform": grids.ExponentialFamily()}


def _grid(nfe: int, solver: str, family: grids.GridFamily) -> tuple[float, ...] | None:
    """The grid of ``family`` (ending in 0) on which ``solver`` makes exactly ``nfe`` evaluations."""
    instance = gaussport.solvers.get(solver)
    for steps in range(nfe, 0, -1):
        grid = family(steps, SIGMA_MIN, SIGMA_MAX)  # steps intervals, the last one to 0
        if instance.evaluations(grid) == nfe:
            return grid
    return None


def compare_solvers(
    name: str,
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    gaussian: Gaussian,
    x: torch.Tensor,
    data: Any,
    sigma_skip: float,
    estimator_samples: tuple[int, ...],
    estimator_intervals: int,
    model_dtype: torch.dtype,
    surrogate: Any = None,
) -> tuple[dict[str, Any], str]:
    """Error vs NFE for every solver, without and with teleportation to ``sigma_skip``."""
    start = time.perf_counter()
    ref_grid = grids.karras(10, SIGMA_MIN, SIGMA_MAX)
    reference = gaussport.reference_solve(denoiser, x, ref_grid, dtype=torch.float64, model_dtype=model_dtype)
    ref_seconds = time.perf_counter() - start

    ems_sets: dict[str, EMS] = {}
    build: dict[str, float] = {}
    start = time.perf_counter()
    ems_sets["analytic"] = analytic_ems(gaussian, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=1200)
    build["analytic"] = time.perf_counter() - start
    for k in estimator_samples:
        start = time.perf_counter()
        ems_sets[f"estimated K={k}"] = estimate_ems(
            denoiser,
            data,
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
            intervals=estimator_intervals,
            samples=k,
            batch_size=min(k, 256),
            dtype=model_dtype,
            disable=True,
        )
        build[f"estimated K={k}"] = time.perf_counter() - start
    if surrogate is not None:
        # EMS of an analytic mixture fitted to the data, estimated without a single network call.
        start = time.perf_counter()
        ems_sets["mixture surrogate K=1024"] = estimate_ems(
            surrogate,
            lambda n, gen: surrogate.sample(n, 0.0, gen, dtype=torch.float64),
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
            intervals=estimator_intervals,
            samples=1024,
            batch_size=256,
            dtype=torch.float64,
            disable=True,
        )
        build["mixture surrogate K=1024"] = time.perf_counter() - start
    ems_sets["degenerate"] = EMS.degenerate((1,) * (x.ndim - 1), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    build["degenerate"] = 0.0

    rows: list[dict[str, Any]] = []
    for (family_name, family), (label, solver, options), teleport, nfe in itertools.product(
        FAMILIES.items(), _solver_configs(ems_sets), (False, True), NFES
    ):
        grid = _grid(nfe, solver, family)
        if grid is None:
            continue
        t0 = time.perf_counter()
        if teleport:
            sol = gaussport.sample(
                denoiser,
                x,
                grid,
                solver,
                warm_start=gaussian,
                sigma_skip=sigma_skip,
                teleport="respace",
                dtype=torch.float64,
                model_dtype=model_dtype,
                disable=True,
                **options,
            )
        else:
            sol = gaussport.solve(
                denoiser,
                x,
                grid,
                solver,
                dtype=torch.float64,
                model_dtype=model_dtype,
                disable=True,
                **options,
            )
        rows.append(
            {
                "grid": family_name,
                "solver": label,
                "teleport": teleport,
                "nfe": sol.nfe,
                "error": _rel(sol.x, reference),
                "seconds": time.perf_counter() - t0,
            }
        )
    payload = {
        "problem": name,
        "batch": x.shape[0],
        "sigma_skip": sigma_skip,
        "reference_seconds": ref_seconds,
        "ems_build_seconds": build,
        "estimator_intervals": estimator_intervals,
        "rows": rows,
    }
    return payload, _solver_markdown(payload)


def _solver_markdown(payload: dict[str, Any]) -> str:
    rows = payload["rows"]
    labels = list(dict.fromkeys(r["solver"] for r in rows))
    nfes = sorted({r["nfe"] for r in rows})
    out = [f"### {payload['problem']}: relative error vs NFE (sigma {SIGMA_MAX} -> {SIGMA_MIN} -> 0)\n"]
    for family, teleport in itertools.product(FAMILIES, (False, True)):
        title = f"with teleport to sigma = {payload['sigma_skip']}" if teleport else "without teleport"
        out.append(
            f"\n**{family} grid, {title}** (batch {payload['batch']}; "
            "mean relative L2 error against the reference endpoint)\n\n"
        )
        table = []
        for label in labels:
            by_nfe = {
                r["nfe"]: r["error"]
                for r in rows
                if r["solver"] == label and r["teleport"] == teleport and r["grid"] == family
            }
            table.append([label] + [by_nfe.get(n, "") for n in nfes])
        out.append(_table(["solver"] + [f"NFE {n}" for n in nfes], table))
    build = ", ".join(f"{k}: {v:.2f}" for k, v in payload["ems_build_seconds"].items())
    out.append(f"\nEMS build time (s): {build} (estimator grid N = {payload['estimator_intervals']})\n")
    return "".join(out)


def _plot(payloads: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    panels = [(p, f) for p in payloads for f in FAMILIES]
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.6 * len(panels)), squeeze=False)
    for row, (payload, family) in enumerate(panels):
        for col, teleport in enumerate((False, True)):
            ax = axes[row][col]
            for label in dict.fromkeys(r["solver"] for r in payload["rows"]):
                pts = sorted(
                    (r["nfe"], r["error"])
                    for r in payload["rows"]
                    if r["solver"] == label and r["teleport"] == teleport and r["grid"] == family
                )
                style = "-" if label.startswith("v3") else "--"
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3, label=label)
            kind = "with teleport" if teleport else "without teleport"
            ax.set_title(f"{payload['problem']}, {family}, {kind}", fontsize=9)
            ax.set_xlabel("NFE")
            ax.set_ylabel("relative error")
            ax.grid(True, which="both", alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mixture_comparison(
    name: str, mixture: Any, gaussian: Gaussian, shape: tuple[int, ...], quick: bool
) -> tuple[dict[str, Any], str]:
    """Every solver on an exact mixture target (float64, seed 0 noise at SIGMA_MAX, teleport to 5)."""
    gen = torch.Generator().manual_seed(0)
    x = SIGMA_MAX * torch.randn(64 if quick else 256, *shape, generator=gen, dtype=torch.float64)

    def data(n: int, gen: torch.Generator) -> torch.Tensor:
        return mixture.sample(n, 0.0, gen, dtype=torch.float64)

    return compare_solvers(
        name,
        mixture,
        gaussian,
        x,
        data,
        sigma_skip=5.0,
        estimator_samples=(64,) if quick else (64, 1024),
        estimator_intervals=120,
        model_dtype=torch.float64,
    )


def mixture_problem(quick: bool) -> tuple[dict[str, Any], str]:
    mixture = anisotropic_mixture(dim=64, n_components=8, seed=0)
    name = "Gaussian mixture (d = 64, 8 components)"
    return _mixture_comparison(name, mixture, mixture.moments(), (64,), quick)


def digits_mixture_problem(quick: bool) -> tuple[dict[str, Any], str] | None:
    """The class-conditional Gaussian mixture of the 8x8 digits as an exact stand-in for a trained model.

    Real-data statistics without a network: the target is the mixture of the ten per-class
    Gaussians fitted (float64) to scikit-learn's digits in [-1, 1]; the warm start and the analytic
    EMS use the single Gaussian fitted to the same images, as they would for a trained model.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("[digits-mixture] skipped: scikit-learn is not installed")
        return None
    import warnings

    from gaussport.analytic import GaussianMixture

    digits = load_digits()
    images = (torch.as_tensor(digits.images, dtype=torch.float64) / 8.0 - 1.0).unsqueeze(1)
    labels = torch.as_tensor(digits.target)
    with warnings.catch_warnings():  # round-off negative eigenvalues of the rank-deficient fits
        warnings.simplefilter("ignore")
        gaussian = Gaussian.fit(images, source="sklearn digits, all 1797 images")
        mixture = GaussianMixture([Gaussian.fit(images[labels == k]) for k in range(10)])
    return _mixture_comparison(
        "digits class mixture (10 Gaussians fitted to the 8x8 digits)", mixture, gaussian, (1, 8, 8), quick
    )


def digits_problem(quick: bool) -> tuple[dict[str, Any], str] | None:
    try:
        from gaussport.digits import (
            load_digits_class_gaussians,
            load_digits_denoiser,
            load_digits_gaussian,
            load_digits_test_set,
            pixels_to_model,
        )

        net = load_digits_denoiser()
        gaussian = load_digits_gaussian()
        test = load_digits_test_set()
        classes = load_digits_class_gaussians()
    except Exception as exc:  # noqa: BLE001 -- the model lands on another branch
        print(f"[digits] skipped: gaussport.digits is not available ({type(exc).__name__}: {exc})")
        return None
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().images)
    keep = torch.ones(pixels.shape[0], dtype=torch.bool)
    keep[torch.as_tensor(test.indices)] = False
    train = pixels_to_model(pixels[keep]).unsqueeze(1).float()  # the training split, [M, 1, 8, 8]
    batch = 32 if quick else 128
    x = SIGMA_MAX * torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    def denoiser(xx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return net(xx, s)

    return compare_solvers(
        "digits model (8x8, trained)",
        denoiser,
        gaussian,
        x,
        train,
        sigma_skip=5.0,
        estimator_samples=(64,) if quick else (64, 512),
        estimator_intervals=120,
        model_dtype=torch.float32,
        surrogate=classes,
    )


def run_solvers(problem: str, quick: bool) -> None:
    payloads, parts = [], []
    if problem in ("mixture", "all"):
        p, md = mixture_problem(quick)
        payloads.append(p)
        parts.append(md)
    if problem in ("digits-mixture", "all"):
        result = digits_mixture_problem(quick)
        if result is not None:
            payloads.append(result[0])
            parts.append(result[1])
    if problem in ("digits", "all"):
        result = digits_problem(quick)
        if result is not None:
            payloads.append(result[0])
            parts.append(result[1])
    RESULTS.mkdir(exist_ok=True)
    suffix = problem
    _plot(payloads, RESULTS / f"v3_solvers_{suffix}.png")
    _write(f"solvers_{suffix}", {"problems": payloads}, "\n".join(parts))


# ============================================================================ accuracy facts
def independent_gaussian() -> Gaussian:
    """16 independent dimensions, mu ~ 0.5 N(0, 1), s_d log-spaced in [0.05, 2].

    The test problem of docs/ems.md#the-16-dimensional-test-problem."""
    gen = torch.Generator().manual_seed(0)
    mu = 0.5 * torch.randn(16, generator=gen, dtype=torch.float64)
    return Gaussian.diagonal(
        mu, torch.logspace(math.log10(0.05), math.log10(2.0), 16, dtype=torch.float64) ** 2
    )


def _dpmpp_taylor(g: Gaussian, x: torch.Tensor, sigmas: tuple[float, ...], order: int) -> torch.Tensor:
    prev = None
    for s, t in zip(sigmas, sigmas[1:], strict=False):
        d = g(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        h = math.log(s / t)
        phi1 = math.expm1(-h)
        x_next = (t / s) * x - phi1 * d
        if order == 2 and prev is not None:
            x_next = x_next + (phi1 / h + 1.0) * (d - prev[1]) / (math.log(prev[0] / s) / h)
        prev, x = (s, d), x_next
    return x


def run_accuracy() -> None:
    payload: dict[str, Any] = {}
    md = ["## DPM-Solver-v3 accuracy facts\n"]
    g = independent_gaussian()
    x = g.sample(8, SIGMA_MAX, torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = g.flow(x, SIGMA_MAX, SIGMA_MIN)

    # (a) exact EMS: the quadrature floor vs N and rule.
    rows = []
    for n in (300, 1200, 4800):
        ems = analytic_ems(g, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=n)
        for rule in ("exponential", "trapezoid"):
            errs = []
            for steps in (5, 10, 20, 50, 100):
                sig = grids.exponential(steps + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False)
                sol = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, quadrature=rule, disable=True)
                errs.append(_rel(sol.x, exact))
            rows.append([n, rule] + errs)
    payload["exact_ems"] = rows
    md.append(
        "\n**Exact EMS, 16 independent dimensions (docs/ems.md#the-16-dimensional-test-problem), "
        "logSNR steps 80 -> 0.002** (error vs the closed-form flow):\n\n"
    )
    md.append(_table(["EMS N", "rule", "5 steps", "10", "20", "50", "100"], rows))

    # (b) degenerate v3 vs an independent DPM-Solver++ 'taylor'.
    g2 = anisotropic_gaussian(dim=8)
    x2 = g2.sample(4, SIGMA_MAX, torch.Generator().manual_seed(3), dtype=torch.float64)
    sig = grids.karras(11, SIGMA_MIN, SIGMA_MAX, append_zero=False)
    rows = []
    for order in (1, 2):
        ref = _dpmpp_taylor(g2, x2, sig, order)
        opts = {"solver_order": order, "corrector": None, "lower_order_final": False}
        exp = gaussport.solve(g2, x2, sig, "dpm_solver_v3", ems="degenerate", disable=True, **opts).x
        row = [order, _rel(exp, ref)]
        for n in (1200, 2400, 4800):
            ems = EMS.degenerate((1,), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=n)
            row.append(
                _rel(
                    gaussport.solve(
                        g2, x2, sig, "dpm_solver_v3", ems=ems, quadrature="trapezoid", disable=True, **opts
                    ).x,
                    ref,
                )
            )
        rows.append(row)
    payload["degenerate_vs_dpmpp"] = rows
    md.append(
        "\n**Degenerate v3 vs DPM-Solver++ 'taylor' (independent implementation), 10 Karras steps:**\n\n"
    )
    md.append(_table(["order", "exponential rule", "trapezoid N=1200", "N=2400", "N=4800"], rows))

    # (c) mid-trajectory start.
    full = analytic_ems(g, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=4800)
    skip = 3.0
    sub = analytic_ems(g, sigma_min=SIGMA_MIN, sigma_max=skip, intervals=2400)
    stretched = EMS(full.l, full.s, full.b, sigma_min=SIGMA_MIN, sigma_max=skip)
    x_skip = g.flow(x, SIGMA_MAX, skip)
    rows = []
    for steps in (5, 10, 20):
        sig = grids.exponential(steps + 1, SIGMA_MIN, skip, append_zero=False)
        row = [steps]
        for ems in (full, sub, stretched, "degenerate"):
            row.append(_rel(gaussport.solve(g, x_skip, sig, "dpm_solver_v3", ems=ems, disable=True).x, exact))
        rows.append(row)
    payload["mid_start"] = rows
    md.append("\n**Start at sigma = 3 from the exact state** (EMS 80 -> 0.002, N = 4800):\n\n")
    md.append(
        _table(
            [
                "steps",
                "gaussport (EMS of the full range)",
                "EMS computed on [0.002, 3]",
                "reference's t_start re-mapping",
                "degenerate",
            ],
            rows,
        )
    )

    # (d) quadrature rules on a correlated Gaussian: solver output vs the same solver at N = 19200.
    g3 = anisotropic_gaussian(dim=16)
    x3 = g3.sample(8, SIGMA_MAX, torch.Generator().manual_seed(1), dtype=torch.float64)
    fine = analytic_ems(g3, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=19200)
    rows = []
    for steps in (5, 10, 20):
        sig = grids.exponential(steps + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False)
        limit = gaussport.solve(g3, x3, sig, "dpm_solver_v3", ems=fine, disable=True).x
        for n in (120, 300, 1200):
            ems = analytic_ems(g3, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=n)
            rows.append(
                [steps, n]
                + [
                    _rel(
                        gaussport.solve(g3, x3, sig, "dpm_solver_v3", ems=ems, quadrature=r, disable=True).x,
                        limit,
                    )
                    for r in ("exponential", "trapezoid")
                ]
                + [_rel(limit, g3.flow(x3, SIGMA_MAX, SIGMA_MIN))]
            )
    payload["quadrature"] = rows
    md.append(
        "\n**Quadrature error** (16-dim correlated Gaussian, analytic EMS; difference to the same run with "
        "N = 19200; last column: that run's solver error):\n\n"
    )
    md.append(_table(["steps", "EMS N", "exponential", "trapezoid", "solver error"], rows))

    # (e) measured global orders (gaussport.testing.measured_order, degenerate EMS).
    rows = []
    for label, opts in [
        ("p1", {"solver_order": 1, "corrector": None}),
        ("p2", {"solver_order": 2, "corrector": None}),
        ("p3", {"solver_order": 3, "corrector": None}),
        ("p2 + corrector", {"solver_order": 2}),
        ("p3 + corrector (default)", {}),
        ("p3 + pseudo-corrector", {"corrector": "pseudo"}),
        ("pseudo-p3 + corrector", {"predictor": "pseudo"}),
        ("p3, no lower_order_final", {"corrector": None, "lower_order_final": False}),
    ]:
        solver = gaussport.solvers.get("dpm_solver_v3", **opts)
        rows.append(
            [label, solver.order]
            + [measured_order(solver, family=f) for f in (grids.ExponentialFamily(), grids.KarrasFamily(7.0))]
        )
    payload["orders"] = rows
    md.append(
        "\n**Measured global order** (gaussport.testing.measured_order, 16-dim anisotropic Gaussian, "
        "20 -> 0.05, 8-256 steps; degenerate EMS):\n\n"
    )
    md.append(_table(["configuration", "declared", "logSNR grid", "Karras grid"], rows))

    # (f) the estimator on a 4-dim Gaussian: RMS error vs K.
    from gaussport.testing import random_gaussian

    g4 = random_gaussian([2.0, 0.5, 0.1, 0.01], seed=3)
    exact4 = analytic_ems(g4, sigma_min=0.3, sigma_max=10.0, intervals=24)
    rows = []
    for k in (256, 1024, 4096, 16384):
        est = estimate_ems(
            g4,
            lambda n, gen: g4.sample(n, 0.0, gen, dtype=torch.float64),
            sigma_min=0.3,
            sigma_max=10.0,
            intervals=24,
            samples=k,
            batch_size=8192,
            smoothing=0,
            dtype=torch.float64,
            disable=True,
        )
        rows.append([k] + [float((getattr(est, c) - getattr(exact4, c)).pow(2).mean().sqrt()) for c in "lsb"])
    payload["estimator"] = rows
    md.append(
        "\n**Estimator vs analytic EMS** (4-dim correlated Gaussian, sigma 10 -> 0.3, N = 24, no smoothing; "
        "RMS error over levels and dimensions):\n\n"
    )
    md.append(_table(["K", "l", "s", "b"], rows))
    _write("accuracy", payload, "".join(md))


# ============================================================================ cost
def _random_gaussian(dim: int, rank: int | None, seed: int = 0) -> Gaussian:
    gen = torch.Generator().manual_seed(seed)
    mean = 0.3 * torch.randn(dim, generator=gen, dtype=torch.float64)
    k = dim if rank is None else rank
    basis, _ = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
    lam = torch.logspace(1, -3, k, dtype=torch.float64)
    if rank is None:
        return Gaussian(mean, Dense(lam, basis))
    return Gaussian(mean, LowRankPlusIsotropic(lam, basis, residual=1e-3))


def _edm_unet(sample_size: int, channels: int, blocks: tuple[int, ...], attention: bool) -> Callable:
    """A randomly initialised diffusers UNet2DModel behind EDM preconditioning (sigma_data = 0.5)."""
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if attention and i == 1 else "DownBlock2D" for i in range(len(blocks)))
    up = tuple(
        "AttnUpBlock2D" if attention and i == len(blocks) - 2 else "UpBlock2D" for i in range(len(blocks))
    )
    net = (
        UNet2DModel(
            sample_size=sample_size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=blocks,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=2,
            norm_num_groups=min(32, blocks[0]),
        )
        .eval()
        .requires_grad_(False)
    )

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip, c_out = 0.25 / (s * s + 0.25), s * 0.5 / torch.sqrt(s * s + 0.25)
        c_in = 1 / torch.sqrt(s * s + 0.25)
        return c_skip * x + c_out * net(c_in * x, torch.log(sigma) / 4).sample

    denoiser.parameters = sum(p.numel() for p in net.parameters())  # type: ignore[attr-defined]
    return denoiser


def run_cost() -> None:
    payload: dict[str, Any] = {}
    md = ["## EMS cost\n"]
    rows = []
    for label, dim, rank in (
        ("digits size, dense", 64, None),
        ("CIFAR-10 size, dense", 3072, None),
        ("SD latent size, low rank 256", 16384, 256),
    ):
        g = _random_gaussian(dim, rank)
        t0 = time.perf_counter()
        ems = analytic_ems(g, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=1200)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        ems.coefficients(grids.karras(10, SIGMA_MIN, SIGMA_MAX), degree=2)
        coeff = time.perf_counter() - t0
        rows.append([label, dim, seconds, coeff])
    payload["analytic"] = rows
    md.append(
        "\n**Analytic EMS** (N = 1200, float64, this CPU) and the per-run step integrals "
        "(10 Karras steps):\n\n"
    )
    md.append(_table(["Gaussian", "d", "build EMS (s)", "step integrals (s)"], rows))

    rows = []
    mixture = anisotropic_mixture(dim=64, n_components=8, seed=0)
    cases = [
        ("Gaussian mixture d=64", mixture, lambda n, gen: mixture.sample(n, 0.0, gen), (64,), 256, "n/a"),
        ("UNet 8x8 (random init)", _edm_unet(8, 1, (32, 64), False), None, (1, 8, 8), 64, None),
        (
            "UNet 32x32x3 (DDPM CIFAR-10 layout, random init)",
            _edm_unet(32, 3, (128, 256, 256, 256), True),
            None,
            (3, 32, 32),
            8,
            None,
        ),
    ]
    for label, den, data, shape, batch, _ in cases:
        if data is None:
            data = (lambda sh: lambda n, gen: torch.randn((n, *sh), generator=gen).clamp(-1, 1))(shape)
        params = getattr(den, "parameters", None)
        est = EMSEstimator(
            sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, intervals=1, samples=batch, batch_size=batch
        )
        t0 = time.perf_counter()
        est.run(den, data, max_batches=2, disable=True)  # the two l-levels
        l_cost = (time.perf_counter() - t0) / (2 * batch)
        t0 = time.perf_counter()
        est.run(den, data, max_batches=2, disable=True)  # the two f-levels
        f_cost = (time.perf_counter() - t0) / (2 * batch)
        t0 = time.perf_counter()
        with torch.no_grad():
            den(data(batch, torch.Generator().manual_seed(0)), torch.full((batch,), 1.0))
        fwd = (time.perf_counter() - t0) / batch
        per_sample = l_cost + f_cost
        paper = 1201 * 1024 * per_sample / 3600
        rows.append(
            [
                label,
                params if isinstance(params, int) else "-",
                fwd * 1e3,
                per_sample * 1e3,
                per_sample / fwd,
                paper,
            ]
        )
    payload["estimator"] = rows
    md.append(
        "\n**Monte-Carlo estimator** (this CPU, one thread set by torch): per sample and level, the l pass "
        "(one JVP) plus the f pass (one forward + one JVP); extrapolated to the paper's "
        "N = 1200, K = 1024:\n\n"
    )
    md.append(
        _table(
            [
                "denoiser",
                "parameters",
                "forward (ms/sample)",
                "estimator (ms/sample/level)",
                "in forwards",
                "N=1200, K=1024 (hours)",
            ],
            rows,
        )
    )
    _write("cost", payload, "".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["solvers", "accuracy", "cost", "all"])
    parser.add_argument("--problem", choices=["mixture", "digits-mixture", "digits", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer EMS samples")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("accuracy", "all"):
        run_accuracy()
    if args.part in ("cost", "all"):
        run_cost()
    if args.part in ("solvers", "all"):
        run_solvers(args.problem, args.quick)


if __name__ == "__main__":
    main()
