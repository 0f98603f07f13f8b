"""Guidance and conditioning: classifier-free guidance as a denoiser, class-conditional teleport.

* :class:`ClassifierFreeGuidance` -- ``D = D_uncond + scale (D_cond - D_uncond)`` around any model
  called as ``model(x, sigma, **kwargs)`` (k-diffusion style,
  :class:`~gaussport.adapters.diffusers.DiffusersDenoiser`, :class:`~gaussport.adapters.edm.EDMDenoiser`).
  Guidance lives in the denoiser, never in a solver
  (docs/peer-conventions.md#guidance-belongs-in-the-denoiser), so every solver runs guided models
  unchanged.
* :class:`ClassConditionalGaussian` -- one Gaussian per class; each sample is teleported with the
  Gaussian of its own class, selected by the same labels the model gets.

Guidance on the denoised value equals guidance on the model's raw output for every prediction type:
``D = x - sigma eps`` (and the v- and flow-conversions) are affine in the output with coefficients
that depend only on ``(x, sigma)``, which both branches share, so
``D_u + s (D_c - D_u) = x - sigma (eps_u + s (eps_c - eps_u))`` -- exactly what pipelines compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..analytic import Gaussian, GaussianMixture
from ..analytic.mixture import same_shape_gaussians
from ._teleport import check_sample_shape

__all__ = ["ClassifierFreeGuidance", "ClassConditionalGaussian", "PerSampleGaussian"]


def _concat(cond: Any, uncond: Any, key: str) -> Any:
    if isinstance(cond, Tensor) and isinstance(uncond, Tensor):
        if cond.shape[1:] != uncond.shape[1:]:
            raise ValueError(
                f"classifier-free guidance: cond[{key!r}] has shape {tuple(cond.shape)} and uncond[{key!r}] "
                f"{tuple(uncond.shape)}; they must match except for the batch dimension (use batched=False "
                "to call the model twice instead)."
            )
        return torch.cat([uncond, cond])
    if cond is uncond or cond == uncond:
        return cond
    raise ValueError(
        f"classifier-free guidance cannot batch the non-tensor argument {key!r} (cond={cond!r}, "
        f"uncond={uncond!r}); pass batched=False to call the model twice."
    )


class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser.

    ``D(x, sigma) = D_u + scale (D_c - D_u)`` with ``D_c = model(x, sigma, **cond)`` and
    ``D_u = model(x, sigma, **uncond)``. ``scale = 1`` is the conditional model alone (one call),
    ``scale = 0`` the unconditional one.

    Args:
        model: ``model(x, sigma, **kwargs) -> x0`` (VE; a k-diffusion-style denoiser).
        scale: the guidance scale ``w``; diffusers' ``guidance_scale`` has the same meaning.
        cond: keyword arguments of the conditional branch (e.g. ``encoder_hidden_states``,
            ``class_labels``).
        uncond: keyword arguments of the unconditional branch (same keys; e.g. empty-prompt
            embeddings or zero one-hot labels).
        batched: evaluate both branches in one model call on a doubled batch (as pipelines do);
            tensor arguments are concatenated ``[uncond, cond]`` along the batch dimension.

    Cost: one model call on ``2B`` samples per evaluation (two calls with ``batched=False``).
    Keyword arguments given per call (k-diffusion ``extra_args``) go to both branches.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        scale: float,
        cond: Mapping[str, Any] | None = None,
        uncond: Mapping[str, Any] | None = None,
        *,
        batched: bool = True,
    ) -> None:
        if not callable(model):
            raise TypeError(
                f"model must be callable as model(x, sigma, **kwargs); got {type(model).__name__}."
            )
        self.model = model
        self.scale = float(scale)
        self.cond = dict(cond or {})
        self.uncond = dict(uncond or {})
        if set(self.cond) != set(self.uncond):
            raise ValueError(
                f"cond and uncond must have the same keys; got {sorted(self.cond)} and "
                f"{sorted(self.uncond)}. "
                "Give the unconditional value of every conditioning argument (e.g. empty-prompt embeddings, "
                "zero one-hot labels)."
            )
        self.batched = batched

    def __call__(self, x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        if self.scale == 1.0:
            return self.model(x, sigma, **self.cond, **extra)
        if self.scale == 0.0:
            return self.model(x, sigma, **self.uncond, **extra)
        if self.batched:
            kwargs = {k: _concat(self.cond[k], self.uncond[k], k) for k in self.cond}
            both = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]), **kwargs, **extra)
            uncond, cond = both.chunk(2)
        else:
            cond = self.model(x, sigma, **self.cond, **extra)
            uncond = self.model(x, sigma, **self.uncond, **extra)
        return uncond + (cond - uncond) * self.scale

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance(scale={self.scale}, keys={sorted(self.cond)}, batched={self.batched})"


def as_class_indices(labels: Any, num_classes: int) -> Tensor:
    """Integer class indices ``[B]`` on the CPU from ``[B]`` integers or ``[B, K]`` one-hot rows.

    Raises:
        ValueError: for missing labels, a wrong width or indices out of range.
    """
    if labels is None:
        raise ValueError(
            "a class-conditional warm start needs the class labels the model gets: pass them to the sampler "
            "in extra_args (under the ClassConditionalGaussian's label_key), to "
            "EDMDenoiser(class_labels=...), "
            "or call ClassConditionalGaussian.select(labels) yourself."
        )
    t = torch.as_tensor(labels)
    # One host synchronisation, once per run and outside the step loop: rows are grouped by class.
    t = t.detach().cpu()
    if t.ndim == 2 and t.is_floating_point():
        if t.shape[1] != num_classes:
            raise ValueError(
                f"one-hot labels have {t.shape[1]} columns but there are {num_classes} class Gaussians."
            )
        t = t.argmax(1)
    elif t.ndim == 1 and t.is_floating_point():
        if not bool((t == t.round()).all()):
            raise ValueError("class labels must be integers (or one-hot rows); got fractional values.")
        t = t.round()
    elif t.ndim != 1:
        raise ValueError(
            f"class labels must have shape [B] (indices) or [B, {num_classes}] (one-hot); "
            f"got {tuple(t.shape)}."
        )
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(
            f"class labels must lie in [0, {num_classes}); got values in [{int(t.min())}, {int(t.max())}]."
        )
    return t


class ClassConditionalGaussian:
    """One Gaussian per class: the warm start of a class-conditional model.

    Each sample is teleported with the Gaussian of its own class (its statistics fitted on that
    class's data), selected by the labels the model gets. The k-diffusion-signature samplers find the
    labels in ``extra_args[label_key]``; the EDM adapter in its ``class_labels``.

    Args:
        gaussians: the Gaussian of class ``k`` at position ``k`` (all of one sample shape).
        label_key: the model argument holding the labels (``"class_labels"`` for EDM and diffusers
            UNets; ``"y"`` or ``"class_cond"`` elsewhere).
    """

    def __init__(self, gaussians: Sequence[Gaussian], *, label_key: str = "class_labels") -> None:
        comps = same_shape_gaussians(gaussians, "a ClassConditionalGaussian (item k = class k)")
        shape = comps[0].shape
        self.gaussians = comps
        self.label_key = label_key
        self._shape = shape

    @classmethod
    def from_mixture(
        cls, mixture: GaussianMixture, *, label_key: str = "class_labels"
    ) -> ClassConditionalGaussian:
        """The components of a mixture as classes (component ``k`` is class ``k``)."""
        return cls(mixture.components, label_key=label_key)

    @classmethod
    def fit(
        cls,
        data: Tensor,
        labels: Tensor,
        num_classes: int | None = None,
        *,
        label_key: str = "class_labels",
        **fit_options: Any,
    ) -> ClassConditionalGaussian:
        """Fit one Gaussian per class with :meth:`Gaussian.fit` (``fit_options`` are passed on)."""
        if num_classes is None:
            raw = torch.as_tensor(labels)
            num_classes = raw.shape[1] if raw.ndim == 2 else int(raw.max()) + 1
        idx = as_class_indices(labels, num_classes)
        comps = []
        for k in range(num_classes):
            rows = (idx == k).nonzero().flatten()
            if rows.numel() < 2:
                raise ValueError(f"class {k} has {rows.numel()} samples; each class needs at least 2 to fit.")
            comps.append(Gaussian.fit(data[rows.to(data.device)], **fit_options))
        return cls(comps, label_key=label_key)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def num_classes(self) -> int:
        return len(self.gaussians)

    def select(self, labels: Any) -> PerSampleGaussian:
        """The per-sample warm start for a batch with these labels (``[B]`` ints or ``[B, K]`` one-hot)."""
        return PerSampleGaussian(self.gaussians, as_class_indices(labels, self.num_classes))

    def bind(self, arguments: Mapping[str, Any]) -> PerSampleGaussian:
        """The warm start of one run, from the labels the model gets in ``arguments[label_key]``.

        The adapters call this on any warm start that has it (k-diffusion's ``extra_args``).

        Raises:
            ValueError: if ``arguments`` hold no labels under ``label_key``.
        """
        return self.select(arguments.get(self.label_key))

    def __repr__(self) -> str:
        return (
            f"ClassConditionalGaussian(classes={self.num_classes}, shape={self._shape}, "
            f"label_key={self.label_key!r})"
        )


class PerSampleGaussian:
    """A batch in which row ``b`` follows the Gaussian ``gaussians[labels[b]]``.

    It is a denoiser and a flow map like :class:`~gaussport.analytic.Gaussian`, row by row. Rows are
    grouped by class (one group per class present), so the cost is one Gaussian application per
    class present, not per class.
    """

    def __init__(self, gaussians: Sequence[Gaussian], labels: Tensor) -> None:
        self.gaussians = tuple(gaussians)
        self.labels = labels.detach().cpu().long()
        self._shape = self.gaussians[0].shape
        self._groups = [(k, (self.labels == k).nonzero().flatten()) for k in self.labels.unique().tolist()]
        self._group_copies: dict[torch.device, list[tuple[int, Tensor]]] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def _check(self, x: Tensor) -> None:
        check_sample_shape(self, x.shape[1:], what="the samples")
        if x.shape[0] != self.labels.numel():
            raise ValueError(
                f"{self.labels.numel()} class labels were given for a batch of {x.shape[0]} samples; pass "
                "one "
                "label per sample."
            )

    def _groups_on(self, device: torch.device) -> list[tuple[int, Tensor]]:
        if device not in self._group_copies:
            self._group_copies[device] = [(k, rows.to(device)) for k, rows in self._groups]
        return self._group_copies[device]

    def _rowwise(self, x: Tensor, fn: Callable[[Gaussian, Tensor, Tensor], Tensor]) -> Tensor:
        self._check(x)
        out = torch.empty_like(x)
        for k, rows in self._groups_on(x.device):
            out.index_copy_(0, rows, fn(self.gaussians[k], x.index_select(0, rows), rows))
        return out

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """Each row moved with its own class Gaussian's exact flow map."""
        return self._rowwise(x, lambda g, xs, rows: g.flow(xs, sigma_from, sigma_to))

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Each row denoised by its own class Gaussian (``sigma`` a scalar or ``[B]``)."""
        sig = torch.as_tensor(sigma, device=x.device)
        if sig.ndim == 0:
            return self._rowwise(x, lambda g, xs, rows: g(xs, sig))
        return self._rowwise(x, lambda g, xs, rows: g(xs, sig.index_select(0, rows)))

    def from_noise(self, z: Tensor, sigma: float) -> Tensor:
        """Each row teleported from pure noise with its own class Gaussian."""
        return self._rowwise(z, lambda g, zs, rows: g.from_noise(zs, sigma))

    def __repr__(self) -> str:
        return f"PerSampleGaussian(batch={self.labels.numel()}, classes={[k for k, _ in self._groups]})"
