"""Train gaussport's shipped 8x8-digits model and write its package data and model card.

Usage (regenerates the shipped files; 3000 steps take about 10-20 min on 2 CPU cores):

    python benchmarks/train_demo.py --out src/gaussport/data

The same as ``gaussport train-demo --out src/gaussport/data`` (this script only sets
``OMP_WAIT_POLICY=PASSIVE`` before torch is imported and calls it; ``--help`` lists the options).
Writes the files listed in ``gaussport.digits.train`` plus ``DIGITS_MODEL.md``, whose numbers
(losses, accuracy, wall time, load average, Frechet-distance reference points) come from this run:
:func:`gaussport.digits.train_demo_model`.
"""

from __future__ import annotations

import os

# The machine's cores are shared: spinning OpenMP workers stall each other under contention
# (measured 5-10x slower steps at load ~3 on 2 cores). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
import sys  # noqa: E402

from gaussport.cli import main as gaussport_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return gaussport_main(["train-demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
