"""The code examples in README.md, docs/extending.md and docs/adapters.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_usage_example(capsys) -> None:  # type: ignore[no-untyped-def]
    (block,) = _python_blocks(ROOT / "README.md")
    namespace: dict[str, object] = {}
    exec(
        compile(
            block.replace('"heun")', '"heun", disable=True)').replace(
                "sigma_skip=10.0)", "sigma_skip=10.0, disable=True)"
            ),
            "README.md",
            "exec",
        ),
        namespace,
    )
    assert capsys.readouterr().out.split() == ["23", "17"]
    plain, warm = namespace["plain"], namespace["warm"]
    assert warm.nfe < plain.nfe and torch.isfinite(warm.x).all()  # type: ignore[attr-defined]


def test_extending_example_passes_the_solver_suite() -> None:
    from gaussport.solvers import base
    from gaussport.testing import check_solver

    block = _python_blocks(ROOT / "docs" / "extending.md")[0]
    # Run the documented file without registering it globally (other tests enumerate the registry).
    source = block.replace("from .base import", "from gaussport.solvers.base import").replace(
        "from .registry import register\n", "register = lambda name: (lambda cls: cls)\n"
    )
    namespace: dict[str, object] = {"base": base}
    exec(compile(source, "docs/extending.md", "exec"), namespace)
    check_solver(namespace["MidpointLog"]())  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------------
# docs/adapters.md, sections "diffusers" and "Flow matching (rectified flow)": every code block runs as
# written. The checkpoints the blocks name are tiny pipelines of the same classes, built offline and
# saved under those names in the working folder (from_pretrained reads a local folder first).

_DIFFUSERS_SECTIONS = ("## diffusers\n", "## Guidance and class-conditional teleport")


def _diffusers_and_flow_blocks() -> list[str]:
    text = (ROOT / "docs" / "adapters.md").read_text()
    start, end = (text.index(heading) for heading in _DIFFUSERS_SECTIONS)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


@pytest.mark.slow
def test_adapters_diffusers_and_flow_examples_run_as_written(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    import numpy as np
    from PIL import Image

    from gaussport.adapters.diffusers import GaussportScheduler
    from gaussport.testing import gaussian_of_shape
    from gaussport.testing.diffusers import tiny_sd3_pipeline, tiny_sd_pipeline, tiny_unet

    checkpoints = {
        "stable-diffusion-v1-5/stable-diffusion-v1-5": tiny_sd_pipeline(),
        "stabilityai/stable-diffusion-3-medium-diffusers": tiny_sd3_pipeline(),
        "google/ddpm-cat-256": diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler()),
    }
    for name, pipe in checkpoints.items():
        pipe.save_pretrained(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    # The data set the latent-statistics block reads, and the SD3 latent statistics of the flow block.
    (tmp_path / "my_images").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 24, 24, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / "my_images" / f"{i}.png")
    gaussian_of_shape((4, 8, 8), seed=0).save(tmp_path / "sd3_latent_stats.npz")

    blocks = _diffusers_and_flow_blocks()
    assert len(blocks) == 5
    blocks.sort(key=lambda block: "fit_latent_gaussian" not in block)  # it writes latent_stats.npz
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "docs/adapters.md", "exec"), namespace)
        if "stats" in namespace:
            assert namespace["stats"].shape == (4, 8, 8)  # type: ignore[attr-defined]
        if "sol" in namespace:
            x = namespace["sol"].x  # type: ignore[attr-defined]
            assert x.shape == (1, 4, 8, 8) and bool(torch.isfinite(x).all())
        if "image" in namespace and "sol" not in namespace:  # the scheduler block: a PIL image
            assert namespace["image"].size == (16, 16)  # type: ignore[attr-defined]
            assert isinstance(namespace["pipe"].scheduler, GaussportScheduler)  # type: ignore[attr-defined]
        if "images" in namespace:
            assert len(namespace["images"]) == 4  # type: ignore[arg-type]
            assert isinstance(namespace["pipe"].scheduler, GaussportScheduler)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- README set-up (issue 11, item 14)
def test_readme_sets_up_the_demo_and_the_tests_with_one_line_each() -> None:
    # A newcomer copies one line to install and run the demo and one to install and run the suite;
    # tests/test_bootstrap.py checks what each runs.
    # The two set-up sections come first; later bash blocks are usage (gaussport fit / info / sample).
    text = (ROOT / "README.md").read_text()
    setup = text[: text.index("\n## Usage")]
    blocks = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    assert blocks == ["python3 bootstrap.py demo\n", "bash .ci/run\n"]
