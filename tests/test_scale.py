"""What large cohorts need: progress that names the eda part running, and RSNA-style replication."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from rich.progress import Progress, TextColumn

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.stats import study
from mammo_insight.synth.table import RSNA_COLUMNS, make_synthetic_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_eda_progress_names_every_part(tmp_path, monkeypatch):
    make_synthetic_table(300, 0, 0.2)[RSNA_COLUMNS].to_csv(tmp_path / "train.csv", index=False)
    cohort = load_cohort("rsna", tmp_path)
    shown: list[str] = []

    class Recording(Progress):
        def update(self, task_id, *, description=None, **kwargs):
            if description:
                shown.append(description)
            super().update(task_id, description=description, **kwargs)

    console = Console(file=io.StringIO(), force_terminal=True)
    monkeypatch.setattr(
        study, "progress_bar", lambda: Recording(TextColumn("{task.description}"), console=console)
    )
    result = study.run_study(cohort)
    assert list(result.timings) == list(study.STUDY_PARTS)
    assert shown == [f"eda: {part}" for part in study.STUDY_PARTS]


def test_replicated_copies_are_new_women_and_images(tmp_path):
    from bench_scale import replicate

    make_synthetic_table(50, 0, 0.2)[RSNA_COLUMNS].to_csv(tmp_path / "train.csv", index=False)
    rows = replicate(tmp_path / "train.csv", 3, tmp_path / "x3")
    one, three = pd.read_csv(tmp_path / "train.csv"), pd.read_csv(tmp_path / "x3" / "train.csv")
    assert rows == 3 * len(one) == len(three)
    assert three["patient_id"].nunique() == 3 * one["patient_id"].nunique()
    assert three["image_id"].is_unique
    cohort = load_cohort("rsna", tmp_path / "x3")
    assert (
        cohort.table["breast_id"].nunique() == 3 * load_cohort("rsna", tmp_path).table["breast_id"].nunique()
    )
