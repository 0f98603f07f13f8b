"""gaussport.training.Trainer: schedule, EMA, seeds, checkpoints and exact resume (tiny models, CPU)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gaussport.analytic import Gaussian
from gaussport.digits import train as recipe
from gaussport.digits.train import DenoiserConfig, train_denoiser
from gaussport.digits.unet import DigitsUNet
from gaussport.training import Trainer, TrainerConfig, edm_loss
from gaussport.training.trainer import CHECKPOINT_FILE, ema_beta, ema_weights, learning_rate, read_checkpoint


class TinyDenoiser(nn.Module):
    """``D(x, sigma)`` of flat data: an MLP with dropout (so the global RNG matters) on ``[x, log sigma]``."""

    def __init__(self, dim: int = 4, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.inner = nn.Sequential(nn.Linear(dim + 1, 16), nn.SiLU(), nn.Dropout(0.2), nn.Linear(16, dim))
        with torch.no_grad():
            for p in self.inner.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x / (1 + sigma[:, None]), sigma.log()[:, None]], dim=1)
        return self.inner(features)


def _loss(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return edm_loss(model, x, generator=gen)


DATA = torch.randn(40, 4, generator=torch.Generator().manual_seed(7))
CONFIG = TrainerConfig(steps=12, batch_size=8, warmup_steps=3, log_every=3, eval_every=4, noise_seed=5)


def _trainer(**kwargs: object) -> Trainer:
    return Trainer(TinyDenoiser(), _loss, DATA, config=CONFIG, disable=True, **kwargs)  # type: ignore[arg-type]


def _held_out(model: nn.Module, step: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return {"held_out": float(edm_loss(model, DATA[:16], generator=gen)), "step_seen": float(step)}


def test_resume_reproduces_an_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    # 2k steps in one go against k steps, a checkpoint, a fresh trainer loading it and k more; an
    # epoch ends mid-run (40 samples / 8 per batch = 5 steps), so the saved permutation matters.
    whole = _trainer(evaluate=_held_out)
    state = torch.get_rng_state()
    record = whole.train()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is left alone
    first = _trainer(evaluate=_held_out, checkpoint_dir=tmp_path)
    first.train(steps=6)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    second = _trainer(evaluate=_held_out)
    second.load(tmp_path / CHECKPOINT_FILE)
    assert second.step == 6
    resumed = second.train()
    for module in ("model", "ema"):
        a, b = getattr(whole, module).state_dict(), getattr(second, module).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), module
    opt_a, opt_b = whole.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    assert whole.losses == second.losses and len(whole.losses) == 12
    assert record["loss_curve"] == resumed["loss_curve"]
    strip = [{k: v for k, v in e.items() if k != "train_seconds"} for e in record["evaluations"]]
    assert strip == [{k: v for k, v in e.items() if k != "train_seconds"} for e in resumed["evaluations"]]
    assert [e["step"] for e in record["evaluations"]] == [4, 8, 12]
    # A different seed gives different weights (the test can fail).
    other = Trainer(
        TinyDenoiser(),
        _loss,
        DATA,
        config=TrainerConfig(**{**CONFIG.__dict__, "noise_seed": 6}),
        disable=True,
    )
    other.train()
    assert any(
        not torch.equal(p, q) for p, q in zip(whole.model.parameters(), other.model.parameters(), strict=True)
    )


def test_learning_rate_schedule_and_ema_rule() -> None:
    cfg = TrainerConfig(steps=110, lr=1.0, warmup_steps=10, final_lr_fraction=0.1)
    assert learning_rate(0, cfg) == 0.1 and learning_rate(9, cfg) == 1.0
    assert learning_rate(10, cfg) == 1.0 and abs(learning_rate(60, cfg) - 0.55) < 1e-12
    assert abs(learning_rate(110, cfg) - 0.1) < 1e-12
    linear = TrainerConfig(steps=110, lr=1.0, warmup_steps=10, final_lr_fraction=0.0, decay="linear")
    assert abs(learning_rate(35, linear) - 0.75) < 1e-12
    assert learning_rate(100, TrainerConfig(steps=110, lr=0.5, decay="constant", warmup_steps=0)) == 0.5
    # Half-life as a fraction of samples seen: after step s, beta^(halflife / batch) = 1/2 with
    # halflife = 0.05 * (s + 1) * batch; a fixed half-life caps it (EDM's rule).
    frac = TrainerConfig(batch_size=4, ema_fraction=0.05)
    for step in (0, 9, 999):
        assert math.isclose(ema_beta(step, frac) ** (0.05 * (step + 1)), 0.5, rel_tol=1e-12)
    both = TrainerConfig(batch_size=4, ema_fraction=0.05, ema_halflife=100.0)
    assert math.isclose(ema_beta(10_000, both) ** 25, 0.5, rel_tol=1e-12)
    assert ema_beta(0, both) == ema_beta(0, frac)


def test_ema_follows_constant_weights_and_evaluations_land_in_the_record(tmp_path: Path) -> None:
    # lr tiny: the weights barely move, so the EMA equals them to round-off; the hook sees the EMA.
    cfg = TrainerConfig(steps=4, batch_size=8, lr=1e-12, warmup_steps=0, eval_every=2, log_every=2)
    trainer = Trainer(TinyDenoiser(), _loss, DATA, config=cfg, disable=True, evaluate=_held_out)
    record = trainer.train()
    for p, q in zip(trainer.model.parameters(), trainer.ema.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-9)
    assert [e["step_seen"] for e in record["evaluations"]] == [2.0, 4.0]
    assert record["step"] == 4 and len(record["loss_curve"]) == 2 and record["parameters"] == 164
    trainer.save(tmp_path / "c.safetensors", extra={"note": "x"})
    meta, arrays = read_checkpoint(tmp_path / "c.safetensors")
    assert meta["step"] == 4 and meta["extra"] == {"note": "x"}
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    weights = ema_weights(tmp_path / "c.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in trainer.ema.state_dict().items())


def test_data_from_files_and_tuples(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", DATA.numpy())
    from_file = Trainer(TinyDenoiser(), _loss, tmp_path / "x.npy", config=CONFIG, disable=True)
    assert torch.equal(from_file.data[0], DATA)
    labels = torch.arange(40)
    seen = []

    def loss(
        model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator
    ) -> torch.Tensor:
        x, y = batch
        seen.append(y)
        assert torch.equal(x, DATA[y])  # rows stay paired
        return _loss(model, x, gen)

    cfg = TrainerConfig(steps=5, batch_size=8, warmup_steps=0)
    Trainer(TinyDenoiser(), loss, (DATA, labels), config=cfg, disable=True).train()
    assert sorted(torch.cat(seen).tolist()) == list(range(40))  # one epoch: every sample once


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps"):
        TrainerConfig(steps=0)
    with pytest.raises(ValueError, match="decay"):
        TrainerConfig(decay="step")
    with pytest.raises(ValueError, match="ema_fraction"):
        TrainerConfig(ema_fraction=None, ema_halflife=None)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        Trainer(TinyDenoiser(), _loss, DATA[:4], config=CONFIG, disable=True)
    with pytest.raises(TypeError, match="nn.Module"):
        Trainer(lambda x: x, _loss, DATA, config=CONFIG)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="first dimension"):
        Trainer(TinyDenoiser(), _loss, (DATA, torch.arange(3)), config=CONFIG)
    trainer = _trainer()
    trainer.save(tmp_path / "c.safetensors")
    other = Trainer(
        TinyDenoiser(), _loss, DATA, config=TrainerConfig(**{**CONFIG.__dict__, "lr": 1e-3}), disable=True
    )
    with pytest.raises(ValueError, match="lr: 0.002 there, 0.001 here"):
        other.load(tmp_path / "c.safetensors")
    bigger = Trainer(TinyDenoiser(dim=5), _loss, torch.zeros(40, 5), config=CONFIG, disable=True)
    with pytest.raises(ValueError, match="has shape"):
        bigger.load(tmp_path / "c.safetensors")
    data = bytearray((tmp_path / "c.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "d.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        read_checkpoint(tmp_path / "d.safetensors")
    (tmp_path / "e.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # another's
    with pytest.raises(ValueError, match="not a gaussport training checkpoint"):
        read_checkpoint(tmp_path / "e.safetensors")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:clamped")  # 40 samples in d = 64: a rank-deficient covariance
def test_digits_recipe_resumes_bitwise_in_the_residual_form(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=gen) * 2 - 1
    y = torch.randint(0, 10, (40,), generator=gen)
    gaussian = Gaussian.fit(x.double() + 0.05 * torch.randn(40, 1, 8, 8, generator=gen, dtype=torch.float64))
    tiny = {"model_channels": 8, "emb_dim": 16, "attention_heads": 2}
    cfg = DenoiserConfig(steps=4, batch_size=16, warmup_steps=2, network=tiny)
    whole, record = train_denoiser(x, y, seed=3, config=cfg, gaussian=gaussian, disable=True)
    assert record["residual"] and record["steps"] == 4
    # The recipe's trainer stopped after 2 steps (a checkpoint there), then a fresh call resumes from it.
    unet = DigitsUNet(generator=torch.Generator().manual_seed(3), **tiny)
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    loss = functools.partial(recipe._digits_loss, cfg=cfg, weighting="denoiser")
    first = Trainer(
        recipe.residual_digits_denoiser(unet, gaussian),
        loss,
        (x, one_hot),
        config=recipe.trainer_config(cfg, 3),
        checkpoint_dir=tmp_path,
        disable=True,
    )
    first.train(steps=2)
    resumed, _ = train_denoiser(
        x, y, seed=3, config=cfg, gaussian=gaussian, disable=True, resume=tmp_path / CHECKPOINT_FILE
    )
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
