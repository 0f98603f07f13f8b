"""The ``gaussport`` console script: OpenMP's wait policy first, then :func:`gaussport.cli.main`.

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it, and every ``gaussport`` module imports
torch (through the package), so the policy can only be chosen here, in a module outside the
package that imports nothing heavy. ``PASSIVE`` makes idle OpenMP threads sleep instead of spin: on
a machine shared with other jobs, spinning threads ran the demo and ``train-demo`` several times
slower (docs/getting-started.md#threads-and-a-busy-machine). A value the user has set is left alone.
"""

from __future__ import annotations

import os


def main() -> int:
    """Entry point of the ``gaussport`` console script (``[project.scripts]`` in pyproject.toml)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from gaussport.cli import main as cli_main

    return cli_main()
