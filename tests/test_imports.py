"""The import graph: `import gaussport` stays light (docs/peer-conventions.md#import-weight)."""

import subprocess
import sys


def test_import_does_not_pull_optional_packages() -> None:
    code = (
        "import sys, gaussport, gaussport.solvers, gaussport.analytic, gaussport.adapters;"
        "heavy = [m for m in ('k_diffusion', 'diffusers', 'torchdiffeq', 'scipy', 'matplotlib', "
        "'hypothesis') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import gaussport imported {out.stdout.strip()}"


def test_public_api_names() -> None:
    import gaussport

    for name in ("Denoiser", "solve", "sample", "Solution", "grids", "schedules", "solvers", "analytic"):
        assert hasattr(gaussport, name), name
    assert {"euler", "heun"} <= set(gaussport.solvers.available())


def test_adapter_modules_import_no_third_party_package() -> None:
    # Each adapter imports its package lazily: importing every adapter module pulls in none of them.
    code = (
        "import sys, gaussport.adapters.k_diffusion, gaussport.adapters.edm, gaussport.adapters.flow, "
        "gaussport.adapters.guidance, gaussport.adapters.diffusers;"
        "heavy = [m for m in ('k_diffusion', 'diffusers', 'transformers', 'scipy', 'matplotlib') "
        "if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the adapters imported {out.stdout.strip()}"
