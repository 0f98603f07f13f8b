"""DPM-Solver-v3 per step vs diffusers' DPMSolverMultistepScheduler(order 3), and the analytic EMS at scale.

``step``: time per step of ``gaussport.solve(..., "dpm_solver_v3")`` against diffusers'
``DPMSolverMultistepScheduler(solver_order=3, algorithm_type="dpmsolver++")`` stepped with its own
``step`` on a near-free model (``eps = 0.5 x``; ours ``D = 0.5 x``), so the time measured is the
solvers' own work: coefficients, the update arithmetic, bookkeeping. Both run interleaved (ABAB...)
in one process at one intra-op thread, on ``[B, 3, 32, 32]`` float32, and the table reports the
ratio of their median times, so machine load affects both alike; the load average is noted. v3 is
timed with its default (degenerate) EMS and with per-dimension analytic EMS of a diagonal
Gaussian (reused across runs, as a sampling job reuses its EMS; the first run builds its tables);
gaussport's ``dpmpp_3m`` runs alongside for comparison.

``ems``: the analytic EMS of a dense Gaussian at ``d = 12,288`` (3x64x64): time and peak memory
(the peak resident size of a child process that builds the Gaussian, resets its peak, then builds
the EMS; Linux ``/proc``). The Gaussian has a dense random orthonormal basis (a Kronecker product
of two QR factors: a d x d QR would take minutes here) and log-spaced eigenvalues. Heavy at
d = 12,288: run it under ``flock /tmp/gaussport-heavy.lock``.

    python benchmarks/v3_overhead.py step                   # batch 1 and 64, 100 steps
    flock /tmp/gaussport-heavy.lock python benchmarks/v3_overhead.py ems   # d = 4096 before/after, 12288

Writes Markdown to stdout and JSON to ``benchmarks/out/v3_overhead_<part>.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

import gaussport  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

OUT = os.path.join(os.path.dirname(__file__), "out")


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _env(extra: str) -> str:
    return (
        f"{platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}, "
        f"python {platform.python_version()}, {extra}"
    )


def _write(name: str, text: str, payload: dict) -> None:
    print(text)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"v3_overhead_{name}.json"), "w") as f:
        json.dump({**payload, "argv": sys.argv}, f, indent=2)


# ----------------------------------------------------------------------------- per step
def near_free_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return 0.5 * x


def _diffusers_run(steps: int, x: torch.Tensor):  # type: ignore[no-untyped-def]
    import diffusers

    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, solver_order=3, algorithm_type="dpmsolver++", prediction_type="epsilon"
    )

    def run() -> torch.Tensor:
        scheduler.set_timesteps(steps)
        sample = x
        for t in scheduler.timesteps:
            sample = scheduler.step(0.5 * sample, t, sample).prev_sample
        return sample

    return run


def step_benchmark(args: argparse.Namespace) -> None:
    from gaussport.analytic import Gaussian
    from gaussport.ems import analytic_ems

    torch.set_num_threads(1)
    grid = gaussport.grids.karras(args.steps, 0.002, 80.0)
    shape = (3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    variances = torch.logspace(-3, 0.5, math.prod(shape), dtype=torch.float64)
    gaussian = Gaussian.diagonal(torch.randn(math.prod(shape), generator=gen, dtype=torch.float64), variances)
    gaussian = Gaussian.diagonal(gaussian.mean.reshape(shape), variances.reshape(shape))
    ems = analytic_ems(gaussian, sigma_min=0.002, sigma_max=80.0, intervals=args.intervals)
    solvers = {
        "dpm_solver_v3, degenerate EMS (default)": gaussport.solvers.get("dpm_solver_v3"),
        "dpm_solver_v3, analytic EMS [3, 32, 32]": gaussport.solvers.get("dpm_solver_v3", ems=ems),
        "dpmpp_3m (for comparison)": gaussport.solvers.get("dpmpp_3m"),
    }
    rows = []
    loads = [os.getloadavg()[0]]
    for batch in args.batches:
        x = 80.0 * torch.randn((batch, *shape), generator=torch.Generator().manual_seed(0))
        theirs = _diffusers_run(args.steps, x)
        ours = {
            name: (lambda s=solver, x=x: gaussport.solve(near_free_denoiser, x, grid, s, disable=True).x)
            for name, solver in solvers.items()
        }
        fns = [theirs, *ours.values()]
        for fn in fns:  # warm-up (the analytic EMS's tables are built here, once)
            fn()
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(args.repeats):
            for k, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
        med = [statistics.median(t) for t in times]
        for name, m in zip(ours, med[1:], strict=True):
            rows.append(
                {
                    "ems": name,
                    "batch": batch,
                    "ours_us_per_step": 1e6 * m / args.steps,
                    "diffusers_us_per_step": 1e6 * med[0] / args.steps,
                    "ratio": m / med[0],
                }
            )
        loads.append(os.getloadavg()[0])
    env = _env(
        f"CPU, x [B, 3, 32, 32] float32, Karras grid of {args.steps} steps, median of {args.repeats} "
        f"interleaved runs, 1-min load average {min(loads):.2f}-{max(loads):.2f}"
    )
    lines = [
        f"Environment: {env}",
        "",
        "| gaussport solver | batch | gaussport (us/step) | diffusers DPMSolverMultistep order 3 (us/step) "
        "| ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ems']} | {r['batch']} | {r['ours_us_per_step']:.1f} | {r['diffusers_us_per_step']:.1f} "
            f"| {r['ratio']:.2f}x |"
        )
    _write("step", "\n".join(lines), {"environment": env, "rows": rows})


# ----------------------------------------------------------------------------- EMS at scale
def _memory(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _random_basis(dim: int, gen: torch.Generator) -> torch.Tensor:
    """A dense random orthonormal ``[dim, dim]`` basis: the Kronecker product of two QR factors.

    Orthonormal and without zeros (nothing the EMS could exploit), at the cost of two small QRs
    instead of one d x d QR (minutes and ~4 d^2 float64 here).
    """
    a = next(f for f in range(int(math.isqrt(dim)), 0, -1) if dim % f == 0)
    q1, _ = torch.linalg.qr(torch.randn(a, a, generator=gen, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(dim // a, dim // a, generator=gen, dtype=torch.float64))
    return torch.kron(q1, q2)


def _previous_analytic_ems(gaussian, sigma_min: float, sigma_max: float, intervals: int):  # type: ignore[no-untyped-def]
    """The dense path as it was before issue 13 (commit e488232), for the before/after row.

    ``U∘U`` formed whole by ``spectral_weights()``, ``Var_w(lam)`` by two more d x d temporaries,
    levels in chunks with six separate products, and the chunks concatenated at the end.
    """
    from gaussport.ems import EMS
    from gaussport.ems.analytic import _DECOUPLED

    lam0, lam1 = -math.log(sigma_max), -math.log(sigma_min)
    lambdas = torch.tensor(
        [lam0 + j * (lam1 - lam0) / intervals for j in range(intervals)] + [lam1], dtype=torch.float64
    )
    sigma2 = torch.exp(-2.0 * lambdas)
    mu = gaussian.mean.reshape(-1).to(torch.float64)
    w, lam = gaussian.cov.spectral_weights()
    m = w @ lam
    spread = (w * (lam[None, :] - m[:, None]) ** 2).sum(1)
    decoupled = spread <= _DECOUPLED * m * m
    chunk = max(1, 2**22 // (w.shape[0] + w.shape[1]))
    parts = []
    for i in range(0, sigma2.numel(), chunk):
        s2v = sigma2[i : i + chunk]
        wt = w.T
        c = lam[None, :] + s2v[:, None]
        inv_c = 1.0 / c
        inv_c2 = inv_c * inv_c
        h, g1, g2 = inv_c @ wt, (lam * inv_c) @ wt, (lam * lam * inv_c) @ wt
        h0, h1, h2 = inv_c2 @ wt, (lam * inv_c2) @ wt, (lam * lam * inv_c2) @ wt
        s2 = s2v[:, None]
        ell = s2 * h
        dl = -2.0 * s2 * h1
        v = (s2 / (m[None, :] + s2)) * (m * m * h - 2.0 * m * g1 + g2)
        var_p = s2 * s2 * (g1 * g1 * h0 - 2.0 * g1 * h * h1 + h * h * h2)
        var_f = ell * v
        cov_ff = s2 * var_p + dl * v
        ok = ~decoupled[None, :] & (var_f > 0)
        s = torch.where(ok, cov_ff / torch.where(ok, var_f, torch.ones_like(var_f)), torch.zeros_like(var_f))
        parts.append((ell, s, mu[None, :] * (s * ell - dl)))
    ell, s, b = (torch.cat([p[k] for p in parts]) for k in range(3))
    shape = (intervals + 1, *gaussian.shape)
    return EMS(
        ell.reshape(shape), s.reshape(shape), b.reshape(shape), sigma_min=sigma_min, sigma_max=sigma_max
    )


def _ems_child(dim: int, intervals: int, seed: int, which: str) -> None:
    """Build the Gaussian and its EMS; print one JSON line (run in a child: its own peak memory)."""
    from gaussport.analytic import Dense, Gaussian
    from gaussport.ems import analytic_ems

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    basis = _random_basis(dim, gen)
    basis_seconds = time.perf_counter() - start
    lam = torch.logspace(0.5, -3, dim, dtype=torch.float64)
    gaussian = Gaussian(torch.randn(dim, generator=gen, dtype=torch.float64), Dense(lam, basis))
    del basis
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    rss_before = _memory("VmRSS")
    start = time.perf_counter()
    build = analytic_ems if which == "new" else _previous_analytic_ems
    ems = build(gaussian, sigma_min=0.002, sigma_max=80.0, intervals=intervals)
    seconds = time.perf_counter() - start
    peak = _memory("VmHWM")
    sizes = {}
    for dtype in ("float64", "float32"):
        path = os.path.join(OUT, f"_ems_{dim}_{dtype}.npz")
        ems.save(path, dtype=dtype)
        sizes[dtype] = os.path.getsize(path)
        os.remove(path)
    print(
        json.dumps(
            {
                "dim": dim,
                "intervals": intervals,
                "implementation": which,
                "basis_seconds": basis_seconds,
                "ems_seconds": seconds,
                "rss_before_ems": rss_before,
                "peak_rss_during_ems": peak,
                "ems_bytes": 3 * ems.l.numel() * 8,
                "file_bytes": sizes,
            }
        )
    )


def ems_benchmark(args: argparse.Namespace) -> None:
    os.makedirs(OUT, exist_ok=True)
    # Before/after pairs alternate (previous, new, previous, new, ...) so load drifts hit both;
    # each row reports the median time and the largest peak over its repeats.
    runs = [(d, w) for d in args.previous for _ in range(args.repeats) for w in ("previous", "new")]
    runs += [(d, "new") for d in args.dims if d not in args.previous]
    loads = [os.getloadavg()[0]]
    by_key: dict[tuple[int, str], list[dict]] = {}
    for dim, which in runs:
        cmd = [sys.executable, __file__, "_ems_child", str(dim), str(args.intervals), "0", which]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        by_key.setdefault((dim, which), []).append(json.loads(out.strip().splitlines()[-1]))
        loads.append(os.getloadavg()[0])
    results = []
    for group in by_key.values():
        row = dict(group[0])
        row["ems_seconds"] = statistics.median(r["ems_seconds"] for r in group)
        row["peak_rss_during_ems"] = max(r["peak_rss_during_ems"] for r in group)
        row["repeats"] = len(group)
        results.append(row)
    gib = 2.0**30
    env = _env(f"CPU, 1-min load average {min(loads):.2f}-{max(loads):.2f}")
    lines = [
        f"Environment: {env}",
        "",
        "| implementation | d | intervals | analytic_ems (s, median) | resident before (GiB) "
        "| peak during (GiB) | peak above before (GiB) | of which the EMS tables (GiB) "
        "| one d x d float64 (GiB) | file float64 / float32 (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        above = (r["peak_rss_during_ems"] - r["rss_before_ems"]) / gib
        lines.append(
            f"| {r['implementation']} | {r['dim']} | {r['intervals']} | {r['ems_seconds']:.1f} "
            f"| {r['rss_before_ems'] / gib:.2f} | {r['peak_rss_during_ems'] / gib:.2f} | {above:.2f} "
            f"| {r['ems_bytes'] / gib:.2f} | {8.0 * r['dim'] ** 2 / gib:.2f} "
            f"| {r['file_bytes']['float64'] / 1e6:.0f} / {r['file_bytes']['float32'] / 1e6:.0f} |"
        )
    _write("ems", "\n".join(lines), {"environment": env, "results": results})


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ems_child":
        _ems_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="part", required=True)
    step = sub.add_parser("step", help="per-step time vs diffusers")
    step.add_argument("--steps", type=int, default=100)
    step.add_argument("--repeats", type=int, default=15)
    step.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    step.add_argument("--intervals", type=int, default=1200, help="intervals of the analytic EMS")
    ems = sub.add_parser("ems", help="analytic EMS of a dense Gaussian: time and peak memory")
    ems.add_argument("--dims", type=int, nargs="+", default=[4096, 12288])
    ems.add_argument(
        "--previous",
        type=int,
        nargs="*",
        default=[4096],
        help="dims to run the pre-issue-13 implementation at",
    )
    ems.add_argument("--intervals", type=int, default=1200)
    ems.add_argument("--repeats", type=int, default=2, help="alternating before/after runs per dim")
    args = parser.parse_args()
    {"step": step_benchmark, "ems": ems_benchmark}[args.part](args)


if __name__ == "__main__":
    main()
