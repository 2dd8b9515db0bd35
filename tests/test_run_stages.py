"""The evaluate stage on a fabricated run (no training): run_evaluate -> frozen result, write_evaluate -> files,
manifest with the headline, report; and the CLI's device policy on a machine without CUDA."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_trained_run import make_cache, make_run
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.runs.open import open_run
from mammo_insight.stages.evaluate import EvaluateConfig, EvaluateResult, run_evaluate, write_evaluate


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def fabricated(tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    index = make_cache(cache)
    index.loc[index["image_id"] == "p0LCC", "is_augmented"] = True  # never a test image
    index.to_parquet(cache / "index.parquet")
    make_run(run, "single", folds=(0, 1))
    (run / "metrics.json").write_text(
        json.dumps({"image": {"threshold": 0.47}, "breast": {"threshold": 0.52}})
    )
    return run, cache


def test_evaluate_stage_scores_with_the_fold_mean_at_the_runs_thresholds(fabricated, tmp_path):
    run, cache = fabricated
    result = run_evaluate(EvaluateConfig(run=run, cache=cache, device="cpu", batch_size=4))
    assert isinstance(result, EvaluateResult) and result.folds == (0, 1) and result.device == "cpu"
    preds = result.predictions
    assert "p0LCC" not in set(preds["image_id"]) and (preds["fold"] == -1).all() and len(preds) == 11
    index = pd.read_parquet(cache / "index.parquet")
    images, _ = open_run(run).ensemble_predict(cache, index[index["image_id"] != "p0LCC"], "cpu")
    np.testing.assert_allclose(
        preds.set_index("image_id")["prob"], images.set_index("image_id")["prob"], rtol=1e-6
    )
    assert result.metrics["image"]["threshold"] == pytest.approx(0.47)
    assert result.metrics["breast"]["threshold"] == pytest.approx(0.52)
    with pytest.raises(AttributeError):
        result.metrics = {}  # frozen

    page = write_evaluate(result, tmp_path / "out")
    out = tmp_path / "out"
    assert page == out / "index.html" and page.is_file()
    assert {"oof_predictions.csv", "metrics.json", "config.json", "manifest.json"} <= {
        p.name for p in out.iterdir()
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and manifest["report"] == "index.html"
    assert manifest["headline"] == result.headline() and set(result.headline()) == {
        "breast ROC-AUC",
        "breast pF1",
        "breast PR-AUC",
    }
    assert "breast ROC-AUC" in result._repr_html_()
    assert json.loads((out / "config.json").read_text())["folds_averaged"] == [0, 1]


def test_an_absent_gpu_is_a_clear_cli_error(fabricated, tmp_path, monkeypatch):
    run, cache = fabricated
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (
        ["evaluate", "--out", str(tmp_path / "e")],
        ["embed", "--out", str(tmp_path / "e.parquet")],
        ["explain", "--out", str(tmp_path / "x")],
        ["predict", "--out", str(tmp_path / "p.csv"), "--images", str(tmp_path)],
    ):
        where = [] if command[0] == "predict" else ["--cache", str(cache)]
        result = CliRunner().invoke(app, [*command, "--run", str(run), *where, "--device", "cuda:1"])
        assert result.exit_code != 0
        assert "--device cuda:1 was asked for but torch sees no CUDA GPU" in str(result.exception), command
