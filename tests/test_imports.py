"""What importing gaussport loads (docs/peer-conventions.md#import-weight), in one fresh interpreter.

A fresh interpreter costs ~2 s (torch's import), so one subprocess checks, in order: ``import
gaussport`` (and its numerics and adapters packages) pulls in no optional package, neither the
digits application nor safetensors; importing every adapter module still pulls in none of the
frameworks (each imports its package lazily); and the console script runs.
"""

import subprocess
import sys

import pytest

OPTIONAL = ("k_diffusion", "diffusers", "transformers", "torchdiffeq", "scipy", "matplotlib", "hypothesis")

CODE = f"""
import runpy, sys

def loaded():
    names = [m for m in sys.modules if m.split('.')[0] in {OPTIONAL + ("safetensors",)!r}
             or m.startswith(('gaussport.digits', 'gaussport.models'))]
    return ','.join(sorted({{m.split('.')[0] if not m.startswith('gaussport') else m for m in names}}))

import gaussport, gaussport.solvers, gaussport.analytic, gaussport.ems, gaussport.adapters
print('core:' + loaded(), flush=True)
import gaussport.adapters.k_diffusion, gaussport.adapters.edm, gaussport.adapters.flow
import gaussport.adapters.guidance, gaussport.adapters.diffusers
print('adapters:' + loaded(), flush=True)
sys.argv = ['gaussport', 'solvers']
runpy.run_module('gaussport.cli', run_name='__main__')
"""


@pytest.fixture(scope="module")
def fresh_interpreter() -> list[str]:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_import_gaussport_pulls_in_no_optional_package_and_no_application(
    fresh_interpreter: list[str],
) -> None:
    assert fresh_interpreter[0] == "core:", f"import gaussport imported {fresh_interpreter[0][5:]}"


def test_adapter_modules_import_no_third_party_package(fresh_interpreter: list[str]) -> None:
    assert fresh_interpreter[1] == "adapters:", f"importing the adapters imported {fresh_interpreter[1][9:]}"


def test_the_console_script_runs(fresh_interpreter: list[str]) -> None:
    listing = "\n".join(fresh_interpreter[2:])
    assert "heun" in listing and "order 2" in listing


def test_public_api_names() -> None:
    import gaussport

    for name in ("Denoiser", "solve", "sample", "Solution", "grids", "schedules", "solvers", "analytic"):
        assert hasattr(gaussport, name), name
    assert {"euler", "heun"} <= set(gaussport.solvers.available())
