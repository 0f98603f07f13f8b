"""Shared fixtures of the bad-input suite; ``_rules`` and ``_tiny`` importable by name.

The directory is a package (``__init__.py``) so that its test files may share basenames with
``tests/`` (``test_grids.py``, ``test_cli.py``); the directory itself goes on ``sys.path`` so that
every file imports the rules as ``from _rules import rejected, ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _tiny import TinyEps, eps_model  # noqa: E402


@pytest.fixture(scope="session")
def k_diffusion() -> Any:
    """The real k-diffusion package (imported once per session: ~6 s)."""
    return pytest.importorskip("k_diffusion")


@pytest.fixture(scope="session")
def k_model(k_diffusion: Any) -> Any:
    """A real k-diffusion model wrapper (``DiscreteEpsDDPMDenoiser``) around a 6-parameter net."""
    return eps_model(k_diffusion, TinyEps())
