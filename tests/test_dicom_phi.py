"""A PHI-laden DICOM tree through cohort, eda, preprocess, train, fuse-train and predict: no identifying value in
any file they write (nor in what they print), and eda flags the planted work-up views as a leak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from phi import holds, output_texts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def cli(*args, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mammo_insight.cli.app", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000", "NO_COLOR": "1", "OMP_NUM_THREADS": "1", **env},
        cwd=REPO,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _secrets(tree: Path) -> set[str]:
    """Every identifying value the tree's headers hold (names also by their parts), as text."""
    values: set[str] = set()
    for path in tree.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in PHI_KEYWORDS:
            value = str(ds.get(keyword) or "").strip()
            if value:
                values |= {value, *(part for part in value.split("^") if len(part) > 4)}
    return values - {"SYNTH"}  # the shared prefix of every fake name: its parts are checked instead


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    base = tmp_path_factory.mktemp("phi")
    tree, out = base / "tree", base / "out"
    make_synthetic_cohort(tree, n_patients=40, seed=2, size=(64, 48), prevalence=0.5)
    env = {"MAMMO_INSIGHT_SCAN_HOME": str(out / "scan_home")}
    source = ["--dataset", "dicom", "--root", tree, "--outcomes", tree / "outcomes.csv", "--on", "study"]
    printed = [
        cli("cohort", *source, "--out", out / "cohort.parquet", env=env),
        cli("eda", *source, "--out", out / "eda", env=env),
        cli("preprocess", *source, "--out", out / "cache", "--size", "48x32", "--sheet-size", "4", env=env),
        cli(
            "train",
            "--cache",
            out / "cache",
            "--out",
            out / "run",
            "--model",
            "test_resnet",
            "--folds",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--no-pretrained",
            env=env,
        ),
        cli("fuse-train", *source, "--out", out / "fuse", "--n-boot", "50", "--folds", "3", env=env),
        cli(
            "predict",
            "--run",
            out / "run",
            "--images",
            tree / "train_images",
            "--out",
            out / "pred" / "p.csv",
            env=env,
        ),
        cli(
            "predict",
            "--run",
            out / "run",
            "--images",
            tree,
            "--dataset",
            "dicom",
            "--out",
            out / "pred" / "d.csv",
            env=env,
        ),
    ]
    (out / "printed.txt").write_text("\n".join(r.stdout + r.stderr for r in printed))
    return {"tree": tree, "out": out}


def test_no_identifying_value_reaches_any_output(runs):
    secrets = _secrets(runs["tree"])
    assert len(secrets) > 100 and any(s.startswith("MRN-") for s in secrets)
    written = [p for p in runs["out"].rglob("*") if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".csv", ".parquet", ".json", ".html", ".png", ".jsonl", ".txt"} <= kinds, kinds
    hits = [(p, s) for p in written for t in output_texts(p) for s in secrets if holds(t, s)]
    assert not hits, hits[:5]


def test_every_stage_ran_on_the_tree(runs):
    out = runs["out"]
    cohort = pd.read_parquet(out / "cohort.parquet")
    assert cohort["cancer"].notna().all() and (out / "cohort_outcome_match.csv").is_file()
    assert (out / "eda" / "tables" / "scan_failures.csv").is_file()
    assert json.loads((out / "run" / "metrics.json").read_text())["breast"]
    assert pd.read_csv(out / "pred" / "d.csv")["prob"].notna().all()
    assert (out / "fuse" / "metrics.json").is_file()


def test_eda_flags_the_planted_work_up_views(runs):
    leakage = pd.read_csv(runs["out"] / "eda" / "tables" / "leakage.csv")
    verdict = leakage[leakage["audited"] == "values"].set_index("column")["verdict"]
    assert verdict["workup_view"] == "leaky" and verdict["images_in_study"] == "leaky"
    assert (
        verdict["for_processing"] == "ok"
    )  # the FOR PROCESSING copies are a control: unrelated to the label
    odds = pd.read_csv(runs["out"] / "eda" / "tables" / "odds_ratios.csv")
    assert odds["term"].str.startswith("kvp").any()  # acquisition enters the adjusted model
