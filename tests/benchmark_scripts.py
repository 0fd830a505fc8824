"""The scripts of benchmarks/ as modules, for their tests (they import their siblings,
such as ``launching``, from their own folder)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    """``benchmarks/NAME.py`` imported as module ``NAME``."""
    sys.path.insert(0, str(FOLDER))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(FOLDER))
