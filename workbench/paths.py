"""Where the project's data lives: one rule, read by the loaders (data.py) and the corpus generators alike."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The project's data/ folder ($WORKBENCH_DATA overrides it)."""
    return Path(os.environ.get("WORKBENCH_DATA", Path(__file__).resolve().parent.parent / "data"))
