"""Bad input, category "trainer": TrainerConfig, Trainer and its checkpoint files.

Every field of :class:`gaussport.training.TrainerConfig` is checked when the configuration is built
(a count below its minimum, a non-integer count, an unknown decay, a non-finite or non-positive rate);
:class:`gaussport.training.Trainer` refuses a non-module model, a non-callable loss, too little data;
a checkpoint that is not one, is damaged, or comes from another configuration or model is a ValueError
naming the file, and loading a refused checkpoint leaves the trainer's weights untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _rules import digest, rejected
from torch import nn

from gaussport.training import Trainer, TrainerConfig
from gaussport.training.trainer import read_checkpoint

DATA = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))


def _loss(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return ((model(x + torch.randn(x.shape, generator=gen)) - x) ** 2).mean()


def _model(dim: int = 3) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Linear(dim, dim)


BAD_CONFIGS: list[dict[str, Any]] = [
    {"steps": 0},
    {"steps": 2.5},
    {"steps": True},
    {"batch_size": -1},
    {"lr": 0.0},
    {"lr": float("nan")},
    {"lr": "1e-3"},
    {"eps": float("inf")},
    {"warmup_steps": -1},
    {"decay": "exp"},
    {"final_lr_fraction": 1.5},
    {"betas": (0.9,)},
    {"betas": (0.9, 1.0)},
    {"ema_fraction": None, "ema_halflife": None},
    {"ema_fraction": -0.1},
    {"ema_halflife": 0.0},
    {"batch_seed": -1},
    {"noise_seed": 1.0},
    {"eval_every": 0},
    {"checkpoint_every": 0},
    {"log_every": 0},
]


@pytest.mark.parametrize("fields", BAD_CONFIGS, ids=[str(c) for c in BAD_CONFIGS])
def test_trainer_config_refuses_bad_fields(fields: dict[str, Any]) -> None:
    rejected(lambda: TrainerConfig(**fields))


def test_trainer_refuses_bad_arguments() -> None:
    cfg = TrainerConfig(steps=2, batch_size=4)
    rejected(lambda: Trainer("model", _loss, DATA, config=cfg))  # type: ignore[arg-type]
    rejected(lambda: Trainer(_model(), "loss", DATA, config=cfg))  # type: ignore[arg-type]
    rejected(lambda: Trainer(_model(), _loss, DATA[:2], config=cfg))
    rejected(lambda: Trainer(_model(), _loss, DATA, config={"steps": 2}))  # type: ignore[arg-type]
    rejected(lambda: Trainer(nn.ReLU(), _loss, DATA, config=cfg))
    rejected(lambda: Trainer(_model(), _loss, (DATA, torch.zeros(5)), config=cfg))
    rejected(lambda: TrainerConfig.from_json({"steps": 2, "colour": "red"}))
    bad_loss = Trainer(_model(), lambda m, x, g: m(x), DATA, config=cfg, disable=True)
    rejected(bad_loss.train)  # a loss that is no scalar


def test_bad_checkpoints_are_refused_and_change_nothing(tmp_path: Path) -> None:
    cfg = TrainerConfig(steps=2, batch_size=4)
    good = tmp_path / "good.safetensors"
    Trainer(_model(), _loss, DATA, config=cfg, disable=True).save(good)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    for path in (junk, cut, tmp_path / "missing.safetensors"):
        rejected(lambda path=path: read_checkpoint(path))
    other_config = Trainer(_model(), _loss, DATA, config=TrainerConfig(steps=3, batch_size=4), disable=True)
    other_model = Trainer(_model(4), _loss, torch.zeros(16, 4), config=cfg, disable=True)
    for trainer in (other_config, other_model):
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        checksum = digest(good)
        exc = rejected(lambda trainer=trainer: trainer.load(good))
        assert str(good) in str(exc)
        assert digest(good) == checksum
        assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # untouched
