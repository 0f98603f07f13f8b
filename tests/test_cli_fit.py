"""`gaussport fit` and `gaussport info`: a generated image folder to a statistics file and back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gaussport import cli
from gaussport.analytic import Gaussian

PNG = b"\x89PNG\r\n\x1a\n"


def _folder(root: Path, n: int = 9, mode: str = "RGB") -> np.ndarray:
    """``n`` random 8x8 images written as PNGs (named so that sorting reverses the order of writing);
    returns their pixels ``[n, C, 8, 8]`` in file-name order."""
    rng = np.random.default_rng(3)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, size=(n, 8, 8, channels), dtype=np.uint8)
    root.mkdir()
    for k in range(n):
        image = pixels[k] if mode == "RGB" else pixels[k, :, :, 0]
        Image.fromarray(image, mode=mode).save(root / f"img_{n - 1 - k:03d}.png")
    return pixels[::-1].transpose(0, 3, 1, 2).copy()


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance by numpy, float64: the independent reference."""
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    return flat.mean(0), np.cov(flat, rowvar=False)


@pytest.mark.filterwarnings("ignore:clamped")  # 9 samples in d = 192: round-off below the rank
def test_fit_writes_a_file_that_info_reads_and_load_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels = _folder(tmp_path / "images")
    out = tmp_path / "stats.safetensors"
    assert cli.main(["fit", str(tmp_path / "images"), "-o", str(out), "--batch-size", "4", "--quiet"]) == 0
    assert "9 samples of shape [3, 8, 8]" in capsys.readouterr().out
    g = Gaussian.load(out)
    mean, cov = _moments(pixels / 127.5 - 1.0)
    assert g.shape == (3, 8, 8) and g.n_samples == 9 and g.representation == "dense"
    assert g.scale == "[-1, 1]" and "9 images 8x8 RGB" in (g.source or "")
    np.testing.assert_allclose(g.mean.reshape(-1).numpy(), mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g.cov.dense().numpy(), cov, rtol=0, atol=1e-6)
    # The same as Gaussian.fit on the same tensor data, and as saving that to .npz.
    x = torch.from_numpy(pixels).to(torch.float32) / 127.5 - 1.0
    direct = Gaussian.fit(x)
    torch.testing.assert_close(g.mean, direct.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(g.cov.dense(), direct.cov.dense(), rtol=0, atol=1e-12)
    direct.save(tmp_path / "direct.npz")
    torch.testing.assert_close(
        Gaussian.load(tmp_path / "direct.npz").cov.dense(), g.cov.dense(), rtol=0, atol=1e-12
    )

    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    spectrum = np.sort(np.linalg.eigvalsh(cov))[::-1]
    assert "[3, 8, 8] (d = 192)" in text and "samples (N)     9" in text and "dense" in text
    assert f"trace           {spectrum.sum():.6g}" in text
    share = spectrum[:16].sum() / spectrum.sum()  # 9 samples: rank 8, all of it in the top 16
    assert f"{100 * share:.1f}% at rank 16" in text and "at rank 64" in text
    participation = spectrum.sum() ** 2 / (spectrum**2).sum()
    assert f"effective rank  {participation:.1f}" in text


def test_fit_flip_limit_diagonal_from_a_grey_folder(tmp_path: Path) -> None:
    pixels = _folder(tmp_path / "grey", n=7, mode="L")
    out = tmp_path / "stats.npz"
    words = ["fit", str(tmp_path / "grey"), "-o", str(out), "--flip", "--limit", "5"]
    assert cli.main([*words, "--representation", "diagonal", "--scale", "uint8_to_01", "--quiet"]) == 0
    g = Gaussian.load(out)
    x = pixels[:5] / 255.0
    x = np.concatenate([x, x[..., ::-1]])  # the mirror images: the last axis reversed
    mean, cov = _moments(x)
    assert g.shape == (1, 8, 8) and g.n_samples == 10 and g.representation == "diagonal"
    np.testing.assert_allclose(g.mean.reshape(-1).numpy(), mean, rtol=0, atol=1e-7)
    np.testing.assert_allclose(g.cov.variances.numpy(), np.diag(cov), rtol=0, atol=1e-7)  # type: ignore[attr-defined]
    m = g.mean.numpy()
    np.testing.assert_allclose(m, m[..., ::-1], rtol=0, atol=1e-12)  # flips make the mean symmetric


def test_fit_low_rank_from_a_npy_file_and_info_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((40, 12)) * np.linspace(3.0, 0.1, 12)
    np.save(tmp_path / "x.npy", data)
    out = tmp_path / "sub" / "low.safetensors"  # the directory is created
    assert cli.main(["fit", str(tmp_path / "x.npy"), "-o", str(out), "--rank", "3", "--quiet"]) == 0
    g = Gaussian.load(out)
    _, cov = _moments(data)
    top = np.sort(np.linalg.eigvalsh(cov))[::-1]
    assert g.representation == "lowrank" and g.n_samples == 40 and g.scale == "as stored"
    np.testing.assert_allclose(g.cov.eigenvalues.numpy(), top[:3], rtol=1e-6)  # type: ignore[attr-defined]
    np.testing.assert_allclose(g.cov.residual, top[3:].mean(), rtol=1e-6)  # type: ignore[attr-defined]
    capsys.readouterr()
    if importlib.util.find_spec("matplotlib") is None:
        assert cli.main(["info", str(out), "--plot", str(tmp_path / "s.png")]) == 2
        return
    assert cli.main(["info", str(out), "--plot", str(tmp_path / "plots" / "s.png")]) == 0
    text = capsys.readouterr().out
    assert f"{100 * top[:3].sum() / top.sum():.1f}% at rank 3" in text and "rank 3, residual" in text
    assert (tmp_path / "plots" / "s.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--rank", "4", "--representation", "dense"], "--rank applies to a low-rank fit"),
        (["--representation", "lowrank"], "--representation lowrank needs --rank R"),
        (["--scale", "uint8_to_pm1", "--limit", "0"], "argument --limit: must be a positive integer"),
    ],
)
def test_fit_refuses_bad_flag_combinations_before_any_work(
    tmp_path: Path,
    words: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _folder(tmp_path / "images", n=2)
    monkeypatch.setattr(Gaussian, "fit", lambda *a, **k: pytest.fail("fitted despite bad input"))
    out = tmp_path / "s.safetensors"
    assert cli.main(["fit", str(tmp_path / "images"), "-o", str(out), *words]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gaussport fit: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()
