"""A cache knows what it was made from: a rerun on changed inputs redoes the changed files and says so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.imaging.build import build_cache
from mammo_insight.imaging.cache import load_cache_image, read_cache_index
from mammo_insight.imaging.pipeline import PreprocessConfig
from mammo_insight.stages.preprocess import PreprocessStageConfig, run_preprocess, write_preprocess

SIZE = (64, 32)


@pytest.mark.slow
def test_swapped_files_are_redone_and_counted(tmp_path) -> None:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path / "root"
    make_synthetic_cohort(root, n_patients=2, seed=4, size=(96, 64), prevalence=0.5)
    config = PreprocessStageConfig(dataset="rsna", root=root, out=tmp_path / "cache", size=SIZE, sheet_size=0)
    first = run_preprocess(config)
    manifest = json.loads(Path(write_preprocess(first, first.config.out)).read_text())
    assert "table train.csv" in manifest["inputs"] and manifest["inputs"]["table train.csv"]["sha256"]
    assert first.summary["changed_inputs"] == 0 and len(first.summary["table_sha256"]) == 64

    a, b = sorted(root.rglob("*.dcm"))[:2]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    stamp = os.stat(a).st_mtime_ns + 10**9  # a clock that does not tick between the writes cannot hide it
    os.utime(a, ns=(stamp, stamp))
    os.utime(b, ns=(stamp, stamp))
    second = run_preprocess(config)
    assert second.summary["changed_inputs"] == 2 and second.summary["processed_now"] == 2

    fresh = tmp_path / "fresh"
    build_cache(
        load_cohort("rsna", root), fresh, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0
    )
    rerun, reference = read_cache_index(config.out), read_cache_index(fresh)
    pd.testing.assert_frame_equal(rerun, reference)
    for row in reference.itertuples():
        assert (load_cache_image(config.out, row) == load_cache_image(fresh, row)).all()

    third = run_preprocess(config)
    assert third.summary["changed_inputs"] == 0 and third.summary["processed_now"] == 0
