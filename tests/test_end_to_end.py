"""The demo end to end, as the README's first command runs it (default settings, about 5 minutes on 2
cores): every stage's contract files, the planted lesions found, every page in a real browser, the size
budget, privacy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from browser import check_pages, chromium_path
from phi import holds

from mammo_insight.stages.demo import DemoConfig, DemoSettings, run_demo, write_demo

pytestmark = pytest.mark.slow

IDENTIFYING_TAGS = (
    "PatientName",
    "PatientBirthDate",
    "InstitutionName",
    "PatientID",
    "ReferringPhysicianName",
)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo(run_demo(DemoConfig(out, DemoSettings())), out)
    return out


def test_every_stage_writes_its_contract(demo_dir: Path):
    expected = [
        "data/train.csv",
        "data/annotations.csv",
        "eda/index.html",
        "eda/summary.json",
        "eda/tables/rates.csv",
        "eda/tables/odds_ratios.csv",
        "eda/tables/leakage.csv",
        "eda/tables/missingness.csv",
        "cache/index.parquet",
        "train/oof_predictions.csv",
        "train/metrics.json",
        "train/index.html",
        "embed/embeddings.parquet",
        "fusion/metrics.json",
        "fusion/oof_predictions.csv",
        "fusion/tables/shap_importance.csv",
        "fusion/index.html",
        "explain/cam_metrics.json",
        "explain/index.html",
        "predict/predictions.csv",
        "predict/index.html",
        "index.html",
    ]
    missing = [p for p in expected if not (demo_dir / p).is_file()]
    assert not missing, f"missing outputs: {missing}"
    metrics = json.loads((demo_dir / "train" / "metrics.json").read_text())
    assert {"image", "breast"} <= set(metrics)


def test_the_short_cpu_training_finds_the_planted_lesions(demo_dir: Path):
    """Issue 5's acceptance on the synthetic cohort through the whole chain (synth DICOMs, preprocess, train)."""
    auc = json.loads((demo_dir / "train" / "metrics.json").read_text())["breast"]["roc_auc"]
    assert auc["value"] >= 0.8 and auc["ci_low"] > 0.5, f"out-of-fold breast-level ROC-AUC {auc}"


def test_the_fusion_page_reads_the_cnn_score_the_train_page_reports(demo_dir: Path):
    """fuse-train's image-only reference is train's out-of-fold breast score (embed writes each breast's
    logit from the mean of its images' probabilities, as train averages them)."""
    train = json.loads((demo_dir / "train" / "metrics.json").read_text())["breast"]["roc_auc"]["value"]
    fused = json.loads((demo_dir / "fusion" / "metrics.json").read_text())["cnn"]["roc_auc"]["value"]
    assert fused == pytest.approx(train, abs=1e-9)


@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")
def test_every_page_renders_without_errors(demo_dir: Path, tmp_path: Path):
    pages = sorted(demo_dir.rglob("*.html"))
    assert len(pages) >= 6
    shot = tmp_path / "index.png"
    for check in check_pages(pages, screenshot=shot):
        assert not check.console_errors, f"{check.page}: console errors {check.console_errors}"
        assert check.broken_images == 0, f"{check.page}: {check.broken_images} broken image(s)"
        assert not check.external_requests, f"{check.page} fetched {check.external_requests}"
    assert shot.stat().st_size > 10_000


def test_reports_fit_the_size_budget(demo_dir: Path):
    size = sum(
        p.stat().st_size
        for p in demo_dir.rglob("*")
        if p.suffix in {".html", ".png", ".json", ".csv"}
        and "data" not in p.relative_to(demo_dir).parts[:1]
        and "cache" not in p.relative_to(demo_dir).parts[:1]
    )
    assert size <= 20 * 1024 * 1024, f"reports take {size / 1e6:.1f} MB"


def test_no_identifying_dicom_tag_reaches_an_output(demo_dir: Path):
    import pydicom

    dicoms = sorted((demo_dir / "data" / "train_images").rglob("*.dcm"))[:20]
    secrets = set()
    for path in dicoms:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {str(ds.get(tag)) for tag in IDENTIFYING_TAGS if ds.get(tag) not in (None, "")}
    secrets -= {str(v) for v in pd.read_csv(demo_dir / "data" / "train.csv", dtype=str)["patient_id"]}
    assert secrets, "the synthetic DICOMs should carry fake identifying tags to check against"
    outputs = [
        p
        for p in demo_dir.rglob("*")
        if p.is_file()
        and p.suffix in {".html", ".json", ".csv", ".parquet", ".log"}
        and p.relative_to(demo_dir).parts[0] != "data"
    ]
    for path in outputs:
        text = path.read_bytes()
        for secret in secrets:
            assert not holds(text, secret), f"{path} contains the DICOM value {secret!r}"
