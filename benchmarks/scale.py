"""Fitting the Gaussian at scale: the dense streaming fit against numpy.cov (docs/benchmarks.md).

Usage::

    python benchmarks/scale.py dense [--dims 1024 4096] [--eigh-dims 1024] [--repeats 3]
    python benchmarks/scale.py accuracy    # float32 batch scatter vs float64: digits and synthetic
    python benchmarks/scale.py distributed # 1 vs 2 processes (gloo, file:// rendezvous), d = 1,024
    flock /tmp/gaussport-heavy.lock python benchmarks/scale.py dense --dims 12288 --eigh-dims --repeats 1
    OMP_NUM_THREADS=2 flock /tmp/gaussport-heavy.lock python benchmarks/scale.py whole --dims 12288 16384

``whole`` runs one whole dense fit per ``d`` (no peer: numpy's ``eigh`` alone would take as long
again), on ``n = 2 d`` samples with a power-law spectrum plus 64 shared factors, built in
4,096-row blocks: that the fit completes, its time and its peak memory in ``d x d`` float64 units.

``dense`` times, interleaved round by round on one thread, on ``n = 2 d`` float64 samples:

* ``fit`` -- ``Gaussian.fit(x, representation="dense")``: the streamed scatter, the in-place
  ``eigh`` and the ``Dense`` covariance, against ``numpy.cov`` followed by ``numpy.linalg.eigh``;
* ``accumulate`` -- the scatter alone (``MomentAccumulator`` over the default 4,096-row batches,
  symmetrised), against ``numpy.cov`` alone.

Peak memory is the process's peak resident set above what it held before the call (the data
already allocated; Linux ``/proc/self/clear_refs``), in units of one ``d x d`` float64 matrix; the
result the call returns counts. Results go to ``benchmarks/results/scale_<part>.json`` and ``.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gaussport.analytic import Gaussian, MomentAccumulator  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BATCH = 4096


def _status() -> tuple[int, int]:
    """(current, peak) resident set size in bytes."""
    cur = peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cur, peak


def measure(fn: Callable[[], Any]) -> tuple[float, int]:
    """(seconds, peak bytes above the resident set before the call) of ``fn()``, result included."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set to the current one
    base, _ = _status()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    _, peak = _status()
    del out
    gc.collect()
    return seconds, peak - base


def _environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }


def _accumulate(x: torch.Tensor) -> torch.Tensor:
    acc = MomentAccumulator()
    for batch in x.split(BATCH):
        acc.update(batch)
    m2 = acc.m2
    assert m2 is not None
    return m2.div_(acc.count - 1)


def _cov_eigh(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.linalg.eigh(np.cov(x, rowvar=False))


def dense(dims: list[int], eigh_dims: list[int], repeats: int) -> dict[str, Any]:
    env = _environment()
    rows = []
    for d in dims:
        n = 2 * d
        gen = torch.Generator().manual_seed(d)
        # A decaying spectrum plus 64 shared factors (correlated, not plain noise), in O(n d 64).
        x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.logspace(
            0, -3, d, dtype=torch.float64
        )
        factors = torch.randn(n, 64, generator=gen, dtype=torch.float64)
        x.addmm_(factors, torch.randn(64, d, generator=gen, dtype=torch.float64), alpha=0.3).add_(3.0)
        del factors
        xn = x.numpy()
        unit = d * d * 8
        candidates: dict[str, Callable[[], Any]] = {
            "accumulate": lambda x=x: _accumulate(x),
            "numpy.cov": lambda xn=xn: np.cov(xn, rowvar=False),
        }
        if d in eigh_dims:
            candidates["fit"] = lambda x=x: Gaussian.fit(x, representation="dense", disable=True)
            candidates["numpy.cov+eigh"] = lambda xn=xn: _cov_eigh(xn)
        times: dict[str, list[float]] = {k: [] for k in candidates}
        peaks: dict[str, list[float]] = {k: [] for k in candidates}
        names = list(candidates)
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
                seconds, peak = measure(candidates[name])
                times[name].append(seconds)
                peaks[name].append(peak / unit)
                print(f"d={d} round {r}: {name} {seconds:.2f} s, peak {peak / unit:.2f} d^2", flush=True)
        row: dict[str, Any] = {
            "d": d,
            "n": n,
            "data_d2": n * d * 8 / unit,
            "batch_d2": min(BATCH, n) * d * 8 / unit,
            "seconds": {k: statistics.median(v) for k, v in times.items()},
            "peak_d2": {k: max(v) for k, v in peaks.items()},
            "ratio_accumulate_vs_cov": statistics.median(
                a / b for a, b in zip(times["accumulate"], times["numpy.cov"], strict=True)
            ),
        }
        if "fit" in times:
            row["ratio_fit_vs_cov_eigh"] = statistics.median(
                a / b for a, b in zip(times["fit"], times["numpy.cov+eigh"], strict=True)
            )
            row["ratio_fit_vs_cov"] = statistics.median(
                a / b for a, b in zip(times["fit"], times["numpy.cov"], strict=True)
            )
        rows.append(row)
        del x, xn, candidates
        gc.collect()
    env["load_after"] = os.getloadavg()
    return {"environment": env, "repeats": repeats, "rows": rows}


def _errors(x: torch.Tensor) -> dict[str, float]:
    out = {}
    ref = Gaussian.fit(x.double(), representation="dense", disable=True)
    c64 = ref.cov.dense()
    lam64 = ref.cov.spectrum()
    for name, dtype in (("float64", None), ("float32", torch.float32)):
        acc = MomentAccumulator(accumulate_dtype=dtype)
        for batch in x.split(512):
            acc.update(batch)
        c = acc.covariance()
        lam, _ = acc.eigh()
        lam = lam.flip(0)
        out[f"{name}_cov_rel"] = float((c - c64).abs().max() / c64.abs().max())
        out[f"{name}_eig_rel"] = float((lam - lam64).abs().max() / lam64.max())
        out[f"{name}_min_eig"] = float(lam.min())
    return out


def accuracy() -> dict[str, Any]:
    """float32 batch scatter against the float64 fit: the digits training split and a large mean."""
    from gaussport.digits import files
    from gaussport.digits.train import load_sklearn_digits, stratified_split

    pixels, labels = load_sklearn_digits()
    train, _ = stratified_split(labels)
    digits = files.pixels_to_model(pixels).unsqueeze(1)[train].float()
    gen = torch.Generator().manual_seed(0)
    d = 256
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    synthetic = (
        1e3
        + (torch.randn(20_000, d, generator=gen, dtype=torch.float64) * torch.logspace(-1, -3, d)) @ basis.T
    ).float()
    return {
        "environment": _environment(),
        "rows": [
            {"data": f"digits training split [{digits.shape[0]}, 1, 8, 8] in [-1, 1]", **_errors(digits)},
            {"data": f"synthetic float32 [20000, {d}], mean 1e3, std 1e-1..1e-3", **_errors(synthetic)},
        ],
    }


def _distributed_worker(rank: int, world: int, init: str, out: str, d: int, n: int) -> None:
    """One rank: its shard of the data, the streamed scatter + all-reduce timed, then the whole fit."""
    import torch.distributed as dist

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.logspace(0, -3, d, dtype=torch.float64)
    shard = x.tensor_split(world)[rank].clone()
    del x
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        dist.barrier()
    t0 = time.perf_counter()
    acc = MomentAccumulator()
    for batch in shard.split(BATCH):
        acc.update(batch)
    if world > 1:
        acc.all_reduce()
    m2 = acc.m2
    t_acc = time.perf_counter() - t0
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    g = Gaussian.fit(shard, representation="dense", distributed=world > 1, disable=True)
    t_fit = time.perf_counter() - t0
    if rank == 0:
        assert m2 is not None
        np.savez(out, mean=g.mean.numpy(), cov=g.cov.dense().numpy(), t_acc=t_acc, t_fit=t_fit)
    if world > 1:
        dist.destroy_process_group()


def distributed(d: int = 1024, n: int = 32_768) -> dict[str, Any]:
    import subprocess
    import tempfile

    env = _environment()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for world in (1, 2, 1, 2):  # interleaved
            out = f"{tmp}/w{world}.npz"
            init = f"file://{tmp}/rendezvous-{world}-{len(rows)}"
            args = [str(world), init, out, str(d), str(n)]
            procs = [
                subprocess.Popen([sys.executable, __file__, "_rank", str(r), *args]) for r in range(world)
            ]
            if any(p.wait() for p in procs):
                raise RuntimeError("a rank failed")
            got = np.load(out)
            results.setdefault(world, []).append(got)
            rows.append(
                {"processes": world, "accumulate_s": float(got["t_acc"]), "fit_s": float(got["t_fit"])}
            )
        one, two = results[1][-1], results[2][-1]
        scale = np.abs(one["cov"]).max()
        equality = {
            "cov_rel": float(np.abs(one["cov"] - two["cov"]).max() / scale),
            "mean_abs": float(np.abs(one["mean"] - two["mean"]).max()),
        }
    env["load_after"] = os.getloadavg()
    return {"environment": env, "d": d, "n": n, "rows": rows, "equality": equality}


def _markdown_dense(result: dict[str, Any]) -> str:
    columns = [
        ("fit / (cov + eigh)", lambda r: r.get("ratio_fit_vs_cov_eigh"), ".2f"),
        ("fit / cov", lambda r: r.get("ratio_fit_vs_cov"), ".2f"),
        ("accumulate / cov", lambda r: r["ratio_accumulate_vs_cov"], ".2f"),
        *[(f"{k} s", lambda r, k=k: r["seconds"].get(k), ".1f") for k in ("fit", "numpy.cov+eigh")],
        *[(f"{k} s", lambda r, k=k: r["seconds"].get(k), ".1f") for k in ("accumulate", "numpy.cov")],
        *[(f"peak {k}", lambda r, k=k: r["peak_d2"].get(k), ".2f") for k in ("fit", "numpy.cov+eigh")],
        *[(f"peak {k}", lambda r, k=k: r["peak_d2"].get(k), ".2f") for k in ("accumulate", "numpy.cov")],
    ]
    lines = [
        "| d | n | " + " | ".join(c[0] for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in result["rows"]:
        cells = []
        for _, get, fmt in columns:
            value = get(row)
            cells.append("-" if value is None else format(value, fmt))
        lines.append(f"| {row['d']:,} | {row['n']:,} | " + " | ".join(cells) + " |")
    env = result["environment"]
    lines.append("")
    lines.append(
        f"Peaks in d x d float64 above the data (n x d float64 = {result['rows'][0]['data_d2']:.0f} d^2) "
        f"and include the returned result. {env['threads']} thread(s), load {env['load_before'][0]:.2f} "
        f"before, {env['load_after'][0]:.2f} after; torch {env['torch']}, numpy {env['numpy']}."
    )
    return "\n".join(lines) + "\n"


def whole(dims: list[int]) -> dict[str, Any]:
    env = _environment()
    rows = []
    for d in dims:
        n = 2 * d
        gen = torch.Generator().manual_seed(0)
        x = torch.empty(n, d, dtype=torch.float64)
        scales = (1.0 + torch.arange(d, dtype=torch.float64)) ** -0.5
        factors = torch.randn(64, d, generator=gen, dtype=torch.float64)
        for i in range(0, n, BATCH):
            b = min(BATCH, n - i)
            noise = torch.randn(b, d, generator=gen, dtype=torch.float64) * scales
            x[i : i + b] = noise + torch.randn(b, 64, generator=gen, dtype=torch.float64) @ factors * 0.1
        seconds, peak = measure(lambda x=x: Gaussian.fit(x, representation="dense", disable=True))
        units = peak / (8 * d * d)
        rows.append({"d": d, "n": n, "seconds": seconds, "peak_in_d2": units, "load": os.getloadavg()})
        del x
    env["load_after"] = os.getloadavg()
    return {"environment": env, "rows": rows}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_rank":  # a worker of the distributed part
        torch.set_num_threads(1)
        rank, world, init, out, d, n = sys.argv[2:8]
        _distributed_worker(int(rank), int(world), init, out, int(d), int(n))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["dense", "accuracy", "distributed", "whole"])
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--eigh-dims", type=int, nargs="*", default=[1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # Large blocks straight from mmap, returned on free: the resident-set peaks then measure
        # what each call allocates rather than what glibc's heap kept from the previous call.
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"scale_{args.part}{args.tag}"
    if args.part == "dense":
        result = dense(args.dims, args.eigh_dims, args.repeats)
        stem.with_suffix(".md").write_text(_markdown_dense(result))
    elif args.part == "whole":
        result = whole(args.dims)
        stem.with_suffix(".md").write_text(json.dumps(result["rows"], indent=1) + "\n")
    elif args.part == "distributed":
        result = distributed()
        stem.with_suffix(".md").write_text(
            json.dumps({k: result[k] for k in ("rows", "equality")}, indent=1) + "\n"
        )
    else:
        result = accuracy()
        stem.with_suffix(".md").write_text(json.dumps(result["rows"], indent=1) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
