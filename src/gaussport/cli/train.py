"""``gaussport train``: (being written)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    return sub.add_parser("train", help="(being written)", description="(being written)")


def run(args: argparse.Namespace) -> int:
    raise ValueError("gaussport train is being written.")
