"""``gaussport tune``: (being written)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    return sub.add_parser("tune", help="(being written)", description="(being written)")


def run(args: argparse.Namespace) -> int:
    raise ValueError("gaussport tune is being written.")
