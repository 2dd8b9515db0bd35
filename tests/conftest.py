"""Shared fixtures: the real-data folder (skips when unset) and small synthetic cohorts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread per test process (each xdist worker is one process). On busy shared cores, OpenMP
    barriers with more threads than free cores make the small models of the tests tens of times slower."""
    torch = sys.modules.get(
        "torch"
    )  # imported by the collected test modules that need it; never imported here
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public data folder named by MAMMO_INSIGHT_DATA_DIR; tests using it skip when unset."""
    value = os.environ.get("MAMMO_INSIGHT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("MAMMO_INSIGHT_DATA_DIR is not set to a folder of real data")
    return Path(value)


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    """A synthetic cohort with planted lesions (24 women, half positive) cached at 128x96: the patch tests' cache."""
    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.imaging.build import build_cache
    from mammo_insight.imaging.pipeline import PreprocessConfig
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("patch_synth")
    make_synthetic_cohort(root / "data", n_patients=24, seed=1, size=(256, 192), prevalence=0.5)
    cohort = load_cohort("rsna", root / "data")
    build_cache(cohort, root / "cache", PreprocessConfig(size=(128, 96)), show_progress=False, sheet_size=0)
    return root / "cache"
