"""Deprecated: :mod:`gaussport.digits.classifier` (this name goes in gaussport 0.3); every name warns."""

from ..digits import classifier as _new
from . import _forward

__getattr__ = _forward(__name__, _new)
