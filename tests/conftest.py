"""Shared fixtures: the real-data folder (skips when unset) and small synthetic cohorts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public data folder named by MAMMO_INSIGHT_DATA_DIR; tests using it skip when unset."""
    value = os.environ.get("MAMMO_INSIGHT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("MAMMO_INSIGHT_DATA_DIR is not set to a folder of real data")
    return Path(value)
