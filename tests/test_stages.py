"""The stage shape: each stage's manifest carries its headline and report page; the index reads only that;
results show their headline in a notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammo_insight.manifest import manifest_path, write_manifest
from mammo_insight.report.index import build_index


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("stages_synth")
    make_synthetic_cohort(root, n_patients=6, seed=3, size=(96, 64), prevalence=0.5)
    return root


def test_file_outputs_keep_their_manifest_beside_them(tmp_path):
    assert manifest_path(tmp_path / "run") == tmp_path / "run" / "manifest.json"
    assert manifest_path(tmp_path / "emb.parquet") == tmp_path / "emb.parquet.manifest.json"
    write_manifest(
        tmp_path / "a.csv", "predict", {}, headline={"breasts scored": "4"}, report="a_report.html"
    )
    write_manifest(tmp_path / "b.csv", "predict", {}, headline={"breasts scored": "9"})
    (tmp_path / "a_report.html").write_text("<html></html>")
    html = build_index([tmp_path], tmp_path / "index").read_text()
    assert "— a.csv" in html and "— b.csv" in html  # two outputs, neither overwritten
    assert ">4<" in html and ">9<" in html and "a_report.html" in html


def test_preprocess_and_eda_manifests_carry_headline_and_report(synth_root, tmp_path):
    from mammo_insight.stages.eda import EdaConfig, run_eda, write_eda
    from mammo_insight.stages.preprocess import PreprocessStageConfig, run_preprocess, write_preprocess

    cache = tmp_path / "cache"
    pre = run_preprocess(
        PreprocessStageConfig(dataset="rsna", root=synth_root, out=cache, size=(64, 32), sheet_size=4)
    )
    write_preprocess(pre, pre.config.out)
    n = pre.summary["images"]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["stage"] == "preprocess" and manifest["report"] == "contact_sheet.png"
    assert manifest["headline"] == {"images cached": f"{n} of {n}", "failed images": "0"}

    eda = run_eda(EdaConfig(dataset="rsna", root=synth_root))
    write_eda(eda, tmp_path / "eda")
    manifest = json.loads((tmp_path / "eda" / "manifest.json").read_text())
    assert manifest["headline"]["images"] == str(n) and manifest["report"] == "index.html"
    assert manifest["inputs"]["train.csv"]["sha256"]
    notebook = eda._repr_html_()
    assert "Dataset study" in notebook and f">{n}<" in notebook
    assert (
        "Odds ratios with 95% intervals" in notebook and '<svg class="mark"' in notebook
    )  # its forest table
    assert {"factor", "level", "rate", "ci_low", "ci_high"} <= set(eda.rates.columns) and len(eda.rates)

    html = build_index([tmp_path], tmp_path / "index").read_text()
    assert "cache/contact_sheet.png" in html and "eda/index.html" in html
    assert f"{n} of {n}" in html  # the preprocess headline, read from its manifest
