"""The run report on a fabricated run directory: every section present, nothing broken in a browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import check_pages, chromium_path

from mammo_insight.metrics import evaluate_baselines, evaluate_predictions, save_metrics_json
from mammo_insight.runs.run_report import metrics_table, render_run_report

pytestmark = (
    pytest.mark.slow
)  # the fabricated run (bootstrap intervals, baselines) and each render take seconds

SECTIONS = [
    "Summary",
    "Metrics with intervals",
    "Learning curves",
    "ROC and PR curves",
    "Confusion matrices",
    "Calibration",
    "Subgroups",
    "Baselines",
    "Files",
]


def fabricate_run(run_dir: Path, n_patients: int = 120, seed: int = 0, with_optional: bool = True) -> Path:
    """A run directory as train writes it: config, oof predictions with metadata, metrics, history, baselines."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n_patients):
        age, density = int(rng.integers(40, 85)), rng.choice(list("ABCD"))
        site, fold = str(rng.integers(1, 3)), pid % 3
        for side in "LR":
            label = float(rng.random() < 0.12)
            for view in ("CC", "MLO"):
                signal = (1.6 if density in "AB" else 0.6) * label
                rows.append(
                    {
                        "image_id": f"{pid}{side}{view}",
                        "breast_id": f"{pid}_{side}",
                        "patient_id": f"p{pid}",
                        "fold": fold,
                        "view": view,
                        "laterality": side,
                        "age": age,
                        "density": density,
                        "site_id": site,
                        "machine_id": "<script>alert(1)</script>",
                        "cancer": label,
                        "prob": float(1 / (1 + np.exp(-(rng.normal(-2.5, 1) + signal)))),
                    }
                )
    oof = pd.DataFrame(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    oof.to_csv(run_dir / "oof_predictions.csv", index=False)
    (run_dir / "config.json").write_text(
        json.dumps(
            {
                "model": "resnet10t",
                "view_mode": "single",
                "folds": 3,
                "epochs": 4,
                "seed": seed,
                "image_size": [96, 64],
            }
        )
    )
    save_metrics_json(run_dir / "metrics.json", evaluate_predictions(oof, n_boot=200))
    if with_optional:
        hist = [
            {
                "fold": f,
                "epoch": e,
                "split": s,
                "loss": 0.7 / (e + 1) + (0.1 if s == "val" else 0),
                "pf1": np.nan if s == "train" else 0.1 + 0.05 * e,
                "roc_auc": 0.55 + 0.08 * e,
                "lr": 1e-3,
            }
            for f in range(3)
            for e in range(4)
            for s in ("train", "val")
        ]
        pd.DataFrame(hist).to_csv(run_dir / "history.csv", index=False)
        images = rng.random((len(oof), 16, 12)).astype(np.float32)
        save_metrics_json(run_dir / "baselines.json", evaluate_baselines(oof, images, n_boot=100))
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return fabricate_run(tmp_path_factory.mktemp("run") / "RUN")


@pytest.fixture(scope="module")
def page(run_dir: Path) -> Path:
    return render_run_report(run_dir)


def test_report_holds_every_section_and_metric(run_dir: Path, page: Path):
    assert page == run_dir / "index.html"
    html = page.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html, title
    for name in (
        "roc_auc",
        "pr_auc",
        "pf1",
        "balanced_accuracy",
        "macro_f1",
        "pixel_logreg",
        "prevalence_random",
    ):
        assert name in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html  # data escaped
    assert html.count("data:image/png;base64,") >= 7
    assert ">nan<" not in html.lower()


def test_metrics_table_formats_intervals(run_dir: Path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    frame = metrics_table(metrics)
    assert list(frame.columns) == ["metric", "image", "breast (mean of images)", "breast (max of images)"]
    auc = frame.set_index("metric").loc["roc_auc", "breast (mean of images)"]
    value, interval = auc.split(" (")
    low, high = (float(x) for x in interval.rstrip(")").split("–"))
    assert low <= float(value) <= high


def test_report_without_optional_files(tmp_path: Path):
    run = fabricate_run(tmp_path / "RUN", n_patients=30, with_optional=False)
    html = render_run_report(
        run, out_path=tmp_path / "ext" / "index.html", title="External validation"
    ).read_text()
    assert "External validation" in html
    assert "<h2>Learning curves</h2>" not in html and "<h2>Baselines</h2>" not in html
    assert "<h2>ROC and PR curves</h2>" in html


@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")
def test_report_renders_in_chromium(page: Path, tmp_path: Path):
    shot = tmp_path / "run_report.png"
    (check,) = check_pages([page], screenshot=shot)
    assert not check.console_errors and check.broken_images == 0 and not check.external_requests
    assert check.n_images >= 7
    assert shot.stat().st_size > 10_000
