"""gaussport.analytic.sources: every data source gives the same samples, scaled, flipped and limited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from gaussport.analytic import Gaussian
from gaussport.analytic.sources import as_batches

RNG = np.random.default_rng(5)
PIXELS = RNG.integers(0, 256, size=(7, 3, 4, 5), dtype=np.uint8)  # [N, C, H, W], W != H


def _all(source) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.cat(list(source()))


def _sources(tmp_path: Path) -> dict[str, object]:
    np.save(tmp_path / "x.npy", PIXELS)
    np.savez(tmp_path / "x.npz", images=PIXELS)
    (tmp_path / "images").mkdir()
    for k, image in enumerate(PIXELS):
        Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / "images" / f"{k:02d}.png")
    t = torch.from_numpy(PIXELS)
    loader = DataLoader(TensorDataset(t, torch.arange(7)), batch_size=3)
    return {
        "tensor": t,
        "array": PIXELS,
        "list": list(t.split(2)),
        "dataloader (data, label)": loader,
        "callable": lambda: iter(t.split(4)),
        "npy": tmp_path / "x.npy",
        "npz": str(tmp_path / "x.npz"),
        "folder": tmp_path / "images",
    }


def test_every_source_gives_the_same_scaled_samples_on_every_pass(tmp_path: Path) -> None:
    expected = torch.from_numpy(PIXELS).to(torch.float32) / 127.5 - 1.0
    for name, data in _sources(tmp_path).items():
        source = as_batches(data, batch_size=3, scale="uint8_to_pm1", disable=True)
        for _ in range(2):  # re-iterable: each call a fresh pass
            torch.testing.assert_close(_all(source), expected, rtol=0, atol=0, msg=name)
        assert source.count in (7, None), name
    folder = as_batches(tmp_path / "images", disable=True)  # images default to [-1, 1]
    assert folder.shape == (3, 4, 5) and folder.count == 7 and folder.scale == "uint8_to_pm1"
    torch.testing.assert_close(_all(folder), expected, rtol=0, atol=0)
    ones = as_batches(PIXELS, scale="uint8_to_01", disable=True)
    torch.testing.assert_close(_all(ones), torch.from_numpy(PIXELS) / 255.0, rtol=0, atol=0)


def test_flip_mirrors_the_last_axis_after_the_limit_and_fits_like_the_doubled_data() -> None:
    x = torch.from_numpy(RNG.standard_normal((9, 2, 3)))
    source = as_batches(x, batch_size=4, flip=True, limit=6, disable=True)
    got = list(source())
    assert [b.shape[0] for b in got] == [8, 4] and source.count == 12
    doubled = torch.cat([x[:4], x[:4].flip(-1), x[4:6], x[4:6].flip(-1)])
    torch.testing.assert_close(torch.cat(got), doubled, rtol=0, atol=0)
    g = Gaussian.fit(source, representation="diagonal")
    assert g.n_samples == 12
    torch.testing.assert_close(g.mean, doubled.mean(0), rtol=0, atol=1e-14)


def test_a_one_shot_iterable_allows_one_pass() -> None:
    source = as_batches(iter([torch.zeros(2, 3), torch.ones(2, 3)]), disable=True)
    assert _all(source).shape == (4, 3)
    with pytest.raises(ValueError, match="one-shot iterable allows one pass"):
        source()


def test_bad_sources_are_refused_before_the_first_pass(tmp_path: Path) -> None:
    (tmp_path / "mixed").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "mixed" / "a.png")
    Image.new("RGB", (4, 5)).save(tmp_path / "mixed" / "b.png")
    with pytest.raises(ValueError, match="same size and colour mode"):
        as_batches(tmp_path / "mixed")
    (tmp_path / "deep").mkdir()
    Image.new("I;16", (4, 4)).save(tmp_path / "deep" / "a.png")
    with pytest.raises(ValueError, match="16-bit"):
        as_batches(tmp_path / "deep")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG or JPEG"):
        as_batches(tmp_path / "empty")
    np.savez(tmp_path / "two.npz", a=PIXELS, b=PIXELS)
    with pytest.raises(ValueError, match="holds 2 arrays"):
        as_batches(tmp_path / "two.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="without unpickling"):
        as_batches(tmp_path / "objects.npy")
    with pytest.raises(ValueError, match="maps uint8 values"):
        as_batches(torch.zeros(3, 2), scale="uint8_to_pm1")
    with pytest.raises(FileNotFoundError):
        as_batches(tmp_path / "absent.npy")
    with pytest.raises(TypeError):
        as_batches(3.0)
    with pytest.raises(ValueError, match="scale must be one of"):
        as_batches(torch.zeros(3, 2), scale="pm1")
