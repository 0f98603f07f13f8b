"""`gaussport train`: a data set and its statistics file to EMA weights, a record and a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gaussport import cli
from gaussport.analytic import Gaussian
from gaussport.cli.train import DENOISER_FILE, RECORD_FILE, load_trained_denoiser
from gaussport.training import GaussianResidualDenoiser
from gaussport.training.trainer import CHECKPOINT_FILE, ema_weights


def _flat(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 5)) * [1.0, 2.0, 0.5, 1.0, 0.3] + 1.0).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    stats = tmp_path / "stats.safetensors"
    Gaussian.fit(torch.from_numpy(x).double()).save(stats)
    return tmp_path / "x.npy", stats


def test_train_flat_data_writes_weights_record_and_a_checkpoint_it_resumes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, stats = _flat(tmp_path)
    out = tmp_path / "run"
    line = ["train", str(data), "--statistics", str(stats), "--out", str(out), "--steps", "4"]
    line += ["--batch-size", "16", "--quiet", "--checkpoint-every", "2", "--threads", "1"]
    assert cli.main(line) == 0
    assert "4 steps" in capsys.readouterr().out
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["step"] == 4 and record["residual"] and record["network"]["kind"] == "mlp"
    model = load_trained_denoiser(out)
    assert isinstance(model, GaussianResidualDenoiser)
    saved = ema_weights(out / CHECKPOINT_FILE)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    x, sigma = torch.randn(3, 5, generator=torch.Generator().manual_seed(1)), torch.full((3,), 0.7)
    assert model(x, sigma).shape == (3, 5) and torch.isfinite(model(x, sigma)).all()
    # Resuming at the last step trains nothing more: the same weights are written again.
    assert cli.main([*line, "--resume", str(out / CHECKPOINT_FILE)]) == 0
    again = load_trained_denoiser(out).state_dict()
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())


@pytest.mark.filterwarnings("ignore:clamped")
def test_train_images_with_a_unet_and_edm_preconditioning(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(12, 8, 8), dtype=np.uint8)
    for k in range(12):
        Image.fromarray(pixels[k], mode="L").save(folder / f"{k:02d}.png")
    stats = tmp_path / "stats.npz"
    Gaussian.fit(torch.from_numpy(pixels[:, None].astype(np.float64)) / 127.5 - 1.0, scale="[-1, 1]").save(
        stats
    )
    out = tmp_path / "run"
    line = ["train", str(folder), "--statistics", str(stats), "--out", str(out), "--steps", "2"]
    assert cli.main([*line, "--batch-size", "4", "--no-residual", "--quiet", "--threads", "1"]) == 0
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["network"]["kind"] == "unet" and not record["residual"]
    model = load_trained_denoiser(out)
    x = torch.zeros(2, 1, 8, 8)
    assert model(x, torch.ones(2)).shape == (2, 1, 8, 8)
    assert (out / DENOISER_FILE).read_bytes()[8:9] == b"{"  # a safetensors header, no pickle


def test_train_with_bsm_runs(tmp_path: Path) -> None:
    data, stats = _flat(tmp_path)
    line = ["train", str(data), "--statistics", str(stats), "--out", str(tmp_path / "bsm"), "--steps", "3"]
    assert cli.main([*line, "--batch-size", "16", "--bsm", "--quiet", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "bsm" / RECORD_FILE).read_text())["bsm"] is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--residual", "--no-residual"], "not allowed with argument"),
        (["--bsm", "--no-residual"], "--bsm trains the Gaussian-residual form"),
        (["--batch-size", "100"], "fewer than --batch-size 100"),
        (["--lr", "0"], "0 is outside (0, 1]; give a learning rate inside"),
    ],
)
def test_train_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data, stats = _flat(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", str(data), "--statistics", str(stats), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_train_refuses_statistics_of_another_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = _flat(tmp_path)
    other = tmp_path / "other.safetensors"
    Gaussian.diagonal(torch.zeros(3), torch.ones(3)).save(other)
    assert cli.main(["train", str(data), "--statistics", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "describes samples of shape [3] but" in capsys.readouterr().err
