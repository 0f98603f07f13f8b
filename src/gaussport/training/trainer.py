"""A small trainer for denoisers: Adam with warm-up and decay, EMA, seeded draws, checkpoints, exact resume.

:class:`Trainer` runs ``steps`` optimiser steps of any loss callable ``loss(model, batch, generator)
-> scalar`` (e.g. :func:`gaussport.training.edm_loss` wrapped in a lambda) on data held in memory,
and keeps an exponential moving average (EMA) of the weights -- the weights to sample with.

What it guarantees:

* **Fixed seeds.** Every draw comes from explicit generators: the mini-batches from a CPU
  ``torch.Generator`` (``TrainerConfig.batch_seed``), the loss's noise from one on the model's device
  (``noise_seed``; ``None`` shares the batch generator, as the shipped digits recipe does), and
  whatever uses the global RNG (``nn.Dropout``) runs inside ``torch.random.fork_rng`` seeded with
  ``global_seed``: the caller's global RNG state is left as it was.
* **Exact resume.** A checkpoint holds the weights, the EMA, the optimiser state, the step, the state
  of every generator (global RNG included), the position in the current epoch's permutation and the
  loss history. Resuming from the checkpoint of step ``k`` and training on reproduces the
  uninterrupted run bitwise on the CPU (tested); on a GPU, as far as its kernels are deterministic.
* **Safe files.** Checkpoints are safetensors files written atomically
  (:func:`gaussport._files.write_safetensors`) with a SHA-256 of their contents; the optimiser state
  is flattened into tensors plus JSON, the configuration is JSON in the header: nothing is pickled,
  nothing unpickled.
* **Any device.** The model is moved to ``device`` (default: where its parameters are); data
  batches are moved there per step; nothing assumes the CPU.

Learning rate (:func:`learning_rate`): linear warm-up from 0 over ``warmup_steps``, then a cosine (or
linear) decay to ``lr * final_lr_fraction`` at the last step (``"constant"``: no decay).

EMA (:func:`ema_beta`): after each step ``ema = beta ema + (1 - beta) weights`` with
``beta = 0.5 ** (batch_size / halflife)``, the half-life counted in training samples. With
``ema_fraction`` the half-life is that fraction of the samples seen so far (EDM's ramp-up rule,
Karras et al. 2022, App. F.3: early weights are forgotten quickly); with ``ema_halflife`` it is
fixed; with both, the smaller of the two (EDM's ``ema_halflife_kimg`` with ``ema_rampup_ratio``).

Cost per step: one forward and backward pass of the loss, one Adam update and one EMA update
(``O(parameters)``). The data live in memory (on the model's device): this trainer is meant for
small data sets and recipes; for large data sets write your own loop with the losses.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import as_int
from .._files import Array, read_safetensors, write_safetensors

__all__ = [
    "CHECKPOINT_FILE",
    "Trainer",
    "TrainerConfig",
    "ema_beta",
    "ema_weights",
    "learning_rate",
    "read_checkpoint",
]

logger = logging.getLogger("gaussport")

CHECKPOINT_FORMAT = "gaussport.training_checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.safetensors"
DECAYS = ("cosine", "linear", "constant")

LossFunction = Callable[[nn.Module, Any, torch.Generator], Tensor]
EvaluateFunction = Callable[[nn.Module, int], Mapping[str, float]]


@dataclass(frozen=True)
class TrainerConfig:
    """Hyper-parameters of a :class:`Trainer` run (defaults: the shipped digits recipe's).

    Attributes:
        steps: optimiser steps of the whole run.
        batch_size: samples per step; batches are drawn epoch by epoch without replacement (a fresh
            permutation per epoch; an epoch's last incomplete batch is dropped).
        lr: peak learning rate.
        warmup_steps: linear warm-up from 0 to ``lr`` over these steps.
        decay: ``"cosine"``, ``"linear"`` or ``"constant"`` after the warm-up.
        final_lr_fraction: the decay ends at ``lr * final_lr_fraction`` at the last step.
        betas: Adam's betas (EDM's 0.9, 0.999).
        eps: Adam's epsilon.
        ema_fraction: EMA half-life as a fraction of the samples seen so far (``None``: not used).
        ema_halflife: a fixed EMA half-life in samples (``None``: not used). At least one of the two.
        batch_seed: seed of the CPU generator drawing the batches.
        noise_seed: seed of the generator passed to the loss (on the model's device); ``None``: the
            loss draws from the batch generator (one stream, as the shipped digits recipe).
        global_seed: seed of the global RNG inside the run (``nn.Dropout``).
        log_every: steps per entry of the loss curve (mean loss), log line and progress-bar update.
        eval_every: steps between calls of the evaluation hook (``None``: only after the last step).
        checkpoint_every: steps between checkpoints (``None``: only after the last step, when the
            trainer has a checkpoint directory).
        grad_nan_to_num: replace NaN/inf gradient entries by 0 / +-1e5 before the update (the
            shipped digits recipe does; a rare overflow at tiny sigma then skips one entry, not the run).
    """

    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200
    decay: str = "cosine"
    final_lr_fraction: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    ema_fraction: float | None = 0.05
    ema_halflife: float | None = None
    batch_seed: int = 0
    noise_seed: int | None = 1
    global_seed: int = 2
    log_every: int = 100
    eval_every: int | None = None
    checkpoint_every: int | None = None
    grad_nan_to_num: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            as_int(getattr(self, name), name, minimum=1)
        for name in ("eval_every", "checkpoint_every"):
            as_int(getattr(self, name), name, minimum=1, allow_none=True)
        as_int(self.warmup_steps, "warmup_steps", minimum=0)
        for name in ("batch_seed", "global_seed"):
            as_int(getattr(self, name), name, minimum=0)
        as_int(self.noise_seed, "noise_seed", minimum=0, allow_none=True)
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}; got {self.decay!r}.")
        _positive("lr", self.lr)
        _positive("eps", self.eps)
        if not (_number(self.final_lr_fraction) and 0 <= self.final_lr_fraction <= 1):
            raise ValueError(
                f"final_lr_fraction must be in [0, 1], e.g. 0.1; got {self.final_lr_fraction!r}."
            )
        if len(self.betas) != 2 or not all(_number(b) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), e.g. (0.9, 0.999); got {self.betas!r}.")
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))
        if self.ema_fraction is None and self.ema_halflife is None:
            raise ValueError("give ema_fraction (e.g. 0.05) or ema_halflife (samples), or both.")
        if self.ema_fraction is not None:
            _positive("ema_fraction", self.ema_fraction)
        if self.ema_halflife is not None:
            _positive("ema_halflife", self.ema_halflife)

    def to_json(self) -> dict[str, Any]:
        """The configuration as JSON values (``betas`` as a list)."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> TrainerConfig:
        """The inverse of :meth:`to_json`; unknown keys are a ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown trainer configuration keys {unknown}; known: {sorted(known)}.")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: object) -> None:
    if not (_number(value) and value > 0):  # type: ignore[operator]
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")


def learning_rate(step: int, config: TrainerConfig) -> float:
    """The learning rate of step ``step`` (0-based): linear warm-up, then the decay (module docstring)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.decay == "constant":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    floor = config.final_lr_fraction
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if config.decay == "cosine" else 1 - progress
    return config.lr * (floor + (1 - floor) * shape)


def ema_beta(step: int, config: TrainerConfig) -> float:
    """The EMA decay applied after step ``step`` (0-based): ``0.5 ** (batch_size / halflife)``."""
    seen = (step + 1) * config.batch_size
    halflife = math.inf
    if config.ema_halflife is not None:
        halflife = config.ema_halflife
    if config.ema_fraction is not None:
        halflife = min(halflife, config.ema_fraction * seen)
    return 0.5 ** (config.batch_size / max(halflife, 1e-8))


# ---------------------------------------------------------------------- data
def _as_tensors(data: Any) -> tuple[Tensor, ...]:
    """``data`` as a tuple of tensors with one common first dimension (loaded into memory)."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, Tensor):
        tensors: tuple[Tensor, ...] = (data,)
    elif isinstance(data, tuple) and data and all(isinstance(t, (Tensor, np.ndarray)) for t in data):
        tensors = tuple(torch.as_tensor(t) for t in data)
    else:
        from ..analytic.sources import as_batches

        # Paths, image folders, lists of batches, DataLoaders: one pass, concatenated in memory.
        source = data if hasattr(data, "description") and callable(data) else as_batches(data, disable=True)
        batches = list(source())
        if not batches:
            raise ValueError(f"{source.description}: the data hold no samples; give at least batch_size.")
        tensors = (torch.cat(batches),)
    n = tensors[0].shape[0] if tensors[0].ndim else 0
    for t in tensors:
        if t.ndim == 0 or t.shape[0] != n:
            shapes = [tuple(x.shape) for x in tensors]
            raise ValueError(
                f"the data tensors must share their first dimension (samples); got shapes {shapes}."
            )
    return tensors


class _Batches:
    """Epoch-wise permutations from ``generator``; the state (permutation, position) is checkpointed."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.permutation: Tensor | None = None
        self.position = 0

    def next(self) -> Tensor:
        if self.permutation is None or self.position + self.batch_size > self.n:
            self.permutation = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        idx = self.permutation[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """Train ``model`` on ``data`` with ``loss``: Adam, learning-rate schedule, EMA, checkpoints.

    Args:
        model: the network to train (its parameters are updated in place); the EMA is a deep copy.
        loss: ``loss(model, batch, generator) -> scalar tensor``; ``batch`` is a tensor (or a tuple of
            tensors when ``data`` is a tuple, e.g. ``(images, labels)``) on ``device``, ``generator``
            the noise generator (on ``device``). E.g. ``lambda m, x, g: edm_loss(m, x, generator=g)``.
        data: a tensor or NumPy array ``[N, ...]``, a tuple of them sharing ``N`` (images and labels),
            or anything :func:`gaussport.analytic.sources.as_batches` reads (``.npy``/``.npz`` files,
            image folders, lists of batches, DataLoaders), loaded into memory once.
        config: the hyper-parameters (:class:`TrainerConfig`).
        optimizer: an optimiser over ``model``'s parameters (default: Adam with ``config``'s betas
            and eps); the schedule sets every parameter group's ``lr`` before each step.
        device: where to train (default: the device of ``model``'s parameters); e.g. ``"cuda"``.
        evaluate: a hook ``evaluate(ema_model, step) -> {name: float}`` called every
            ``config.eval_every`` steps and after the last; its results land in
            ``record["evaluations"]`` with the step and the training wall time so far (evaluation
            time excluded). E.g. held-out loss, a Frechet distance.
        checkpoint_dir: where :data:`CHECKPOINT_FILE` is written every ``config.checkpoint_every``
            steps, when :meth:`train` stops early and after the last step (created if needed;
            ``None``: no checkpoints unless :meth:`save` is called).
        disable: disables the progress bar (``None``: only on a terminal, as tqdm does).

    Example:
        >>> import torch
        >>> from gaussport.training import Trainer, TrainerConfig
        >>> net = torch.nn.Linear(2, 2)
        >>> data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        >>> def loss(model, x, gen):
        ...     return ((model(x + torch.randn(x.shape, generator=gen)) - x) ** 2).mean()
        >>> cfg = TrainerConfig(steps=20, batch_size=16, warmup_steps=5, noise_seed=None)
        >>> record = Trainer(net, loss, data, config=cfg, disable=True).train()
        >>> record["step"]
        20
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFunction,
        data: Any,
        *,
        config: TrainerConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        device: torch.device | str | None = None,
        evaluate: EvaluateFunction | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        disable: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if not callable(loss):
            raise TypeError(
                f"loss must be a callable loss(model, batch, generator); got {type(loss).__name__}."
            )
        self.config = config or TrainerConfig()
        if not isinstance(self.config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig; got {type(self.config).__name__}.")
        first = next(iter(model.parameters()), None)
        if first is None:
            raise ValueError("model has no parameters to train.")
        self.device = torch.device(device) if device is not None else first.device
        self.model = model.to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.loss = loss
        self.data = tuple(t.to(self.device) for t in _as_tensors(data))
        self.n = self.data[0].shape[0]
        if self.n < self.config.batch_size:
            raise ValueError(
                f"the data hold {self.n} samples, fewer than batch_size {self.config.batch_size}; "
                "give a smaller batch_size or more data."
            )
        cfg = self.config
        self.optimizer = optimizer or torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps
        )
        self.evaluate = evaluate
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.disable = disable
        self.batch_generator = torch.Generator().manual_seed(cfg.batch_seed)
        if cfg.noise_seed is None:
            self.noise_generator = self.batch_generator
        else:
            self.noise_generator = torch.Generator(device=self.device).manual_seed(cfg.noise_seed)
        self._batches = _Batches(self.n, cfg.batch_size, self.batch_generator)
        self._global_state: dict[str, Tensor] | None = None  # set by load(); else seeded at the start
        self._running = False  # inside train(): the global RNG's live state is the run's
        self._saved_step: int | None = None
        self.step = 0
        self.losses: list[float] = []
        self.evaluations: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.loads: list[float] = []

    # ------------------------------------------------------------------ running
    def _batch(self) -> Tensor | tuple[Tensor, ...]:
        idx = self._batches.next().to(self.device)
        parts = tuple(t[idx] for t in self.data)
        return parts[0] if len(parts) == 1 else parts

    @contextlib.contextmanager
    def _global_rng(self) -> Iterator[None]:
        """The run's global RNG: seeded (first start) or restored (resume), saved again on exit."""
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda, device_type="cuda" if cuda else "cpu"):
            if self._global_state is None:
                torch.manual_seed(self.config.global_seed)
            else:
                torch.set_rng_state(self._global_state["cpu"])
                if cuda and "cuda" in self._global_state:
                    torch.cuda.set_rng_state(self._global_state["cuda"], self.device)
            self._running = True
            try:
                yield
            finally:
                self._running = False
                self._global_state = self._live_global_state()

    def _live_global_state(self) -> dict[str, Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def train(self, steps: int | None = None) -> dict[str, Any]:
        """Run until ``config.steps`` (or ``steps`` more steps, stopping there: for resume tests and
        interrupted runs); return :meth:`record`."""
        cfg = self.config
        end = cfg.steps if steps is None else min(cfg.steps, self.step + as_int(steps, "steps", minimum=0))
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=self.disable,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        if self.checkpoint_dir is not None:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
        self.model.train()
        tick = time.perf_counter()
        try:
            with self._global_rng():
                while self.step < end:
                    self._one_step()
                    bar.update(1)
                    step = self.step
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        now = time.perf_counter()
                        self.train_seconds += now - tick
                        tick = now
                        self._log(bar)
                    if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                        self.train_seconds += time.perf_counter() - tick
                        self._evaluate()
                        tick = time.perf_counter()
                    if self.checkpoint_dir is not None and (
                        (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps
                    ):
                        self.train_seconds += time.perf_counter() - tick
                        self.save(self.checkpoint_dir / CHECKPOINT_FILE)
                        tick = time.perf_counter()
                self.train_seconds += time.perf_counter() - tick
                if self.checkpoint_dir is not None and self._saved_step != self.step:
                    self.save(self.checkpoint_dir / CHECKPOINT_FILE)  # a run stopped early resumes here
        finally:
            bar.close()
        return self.record()

    def _one_step(self) -> None:
        cfg = self.config
        batch = self._batch()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, cfg)
        loss = self.loss(self.model, batch, self.noise_generator)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(
                f"loss must return a scalar tensor; got {type(loss).__name__} {getattr(loss, 'shape', '')}."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_nan_to_num:
            for p in self.model.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        self.optimizer.step()
        beta = ema_beta(self.step, cfg)
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - beta)
            for b_ema, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
                b_ema.copy_(b)
        self.losses.append(float(loss.detach()))
        self.step += 1

    def _log(self, bar: Any) -> None:
        window = self.losses[-self.config.log_every :]
        mean = statistics.fmean(window)
        rate = self.step * self.config.batch_size / max(self.train_seconds, 1e-9)
        bar.set_postfix(loss=f"{mean:.4f}", samples_per_s=f"{rate:.0f}")
        if hasattr(os, "getloadavg"):
            self.loads.append(os.getloadavg()[0])
        logger.info("step %d/%d: loss %.5f, %.0f samples/s", self.step, self.config.steps, mean, rate)

    def _evaluate(self) -> None:
        if self.evaluate is None:
            return
        if self.evaluations and self.evaluations[-1]["step"] == self.step:
            return  # already evaluated at this step (a resume at an evaluation step)
        values = dict(self.evaluate(self.ema, self.step))
        entry = {"step": self.step, "train_seconds": self.train_seconds}
        for key, value in values.items():
            entry[str(key)] = float(value)
        self.evaluations.append(entry)
        logger.info("step %d: %s", self.step, ", ".join(f"{k} {v:.5g}" for k, v in values.items()))

    def record(self) -> dict[str, Any]:
        """What the run did: config, step, loss curve (mean per ``log_every``), final loss (mean of the
        last 10% of steps), evaluations, wall time, load average, parameter count (JSON values)."""
        cfg = self.config
        every = cfg.log_every
        curve = [
            [end, statistics.fmean(self.losses[end - every : end])]
            for end in range(every, len(self.losses) + 1, every)
        ]
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        loads = self.loads
        return {
            "config": cfg.to_json(),
            "step": self.step,
            "final_loss": statistics.fmean(tail) if tail else None,
            "loss_curve": curve,
            "evaluations": [dict(e) for e in self.evaluations],
            "train_seconds": self.train_seconds,
            "seconds_per_step": self.train_seconds / max(1, self.step),
            "load_average_1min": (
                {"min": min(loads), "mean": statistics.fmean(loads), "max": max(loads)} if loads else None
            ),
            "parameters": sum(p.numel() for p in self.ema.parameters()),
            "device": str(self.device),
        }

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> None:
        """Write a checkpoint (safetensors, atomically): weights, EMA, optimiser, generators, step.

        ``extra`` (JSON values) is stored in the metadata under ``"extra"``.
        """
        arrays: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}

        def put(name: str, tensor: Tensor) -> None:
            t = tensor.detach().to("cpu").contiguous()
            dtypes[name] = str(t.dtype).removeprefix("torch.")
            if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: store its bits
                t = t.view(torch.int16)
            arrays[name] = t.numpy()

        for key, value in self.model.state_dict().items():
            put(f"model/{key}", value)
        for key, value in self.ema.state_dict().items():
            put(f"ema/{key}", value)
        opt_state = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, state in opt_state["state"].items():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    put(f"optimizer/{index}/{key}", value)
                else:
                    scalars.setdefault(str(index), {})[key] = value
        put("rng/batches", self.batch_generator.get_state())
        if self.noise_generator is not self.batch_generator:
            put("rng/noise", self.noise_generator.get_state())
        global_state = self._live_global_state() if self._running else (self._global_state or {})
        for key, value in global_state.items():
            put(f"rng/global_{key}", value)
        if self._batches.permutation is not None:
            put("data/permutation", self._batches.permutation)
        put("record/losses", torch.tensor(self.losses, dtype=torch.float64))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]
        metadata = {
            "config": self.config.to_json(),
            "step": self.step,
            "position": self._batches.position,
            "optimizer": {"class": type(self.optimizer).__name__, "param_groups": groups, "scalars": scalars},
            "dtypes": dtypes,
            "evaluations": self.evaluations,
            "train_seconds": self.train_seconds,
            "loads": self.loads,
            "global_seeded": self._running or self._global_state is not None,
            "extra": dict(extra or {}),
        }
        write_safetensors(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, metadata, arrays)
        self._saved_step = self.step

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore the state saved by :meth:`save` into this trainer (same configuration and model).

        Raises:
            ValueError: not a checkpoint, damaged, another configuration (the differing keys are
                named) or another model (the missing or misshapen weights are named).
            FileNotFoundError: no such file.
        """
        name = os.fspath(path)
        meta, arrays = read_checkpoint(path)
        saved = meta["config"]
        mine = self.config.to_json()
        differ = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        if differ:
            detail = ", ".join(f"{k}: {saved.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
            raise ValueError(
                f"{name} was written with another trainer configuration ({detail}); resume with the same one."
            )
        dtypes = meta["dtypes"]

        def get(key: str) -> Tensor:
            value = torch.from_numpy(np.array(arrays[key]))
            dtype = getattr(torch, dtypes.get(key, ""), None)
            if isinstance(dtype, torch.dtype) and dtype != value.dtype:
                value = value.view(dtype) if dtype == torch.bfloat16 else value.to(dtype)
            return value

        # Everything is checked before anything is copied: a refused file leaves the trainer as it was.
        copies: list[tuple[Tensor, Tensor]] = []
        for prefix, module in (("model/", self.model), ("ema/", self.ema)):
            state = module.state_dict()
            stored = {k.removeprefix(prefix) for k in arrays if k.startswith(prefix)}
            if stored != set(state):
                missing, unexpected = sorted(set(state) - stored), sorted(stored - set(state))
                raise ValueError(
                    f"{name} holds the weights of another model (missing {missing[:5]}, unexpected "
                    f"{unexpected[:5]}); resume with the model that wrote it."
                )
            for key, current in state.items():
                value = get(prefix + key)
                if value.shape != current.shape:
                    raise ValueError(
                        f"{name}: {prefix}{key} has shape {tuple(value.shape)}, the model's "
                        f"{tuple(current.shape)}; resume with the model that wrote it."
                    )
                copies.append((current, value))
        opt = meta["optimizer"]
        if opt.get("class") != type(self.optimizer).__name__:
            raise ValueError(
                f"{name} holds the state of a {opt.get('class')} optimiser; this trainer uses "
                f"{type(self.optimizer).__name__}."
            )
        with torch.no_grad():
            for current_tensor, value in copies:
                current_tensor.copy_(value)
        current = self.optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for key in arrays:
            if key.startswith("optimizer/"):
                _, index, field = key.split("/", 2)
                state.setdefault(int(index), {})[field] = get(key)
        for index, values in opt["scalars"].items():
            state.setdefault(int(index), {}).update(values)
        groups = []
        for group, stored_group in zip(current["param_groups"], opt["param_groups"], strict=True):
            restored = dict(group)
            for k, v in stored_group.items():
                restored[k] = tuple(v) if isinstance(group.get(k), tuple) else v
            groups.append(restored)
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.batch_generator.set_state(get("rng/batches"))
        if self.noise_generator is not self.batch_generator:
            self.noise_generator.set_state(get("rng/noise"))
        if meta["global_seeded"]:
            self._global_state = {
                k.removeprefix("rng/global_"): get(k) for k in arrays if k.startswith("rng/global_")
            }
        self._batches.permutation = get("data/permutation") if "data/permutation" in arrays else None
        self._batches.position = int(meta["position"])
        self.step = int(meta["step"])
        self.losses = get("record/losses").tolist()
        self.evaluations = [dict(e) for e in meta["evaluations"]]
        self.train_seconds = float(meta["train_seconds"])
        self.loads = [float(v) for v in meta["loads"]]
        logger.info("resumed from %s at step %d", name, self.step)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(metadata, arrays)`` of a :class:`Trainer` checkpoint, validated (nothing is unpickled).

    Raises:
        ValueError: the file is not a checkpoint, damaged or of a newer version.
        FileNotFoundError: no such file.
    """

    def spec(meta: dict[str, Any]) -> dict[str, Array]:
        return {key: Array(kinds="biuf", finite=not key.startswith("optimizer/")) for key in meta["dtypes"]}

    return read_safetensors(
        path,
        CHECKPOINT_FORMAT,
        CHECKPOINT_VERSION,
        what="training checkpoint",
        arrays=spec,
        fields={
            "config": (dict,),
            "step": (int,),
            "position": (int,),
            "optimizer": (dict,),
            "dtypes": (dict,),
            "evaluations": (list,),
            "train_seconds": (int, float),
            "loads": (list,),
            "global_seeded": (bool,),
        },
        hint=" (written by gaussport.training.Trainer.save)",
    )


def ema_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The EMA weights stored in a checkpoint, as a state dict (e.g. to ``load_state_dict``)."""
    meta, arrays = read_checkpoint(path)
    out = {}
    for key, value in arrays.items():
        if key.startswith("ema/"):
            t = torch.from_numpy(np.array(value))
            dtype = getattr(torch, meta["dtypes"][key], None)
            if dtype == torch.bfloat16:
                t = t.view(torch.bfloat16)
            out[key.removeprefix("ema/")] = t
    return out
