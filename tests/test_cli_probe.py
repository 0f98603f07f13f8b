"""`gaussport probe`: the shipped digits model against the Gaussian, a mixture and the training set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussport import cli, digits
from gaussport.evaluation import explained_variance

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # loads the model and scikit-learn's digits: ~3 s
def test_probe_writes_table_plot_and_json_for_the_shipped_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot, record = tmp_path / "out" / "probe.png", tmp_path / "out" / "probe.json"
    words = ["probe", "--probes", "6", "--levels", "20", "1", "--plot", str(plot), "--json", str(record)]
    assert cli.main([*words, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "6 probes per level from the digits training split" in out
    assert "| sigma | gaussian 1-EV_s |" in out and "class mixture" in out and "training set" in out
    assert "safe level (gaussian, tau 0.003)" in out
    assert plot.read_bytes().startswith(PNG)
    result = json.loads(record.read_text())
    assert result["levels"] == [1.0, 20.0] and result["probes"] == 6
    assert set(result["models"]) == {"gaussian", "class mixture", "training set"}
    gaussian_curve = result["models"]["gaussian"]["unexplained_score"]
    assert 0.0 < gaussian_curve[1] < gaussian_curve[0] < 1.0  # more is explained at sigma 20 than at 1
    assert result["auto_level"]["solver"] == "dpmpp_2m" and result["auto_level"]["nfe"] == 6
    # The digits network departs from its Gaussian 3-5x more than the data mixture does at high noise.
    assert result["auto_level"]["surrogate"] == "departure"


@pytest.mark.slow
def test_probe_surrogate_flag_chooses_the_level_with_that_surrogate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gaussport import grids
    from gaussport.cli.probe import _training_split
    from gaussport.tuning import auto_sigma_skip

    monkeypatch.setenv("GAUSSPORT_CACHE", str(tmp_path / "cache"))
    record = tmp_path / "probe.json"
    words = ["probe", "--probes", "4", "--levels", "5", "--no-empirical", "--mixture", "none"]
    assert cli.main([*words, "--surrogate", "mixture", "--json", str(record), "--quiet"]) == 0
    auto = json.loads(record.read_text())["auto_level"]
    expected = auto_sigma_skip(
        digits.load_digits_denoiser(),
        digits.load_digits_gaussian(),
        grids.karras(6, 0.002, 80.0),  # dpmpp_2m at NFE 6: six positive levels
        "dpmpp_2m",
        data=_training_split(None),
        surrogate="mixture",
        cache=False,
    )
    assert auto["surrogate"] == "mixture" and auto["sigma_skip"] == expected
    assert f"auto level (dpmpp_2m, NFE 6, mixture surrogate): {expected:.4g}" in capsys.readouterr().out


def test_probe_on_given_data_with_a_kmeans_mixture_matches_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_set = digits.load_digits_test_set()
    data = test_set.images[:40].numpy().astype(np.float64)
    np.save(tmp_path / "data.npy", data)
    record = tmp_path / "probe.json"
    words = ["probe", "--data", str(tmp_path / "data.npy"), "--components", "2"]  # k-means: the default
    digits.load_digits_gaussian().save(tmp_path / "gaussian.safetensors")  # --statistics: a fit file
    words += ["--statistics", str(tmp_path / "gaussian.safetensors"), "--probes", "5", "--levels", "3"]
    words += ["--no-empirical", "--json", str(record), "--quiet"]
    assert cli.main(words) == 0
    result = json.loads(record.read_text())
    assert set(result["models"]) == {"gaussian", "k-means mixture (2)"}
    expected = explained_variance(
        digits.load_digits_denoiser(), {"gaussian": digits.load_digits_gaussian()}, torch.from_numpy(data),
        [3.0], probes=5,
    )  # fmt: skip
    assert result["models"]["gaussian"]["unexplained_score"] == pytest.approx(
        list(expected.unexplained["gaussian"]), rel=1e-12
    )
    assert "40 samples" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--components", "3"], "--components applies to --mixture kmeans"),
        (["--data", "{data}", "--mixture", "class"], "--mixture class needs the digits' class labels"),
        (["--data", "{data}", "--components", "4"], "--components 4 exceeds the 3 samples"),
        (["--solver", "heun", "--nfe", "6"], "cannot spend --nfe 6"),
    ],
)
def test_probe_refuses_flags_that_do_not_go_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], words: list[str], message: str
) -> None:
    np.save(tmp_path / "data.npy", np.zeros((3, 1, 8, 8)))
    line = ["probe", *(w.format(data=tmp_path / "data.npy") for w in words)]
    assert cli.main(line) == 2
    err = capsys.readouterr().err
    assert err.startswith("gaussport probe: error: ") and message in err and err.count("\n") == 1
