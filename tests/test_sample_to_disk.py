"""Mass sampling to disk (gaussport.generate.sample_to_disk, `gaussport sample`): seeds, shards, resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gaussport import cli
from gaussport.analytic import Gaussian
from gaussport.cli.probe import _training_split
from gaussport.digits import load_digits_denoiser, load_digits_gaussian
from gaussport.generate import MANIFEST, budget_grid, load_samples, sample_seed, sample_to_disk
from gaussport.tuning import auto_sigma_skip

SHAPE = (1, 8, 8)


def _elementwise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of N(0, I) data: per sample and per element, so no batch effect at all."""
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    return x / (1.0 + s * s)


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "png").glob("*.png"))}


@pytest.fixture(scope="module")
def digits() -> torch.nn.Module:
    return load_digits_denoiser()


def test_one_and_two_processes_write_the_same_samples(digits: torch.nn.Module, tmp_path: Path) -> None:
    # The shipped network is not batch-invariant on the CPU (7e-7 between batch sizes), so the
    # equality below holds because every shard is computed by the same batches, whoever computes it.
    options = dict(count=7, nfe=3, shard_size=2, batch_size=2, seed=5, disable=True)
    one = sample_to_disk(digits, SHAPE, tmp_path / "one", **options)
    assert one.written == (0, 1, 2, 3) and one.skipped == ()
    first = sample_to_disk(digits, SHAPE, tmp_path / "two", rank=0, world_size=2, **options)
    second = sample_to_disk(digits, SHAPE, tmp_path / "two", rank=1, world_size=2, **options)
    assert (first.written, second.written) == ((0, 2), (1, 3))
    x1, i1 = load_samples(tmp_path / "one")
    x2, i2 = load_samples(tmp_path / "two")
    assert x1.shape == (7, *SHAPE) and i1.tolist() == list(range(7))
    assert torch.equal(x1, x2) and torch.equal(i1, i2)
    assert _pngs(tmp_path / "one") == _pngs(tmp_path / "two") and len(_pngs(tmp_path / "one")) == 7
    # The PNGs are the samples in [-1, 1] as 8-bit pixels.
    image = np.asarray(Image.open(tmp_path / "one" / "png" / "000006.png"))
    expected = np.clip(np.round((x1[6, 0].double().numpy() + 1.0) * 127.5), 0, 255)
    np.testing.assert_array_equal(image, expected)


def test_sample_i_starts_from_the_noise_of_its_own_seed(tmp_path: Path) -> None:
    # D(x, sigma) = x makes the ODE velocity zero: each sample is its initial state sigma_max * z_i.
    sample_to_disk(
        lambda x, s: x, (3,), tmp_path, count=5, solver="euler", nfe=2, seed=11, formats="npz", disable=True
    )
    samples, _ = load_samples(tmp_path)
    for i in range(5):
        state = np.random.SeedSequence(11, spawn_key=(i,)).generate_state(1, np.uint64)[0]
        z = torch.randn(3, generator=torch.Generator().manual_seed(int(state)))
        assert torch.equal(samples[i], 80.0 * z), i
    assert sample_seed(11, 0) != sample_seed(12, 0) and sample_seed(11, 1) != sample_seed(12, 0)


def test_batch_size_does_not_change_the_samples(tmp_path: Path) -> None:
    runs = []
    for batch in (1, 3, 64):
        folder = tmp_path / f"batch{batch}"
        options = dict(count=8, solver="heun", nfe=5, shard_size=5, batch_size=batch, formats="npz")
        sample_to_disk(_elementwise, SHAPE, folder, disable=True, **options)
        runs.append(load_samples(folder)[0])
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert runs[0].std() > 0.5  # real samples, not a constant


def test_resume_skips_finished_shards_and_redoes_damaged_ones(tmp_path: Path) -> None:
    options = dict(count=6, nfe=4, shard_size=2, batch_size=2, disable=True)
    sample_to_disk(_elementwise, SHAPE, tmp_path, **options)
    before, _ = load_samples(tmp_path)
    shards = [tmp_path / f"samples-{k:05d}.npz" for k in range(3)]
    stamps = [os.stat(p).st_mtime_ns for p in shards]
    damaged = shards[1].read_bytes()
    shards[1].write_bytes(damaged[: len(damaged) // 2])  # a truncated shard
    (tmp_path / "png" / "000005.png").unlink()  # shard 2 lacks one image
    again = sample_to_disk(_elementwise, SHAPE, tmp_path, **options)
    assert again.skipped == (0,) and again.written == (1, 2) and again.samples == 4
    assert os.stat(shards[0]).st_mtime_ns == stamps[0]
    after, _ = load_samples(tmp_path)
    assert torch.equal(before, after) and len(_pngs(tmp_path)) == 6
    assert sample_to_disk(_elementwise, SHAPE, tmp_path, **options).written == ()


def test_a_folder_of_other_settings_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    sample_to_disk(_elementwise, SHAPE, tmp_path, count=2, nfe=2, formats="npz", disable=True)
    listing = sorted(p.name for p in tmp_path.iterdir())
    manifest = (tmp_path / MANIFEST).read_text()
    with pytest.raises(ValueError, match=r"seed: 0 there, 1 here.*new folder"):
        sample_to_disk(_elementwise, SHAPE, tmp_path, count=2, nfe=2, seed=1, formats="npz", disable=True)
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == listing
        and (tmp_path / MANIFEST).read_text() == manifest
    )
    with pytest.raises(ValueError, match="no image for PNG"):
        sample_to_disk(_elementwise, (5,), tmp_path / "new", count=2, nfe=2, disable=True)
    with pytest.raises(ValueError, match="shape"):  # the model fails on the first batch: no folder
        sample_to_disk(lambda x, s: x[:, :, :2], SHAPE, tmp_path / "new", count=2, nfe=2, disable=True)
    with pytest.raises(ValueError, match="both rank and world_size"):
        sample_to_disk(_elementwise, SHAPE, tmp_path / "new", count=2, nfe=2, rank=0, disable=True)
    assert not (tmp_path / "new").exists()


def test_command_line_round_trip(
    digits: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    words = ["sample", "digits", "--out", str(tmp_path / "cli"), "--count", "3", "--nfe", "4"]
    words += ["--shard-size", "2", "--sigma-skip", "2", "--quiet"]
    assert cli.main(words) == 0
    assert "3 samples in 2 shard(s) written" in capsys.readouterr().out
    samples, _ = load_samples(tmp_path / "cli")
    assert len(_pngs(tmp_path / "cli")) == 3
    settings = json.loads((tmp_path / "cli" / MANIFEST).read_text())["settings"]
    assert settings["nfe"] == 4 and settings["sigma_skip"] == 2.0 and settings["solver"] == "dpmpp_2m"
    # The library call with the same settings gives the same samples.
    sample_to_disk(
        digits,
        SHAPE,
        tmp_path / "lib",
        count=3,
        nfe=4,
        shard_size=2,
        warm_start=load_digits_gaussian(),
        sigma_skip=2.0,
        formats="npz",
        disable=True,
    )
    assert torch.equal(samples, load_samples(tmp_path / "lib")[0])
    assert cli.main(words) == 0
    assert "2 finished shard(s) skipped" in capsys.readouterr().out
    assert cli.main([*words[:-3], "--nfe", "5", "--quiet"]) == 2
    assert "holds samples of other settings" in capsys.readouterr().err


def test_auto_level_is_chosen_once_recorded_and_resumed(tmp_path: Path) -> None:
    # The exact denoiser of N(0, I) data with a warm start N(0.5, I): auto's level is the one
    # auto_sigma_skip picks for the run's own NFE grid (probed the same way, from the warm start's
    # marginal), the samples are those of that level given by hand, and a second call resumes.
    warm = Gaussian.diagonal(torch.full(SHAPE, 0.5), torch.ones(SHAPE))
    common = dict(count=3, nfe=5, warm_start=warm, formats="npz", shard_size=2, disable=True)
    grid, _, _ = budget_grid("dpmpp_2m", 5)
    level = auto_sigma_skip(_elementwise, warm, grid, "dpmpp_2m", cache=False)
    assert grid[-2] < level < grid[0]  # a real teleport: the warm start is only 0.5 off
    run = sample_to_disk(_elementwise, SHAPE, tmp_path / "auto", sigma_skip="auto", **common)
    settings = run.manifest["settings"]
    assert settings["sigma_skip"] == level and settings["sigma_skip_rule"] == "auto"
    given = sample_to_disk(_elementwise, SHAPE, tmp_path / "given", sigma_skip=level, **common)
    assert "sigma_skip_rule" not in given.manifest["settings"]  # older manifests keep resuming
    assert torch.equal(load_samples(tmp_path / "auto")[0], load_samples(tmp_path / "given")[0])
    again = sample_to_disk(_elementwise, SHAPE, tmp_path / "auto", sigma_skip="auto", **common)
    assert again.written == () and again.skipped == (0, 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sigma_skip": "auto", "teleport": "truncate"}, "chooses the level for teleport='respace'"),
        ({"sigma_skip": "best"}, "sigma_skip must be a noise level, None or 'auto'"),
        ({"sigma_skip": 2.0, "probes": torch.zeros(4, 1, 8, 8)}, "probes= is only used with"),
    ],
)
def test_auto_level_refuses_what_it_cannot_choose(tmp_path: Path, options: dict, message: str) -> None:
    warm = Gaussian.diagonal(torch.zeros(SHAPE), torch.ones(SHAPE))
    with pytest.raises(ValueError, match=re.escape(message)):
        sample_to_disk(_elementwise, SHAPE, tmp_path / "out", count=2, nfe=4, warm_start=warm, **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_command_line_auto_level_probes_the_digits_training_split(
    digits: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAUSSPORT_CACHE", str(tmp_path / "cache"))  # the probe record's cache
    words = ["sample", "digits", "--out", str(tmp_path / "cli"), "--count", "2", "--nfe", "6"]
    assert cli.main([*words, "--sigma-skip", "auto", "--format", "npz", "--quiet"]) == 0
    settings = json.loads((tmp_path / "cli" / MANIFEST).read_text())["settings"]
    expected = auto_sigma_skip(
        digits, load_digits_gaussian(), settings["grid"], "dpmpp_2m", data=_training_split(None), cache=False
    )
    assert settings["sigma_skip"] == expected and settings["sigma_skip_rule"] == "auto"
    assert f"teleport to {expected:g} (auto)" in capsys.readouterr().out


def test_command_line_samples_a_diffusers_pipeline_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    diffusers = pytest.importorskip("diffusers")
    monkeypatch.setenv("GAUSSPORT_CACHE", str(tmp_path / "cache"))  # the auto level's probe record
    from gaussport.adapters.diffusers import DiffusersDenoiser

    with torch.random.fork_rng():  # module initialisation draws from the global RNG; keep it local
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        ).eval()
    scheduler = diffusers.DDPMScheduler()  # 1000 steps: sigma from 0.01 to 157
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    Gaussian.diagonal(torch.zeros(SHAPE), torch.full(SHAPE, 0.25)).save(tmp_path / "stats.safetensors")
    words = ["sample", str(tmp_path / "pipe"), "--out", str(tmp_path / "cli"), "--count", "3"]
    words += ["--nfe", "3", "--sigma-skip", "2", "--format", "npz", "--quiet"]
    assert cli.main(words) == 2  # a pipeline has no statistics of its own
    assert "--warm-start FILE" in capsys.readouterr().err
    assert cli.main([*words, "--warm-start", str(tmp_path / "stats.safetensors")]) == 0
    assert "the diffusers pipeline in" in capsys.readouterr().out
    settings = json.loads((tmp_path / "cli" / MANIFEST).read_text())["settings"]
    # The noise range is the training schedule's: sigma_t = sqrt((1 - abar_t) / abar_t).
    abar = scheduler.alphas_cumprod.double()
    assert settings["grid"][0] == pytest.approx(float(((1 - abar[-1]) / abar[-1]).sqrt()), rel=1e-12)
    sample_to_disk(
        DiffusersDenoiser(unet, scheduler),
        SHAPE,
        tmp_path / "lib",
        count=3,
        nfe=3,
        warm_start=Gaussian.diagonal(torch.zeros(SHAPE), torch.full(SHAPE, 0.25)),
        sigma_skip=2.0,
        sigma_min=settings["grid"][-2],
        sigma_max=settings["grid"][0],
        formats="npz",
        disable=True,
    )
    assert torch.equal(load_samples(tmp_path / "cli")[0], load_samples(tmp_path / "lib")[0])
    # --sigma-skip auto on a pipeline: probed from the warm start's marginal (it has no data), the
    # level chosen on the pipeline's own noise range and recorded.
    words[words.index("--out") + 1] = str(tmp_path / "auto")
    words[words.index("--sigma-skip") + 1] = "auto"
    assert cli.main([*words, "--warm-start", str(tmp_path / "stats.safetensors")]) == 0
    auto = json.loads((tmp_path / "auto" / MANIFEST).read_text())["settings"]
    assert auto["sigma_skip_rule"] == "auto" and auto["grid"] == settings["grid"]
    assert auto["grid"][-2] < auto["sigma_skip"] <= auto["grid"][0]
    assert f"teleport to {auto['sigma_skip']:g} (auto)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("words", "env", "message"),
    [
        (["--teleport", "truncate"], {}, "give --sigma-skip S too"),
        (["--sigma-skip", "auto", "--teleport", "truncate"], {}, "--sigma-skip auto chooses the level for"),
        (["--sigma-skip", "automatic"], {}, "'automatic' is not a number"),
        ([], {"RANK": "1"}, "set both"),
        ([], {"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ([], {"RANK": "2", "WORLD_SIZE": "2"}, "outside 0..WORLD_SIZE-1"),
    ],
)
def test_command_line_checks_across_flags_before_any_work(
    words: list[str],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["sample", "digits", "--out", str(tmp_path / "out"), "--count", "2", *words]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gaussport sample: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


WORKER = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    torch.set_num_threads(1)
    from gaussport.digits import load_digits_denoiser
    from gaussport.generate import sample_to_disk
    rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
    run = sample_to_disk(load_digits_denoiser(), (1, 8, 8), out, count=5, nfe=3, shard_size=2, disable=True)
    print(run.written)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_torch_distributed_gloo_processes_write_what_one_process_writes(
    digits: torch.nn.Module, tmp_path: Path
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / "store"), str(tmp_path / "dist")]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(rank), *args], env=env, stdout=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    assert [line.strip() for line in outputs] == ["(0, 2)", "(1,)"]
    sample_to_disk(digits, SHAPE, tmp_path / "one", count=5, nfe=3, shard_size=2, disable=True)
    assert torch.equal(load_samples(tmp_path / "dist")[0], load_samples(tmp_path / "one")[0])
    assert _pngs(tmp_path / "dist") == _pngs(tmp_path / "one")
