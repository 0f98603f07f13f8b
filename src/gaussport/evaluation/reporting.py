"""Reporting for the harness: one markdown table formatter and the plots (PNG, matplotlib optional).

* :func:`markdown_table` -- every table gaussport prints or writes (demo, benchmarks);
* :func:`plot_quality` -- trajectory error (and Frechet distance, where measured) against NFE;
* :func:`plot_heatmap` -- a value per (row, column), e.g. error per teleport level and NFE;
* :func:`save_sample_panels` -- side-by-side grids of image samples of any size and 1 or 3 channels.

The plots need matplotlib (``pip install 'gaussport[plot]'``); without it they log why and return
False, so a run without plots still writes its tables.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_writer
from ..metrics import FrechetSummary

__all__ = ["markdown_table", "Series", "plot_quality", "plot_heatmap", "save_sample_panels"]

logger = logging.getLogger("gaussport")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; floats with 3 significant digits (``inf`` and ``-`` for NaN)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if not math.isfinite(v):
                return "-" if math.isnan(v) else "inf"
            return f"{v:.2e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4) else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plots (pip install 'gaussport[plot]').")
        return None
    return plt


def _save_figure(
    plt: Any, fig: Any, path: str | os.PathLike[str], title: str | None = None, top: float = 0.95
) -> None:
    """Lay ``fig`` out (with ``title`` above the axes, if given, the axes below ``top`` of the
    height), write it through the atomic writer (the format from the suffix, PNG by default) and
    close it."""
    if title:
        fig.suptitle(title, fontsize=9)
    # Leave the top strip to the title, or tight_layout lets the axes' labels run into it.
    fig.tight_layout(rect=(0.0, 0.0, 1.0, top) if title else (0.0, 0.0, 1.0, 1.0))
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        with atomic_writer(path) as f:
            fig.savefig(f, format=fmt)
    finally:
        plt.close(fig)


@dataclass(frozen=True)
class Series:
    """One line of a quality-vs-NFE plot: ``error[i]`` (and ``frechet[i]``, if any) at ``nfe[i]``."""

    label: str
    nfe: Sequence[int]
    error: Sequence[float]
    frechet: Sequence[FrechetSummary | None] = ()
    style: str = "o-"


def plot_quality(
    series: Sequence[Series],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    error_label: str = "trajectory error (RMS to the exact endpoint)",
) -> bool:
    """Trajectory error (and Frechet distance, where measured) against NFE as a PNG.

    Args:
        series: the lines; a second panel shows the Frechet distances when any series has one.
        path: the PNG to write.
        title: a title above the panels.
        error_label: the y-axis label of the error panel.

    Returns:
        False (and logs why) when matplotlib is missing, else True.
    """
    plt = _pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import NullLocator, ScalarFormatter

    with_fd = any(any(f is not None for f in s.frechet) for s in series)
    fig, axes = plt.subplots(
        1, 2 if with_fd else 1, figsize=(12 if with_fd else 6.5, 4.5), dpi=110, squeeze=False
    )
    ax = axes[0][0]
    nfes = sorted({n for s in series for n in s.nfe})
    for s in series:
        ax.loglog(s.nfe, s.error, s.style, ms=4, label=s.label)
    ax.set_xlabel("denoiser evaluations (NFE)")
    ax.set_ylabel(error_label)
    if with_fd:
        ax2 = axes[0][1]
        spread = False  # error bars only where a spread over seeds was measured
        for s in series:
            pts = [(n, f) for n, f in zip(s.nfe, s.frechet, strict=False) if f is not None]
            if pts:
                std = [0.0 if math.isnan(f.std) else f.std for _, f in pts]
                spread = spread or any(v > 0 for v in std)
                ax2.errorbar(
                    [n for n, _ in pts],
                    [f.mean for _, f in pts],
                    yerr=std,
                    fmt=s.style,
                    ms=4,
                    capsize=2,
                    label=s.label,
                )
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("denoiser evaluations (NFE)")
        ax2.set_ylabel(f"Frechet distance (mean{' +- std' if spread else ''} over seeds)")
    for a in axes[0]:
        a.set_xticks(nfes)
        a.xaxis.set_major_formatter(ScalarFormatter())
        a.xaxis.set_minor_locator(NullLocator())
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    _save_figure(plt, fig, path, title)
    return True


def plot_heatmap(
    values: Sequence[Sequence[float]],
    rows: Sequence[Any],
    columns: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    row_label: str = "sigma_skip",
    column_label: str = "NFE",
    fmt: str = "{:.3g}",
    ax: Any = None,
) -> bool:
    """A heat map of ``values[row][column]`` as a PNG: log colour scale, each column's minimum in bold.

    With ``ax`` given, draws into it and does not save (for several maps in one figure).
    """
    plt = _pyplot()
    if plt is None:
        return False
    from matplotlib.colors import LogNorm

    data = np.array(values, dtype=float)
    finite = data[np.isfinite(data) & (data > 0)]
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(columns), 0.8 + 0.45 * len(rows)), dpi=110)
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    ax.imshow(np.where(np.isfinite(data), data, np.nan), cmap="viridis_r", norm=norm, aspect="auto")
    best = np.nanargmin(np.where(np.isfinite(data), data, np.inf), axis=0)
    for i in range(len(rows)):
        for j in range(len(columns)):
            v = data[i, j]
            text = fmt.format(v) if np.isfinite(v) else "-"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                fontweight="bold" if best[j] == i else "normal",
                color="white" if np.isfinite(v) and norm is not None and norm(v) > 0.6 else "black",
            )
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    if title:
        ax.set_title(title, fontsize=9)
    if own:
        _save_figure(plt, fig, path)
    return True


SEPARATOR = -0.7  # the 1-pixel lines between images, in model space: light grey once displayed


def _image_grid(images: Tensor, columns: int) -> np.ndarray:
    """``[N, H, W]`` or ``[N, C, H, W]`` (C = 1 or 3, values in [-1, 1]) tiled ``columns`` wide.

    Returns ``[rows (H + 1) + 1, columns (W + 1) + 1]`` for one channel, with a trailing axis of 3
    for three; 1-pixel separators of value :data:`SEPARATOR` frame every image.
    """
    x = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(
            f"sample panels need images [N, H, W] or [N, C, H, W] with C = 1 or 3 and N >= 1; got "
            f"{tuple(images.shape)}. Reshape flat samples to images first."
        )
    n, c, h, w = x.shape
    rows = math.ceil(n / columns)
    canvas = torch.full((c, rows * (h + 1) + 1, columns * (w + 1) + 1), SEPARATOR)
    for k in range(n):
        r, col = divmod(k, columns)
        canvas[:, 1 + (h + 1) * r : (h + 1) * (r + 1), 1 + (w + 1) * col : (w + 1) * (col + 1)] = x[k]
    return canvas[0].numpy() if c == 1 else canvas.permute(1, 2, 0).numpy()


def save_sample_panels(
    panels: Sequence[tuple[str, Tensor]],
    path: str | os.PathLike[str],
    *,
    columns: int = 8,
    title: str = "",
) -> bool:
    """Side-by-side grids of image samples as a PNG, one titled panel per ``(name, images)``.

    Images are ``[N, H, W]`` or ``[N, C, H, W]`` with 1 channel (drawn as ink, dark on white) or 3
    (RGB), in model space [-1, 1]; every panel has the same image size. Returns False (and logs
    why) when matplotlib is missing.

    Raises:
        ValueError: for images of another shape or a channel count other than 1 or 3.
    """
    grids = [(name, _image_grid(images, columns)) for name, images in panels]
    plt = _pyplot()
    if plt is None:
        return False
    rows_px = max(g.shape[0] for _, g in grids)
    cols_px = max(g.shape[1] for _, g in grids)
    # Panels keep the canvas' aspect, plus room for two title lines.
    height = 3.2 * rows_px / cols_px + (0.9 if title else 0.6)
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), height), dpi=110, squeeze=False)
    for ax, (name, grid) in zip(axes[0], grids, strict=True):
        if grid.ndim == 2:
            ax.imshow(-grid, cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow((grid + 1.0) / 2.0, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    _save_figure(plt, fig, path, title, top=1.0 - 0.3 / height)
    return True
