"""Low-rank plus isotropic Gaussians fitted from streamed data without ever forming ``d x d``.

The top-``r`` eigenpairs of the sample covariance ``C = S / (n - 1)``, ``S = sum_i (x_i - mu)
(x_i - mu)^T``, are found from products ``S Q`` with thin ``d x l`` matrices (``l = r + oversample``),
each product one pass over the data; the residual variance of the orthogonal complement comes from
the trace, which the first pass accumulates exactly (docs/fitting.md):

* ``method="randomized"`` -- randomized subspace iteration: pass 1 sketches ``Y = S Omega``
  (fused with the mean: per-batch centring and Chan's merge, never raw moments), each of the
  ``passes`` further passes computes ``Y = S orth(Y)``. ``passes=0`` is the single-pass sketch.
* ``method="krylov"`` -- block Krylov: every pass adds a block ``S Q_k`` to the basis, so the
  final basis spans ``Omega, S Omega, ..., S^passes Omega`` (memory ``(passes + 1) l`` columns).

Both finish with the Nystrom approximation ``S Q (Q^T S Q)^+ Q^T S`` from the last pass's ``Q`` and
``Y = S Q`` (Tropp, Yurtsever, Udell & Cevher 2017, "Fixed-rank approximation of a positive-
semidefinite matrix from streaming data", Alg. 3), so no pass is spent on a final Rayleigh-Ritz
projection. Memory ``O(d l)`` plus one batch; time ``O(n d l)`` per pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import as_int
from .covariance import LowRankPlusIsotropic

__all__ = ["LowRankSketch", "largest_principal_angle", "sketch_low_rank"]

_METHODS = ("randomized", "krylov")
# Two passes must see the same data: their means may differ by summation order only.
_MEAN_RTOL = 1e-9


def largest_principal_angle(a: Tensor, b: Tensor) -> float:
    """The largest principal angle (radians) between ``span(a)`` and ``span(b)``, ``[d, r]`` each.

    Computed as ``asin ||(I - Qa Qa^T) Qb||_2`` with orthonormal bases ``Qa``, ``Qb`` (accurate for
    small angles, where ``acos`` of the cosines is not). Order ``O(d r^2)``.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"need two [d, r] matrices of equal shape; got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    qa = torch.linalg.qr(a.to(torch.float64)).Q
    qb = torch.linalg.qr(b.to(torch.float64)).Q
    rest = qb - qa @ (qa.T @ qb)
    sine = float(torch.linalg.matrix_norm(rest, ord=2)) if rest.numel() else 0.0
    return math.asin(min(1.0, sine))


class _Pass:
    """One pass over the data: checks each batch, counts samples, yields float64/work-dtype rows."""

    def __init__(self, batches: Callable[[], Iterable[Tensor]], shape: tuple[int, ...] | None) -> None:
        iterable = batches()
        if isinstance(iterable, Tensor) or not isinstance(iterable, Iterable):
            raise TypeError(
                "batches() must return an iterable of [b, *sample_shape] tensors; got "
                f"{type(iterable).__name__}. Pass e.g. `lambda: data.split(256)`."
            )
        self.iterator: Iterator[Tensor] = iter(iterable)
        self.shape = shape
        self.count = 0
        self.total: Tensor | None = None  # float64 sum of the samples, to compare passes

    def rows(self, device: torch.device) -> Iterator[Tensor]:
        for batch in self.iterator:
            if not isinstance(batch, Tensor) or batch.ndim < 2 or batch.shape[0] == 0:
                raise ValueError(
                    "each batch must be a tensor of shape [b, *sample_shape] with b >= 1; got "
                    f"{type(batch).__name__} {tuple(getattr(batch, 'shape', ()))}."
                )
            if batch.dtype == torch.bool or batch.is_complex():
                raise TypeError(f"batches must hold real numbers; got dtype {batch.dtype}.")
            if self.shape is None:
                self.shape = tuple(batch.shape[1:])
            elif tuple(batch.shape[1:]) != self.shape:
                raise ValueError(
                    f"batch sample shape {tuple(batch.shape[1:])} differs from earlier {self.shape}."
                )
            x = batch.detach().reshape(batch.shape[0], -1).to(device=device, dtype=torch.float64)
            if not bool(torch.isfinite(x).all()):
                raise ValueError("the data contain NaN or infinite values.")
            self.count += x.shape[0]
            s = x.sum(0)
            self.total = s if self.total is None else self.total + s
            yield x


def _orth(held: list[Tensor]) -> Tensor:
    """Orthonormal columns spanning ``held.pop()``, which is released before ``Q`` is formed.

    Householder QR (orthonormal even for a rank-deficient input) in two steps, so that the peak is
    two ``[d, l]`` matrices (the reflectors and ``Q``); ``torch.linalg.qr`` would hold three.
    """
    reflectors, tau = torch.geqrf(held.pop())
    return torch.linalg.householder_product(reflectors, tau)


def _nystrom(held: list[Tensor], rank: int) -> tuple[Tensor, Tensor]:
    """Top-``rank`` eigenpairs of the Nystrom approximation ``Y (Q^T Y)^+ Y^T`` with ``Y = S Q``.

    ``held`` is ``[Q, Y]`` (``Q`` with orthonormal columns), emptied so that ``Q`` is released
    before the result is allocated: the peak is two ``[d, l]`` matrices. A shift ``nu`` of the order
    of the rounding of ``Y`` makes ``Q^T (S + nu I) Q`` positive definite, so its Cholesky factor
    ``L`` exists; ``nu`` is subtracted from the eigenvalues again (Tropp et al. 2017, Alg. 3). The
    eigenvectors ``F V diag(s)^-1`` of ``F = Y_nu L^-T = W diag(s) V^T`` come from the ``l x l`` Gram
    matrix ``F^T F``, so besides ``Y`` only the ``[d, rank]`` result is allocated. Returns float64
    eigenvalues (descending, >= 0) and eigenvectors in ``Y``'s dtype and device.
    """
    y = held.pop()
    q = held.pop()
    eps = torch.finfo(y.dtype).eps
    norm = float(torch.linalg.matrix_norm(y))
    if norm == 0.0:  # no variance at all (constant data): any orthonormal basis, eigenvalues 0
        return torch.zeros(rank, dtype=torch.float64, device=y.device), q[:, :rank].clone()
    nu = math.sqrt(y.shape[0]) * eps * norm
    y.add_(q, alpha=nu)  # Y_nu = (S + nu I) Q, in place: Y itself is not needed any more
    for _ in range(20):  # not PD beyond the shift (float32 rounding): shift further
        b = (q.T @ y).to(torch.float64)
        chol, info = torch.linalg.cholesky_ex((b + b.T) / 2)
        if int(info) == 0:
            break
        y.add_(q, alpha=9.0 * nu)
        nu *= 10.0
    if int(info) != 0:
        raise ValueError(
            "the sketch Q^T S Q is not positive semi-definite; did the data change between passes?"
        )
    del q
    gram = (y.T @ y).to(torch.float64)
    # F^T F = L^-1 (Y^T Y) L^-T; its eigenvalues are the squared singular values of F.
    inner = torch.linalg.solve_triangular(chol, gram, upper=False)
    inner = torch.linalg.solve_triangular(chol, inner.T, upper=False)
    s2, v = torch.linalg.eigh((inner + inner.T) / 2)
    s2, v = s2.flip(0)[:rank], v.flip(1)[:, :rank]
    lam = (s2 - nu).clamp_min(0.0)
    coef = torch.linalg.solve_triangular(chol.T, v, upper=True) / s2.clamp_min(1e-300).sqrt()
    # The Gram route loses orthogonality like eps * lam_max / lam_j: orthonormalize the columns by
    # (U^T U)^(-1/2), with U^T U = coef^T (Y^T Y) coef computed at l x l cost, before forming U.
    e, w = torch.linalg.eigh(coef.T @ gram @ coef)
    coef = coef @ ((w * e.clamp_min(1e-300).rsqrt()) @ w.T)
    return lam, y @ coef.to(y.dtype)


class LowRankSketch(NamedTuple):
    """What :func:`sketch_low_rank` returns: the statistics without the ``Gaussian`` around them."""

    mean: Tensor  # float64, CPU, the sample shape
    covariance: LowRankPlusIsotropic
    count: int


def sketch_low_rank(
    batches: Callable[[], Iterable[Tensor]],
    *,
    rank: int,
    oversample: int = 10,
    passes: int = 2,
    method: str = "randomized",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    disable: bool | None = None,
) -> LowRankSketch:
    """:func:`gaussport.analytic.fit_low_rank` without the :class:`Gaussian`: ``(mean, covariance, count)``.

    Same arguments, order, memory and errors as ``fit_low_rank`` (which validates ``scale`` and
    ``source`` and wraps the result; it lives with :class:`Gaussian`, which this module does not
    import, so that ``Gaussian.fit`` can stream through this one).
    """
    if isinstance(batches, Tensor) or not callable(batches):
        raise TypeError(
            "batches must be a zero-argument callable returning a fresh iterable of batches (one call "
            f"per pass); got {type(batches).__name__}. For a tensor, pass `lambda: data.split(256)`."
        )
    rank = as_int(rank, "rank", minimum=1)
    oversample = as_int(oversample, "oversample", minimum=0)
    passes = as_int(passes, "passes", minimum=0)
    assert rank is not None and oversample is not None and passes is not None
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}.")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype!r}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}.")
    if generator is None:  # never the global RNG: the same data give the same fit
        generator = torch.Generator().manual_seed(0)
    dev = torch.device(device) if device is not None else torch.device("cpu")

    state: dict[str, Any] = {}
    bar = tqdm(disable=disable, desc=f"low-rank fit, pass 1/{passes + 1}", unit="sample")

    def test_matrix(d: int) -> Tensor:
        if not 1 <= rank <= d:
            raise ValueError(f"rank must be in [1, d] = [1, {d}]; got {rank}.")
        width = min(rank + oversample, d)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        # No name holds the Gaussian matrix: _orth releases it before forming Q.
        held = [torch.randn((d, width), generator=generator, device=gen_device, dtype=torch.float64)]
        held.append(held.pop().to(device=dev, dtype=dtype))
        return _orth(held)

    # Pass 1: mean, per-coordinate M2 (the trace) and Y = S Omega, merged batch by batch (Chan et
    # al.): S_ab = S_a + S_b + (n_a n_b / n) delta delta^T with delta = mean_b - mean_a, so
    # Y_ab = Y_a + Xc_b^T (Xc_b Omega) + (n_a n_b / n) delta (delta^T Omega), all centred.
    first = _Pass(batches, None)
    count, mean, m2 = 0, None, None
    q = y = None
    for x in first.rows(dev):
        if q is None:
            q = test_matrix(x.shape[1])
            y = torch.zeros_like(q)
            mean = torch.zeros(x.shape[1], dtype=torch.float64, device=dev)
            m2 = torch.zeros_like(mean)
        assert mean is not None and m2 is not None and y is not None
        n_b = x.shape[0]
        mean_b = x.mean(0)
        xc = x - mean_b
        xw = xc.to(dtype)
        y.addmm_(xw.T, xw @ q)
        m2 += (xc * xc).sum(0)
        if count:
            delta = mean_b - mean
            weight = count * n_b / (count + n_b)
            dw = delta.to(dtype)
            y.addr_(dw, q.T @ dw, alpha=weight)
            m2 += delta * delta * weight
            mean += delta * (n_b / (count + n_b))
        else:
            mean = mean_b.clone()
        count += n_b
        bar.update(n_b)
    x = xc = xw = None  # the last batch is not needed during the later passes
    if q is None or first.shape is None or mean is None or m2 is None or y is None:
        raise ValueError("batches() yielded no data; a fit needs at least 2 samples.")
    if count < 2:
        raise ValueError(f"a covariance needs at least 2 samples; got {count}.")
    state["shape"] = first.shape
    d = mean.numel()
    scale_ref = float(mean.abs().max()) + math.sqrt(float(m2.sum()) / (count * d))

    basis: list[Tensor] = [q]  # krylov: every block; randomized: the current one
    products: list[Tensor] = [y]
    for k in range(passes):
        if method == "randomized":
            y = q = None
            basis = []
            q = _orth(products)  # empties products: the old Y is released before Q is formed
            basis = [q]
        else:
            # Block Gram-Schmidt twice against the basis, then orthonormalize the new block.
            if sum(b.shape[1] for b in basis) >= d:
                break
            z = products[-1]
            for _ in range(2):
                for b in basis:
                    z = z - b @ (b.T @ z)
            room = d - sum(b.shape[1] for b in basis)
            q = _orth([z[:, :room]])
            for b in basis:
                q = q - b @ (b.T @ q)
            q = _orth([q])
            basis.append(q)
        y = torch.zeros_like(q)
        bar.reset()
        bar.set_description(f"low-rank fit, pass {k + 2}/{passes + 1}")
        again = _Pass(batches, first.shape)
        for x in again.rows(dev):
            xw = (x - mean).to(dtype)
            y.addmm_(xw.T, xw @ q)
            bar.update(x.shape[0])
        x = xw = None
        if again.count != count or again.total is None:
            raise ValueError(
                f"pass {k + 2} saw {again.count} samples but the first saw {count}: batches() must return "
                "the same data on every call (a fresh iterator, not an exhausted one)."
            )
        drift = float((again.total / count - mean).abs().max())
        if drift > _MEAN_RTOL * scale_ref * max(1.0, math.sqrt(count)):
            raise ValueError(
                f"pass {k + 2} saw different data than the first (mean moved by {drift:.3g}): batches() "
                "must yield the same samples on every call (no random augmentation)."
            )
        products.append(y)
    bar.close()

    held = [basis[0] if len(basis) == 1 else torch.cat(basis, dim=1)]
    held.append(products[0] if len(products) == 1 else torch.cat(products, dim=1))
    del basis, products, q, y
    lam, u = _nystrom(held, rank)
    lam = lam / (count - 1)
    trace = float(m2.sum()) / (count - 1)
    residual = max(trace - float(lam.sum()), 0.0) / (d - rank) if d > rank else 0.0
    u = u.to("cpu", torch.float64)
    # float32 products (U^T U - I ~ 1e-6) and null directions of rank-deficient data (columns from
    # rounding) need a final Householder QR; it keeps every well-determined column (they come first).
    if float((u.T @ u - torch.eye(rank, dtype=torch.float64)).abs().max()) > 1e-10:
        reflectors, tau = torch.geqrf(u)
        del u
        signs = torch.sign(reflectors.diagonal()).where(reflectors.diagonal() != 0, 1.0)
        u = torch.linalg.householder_product(reflectors, tau) * signs
        del reflectors
    cov = LowRankPlusIsotropic(lam.cpu(), u, residual)
    return LowRankSketch(mean.cpu().reshape(state["shape"]), cov, count)
