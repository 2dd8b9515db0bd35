"""`predict` on new DICOM studies: the run's preprocessing, the mean of its fold models, its breast threshold.

One tiny run (test_resnet, 2 folds, 1 epoch) is trained on a synthetic RSNA-like cohort preprocessed by the
real pipeline; the cohort's DICOMs are then predicted as if they were new studies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import load_cache_image, read_cache_index
from mammo_insight.metrics import thresholds_of
from mammo_insight.stages.predict import (
    PredictConfig,
    PredictResult,
    image_csv_path,
    run_predict,
    write_predict,
)

pytestmark = pytest.mark.slow


def predict_studies(run: Path, images: Path, out: Path, **options) -> PredictResult:
    """The predict stage as the CLI runs it: run_predict, then write_predict to OUT.csv."""
    result = run_predict(PredictConfig(run=run, images=images, **options))
    write_predict(result, out)
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.imaging.build import build_cache
    from mammo_insight.imaging.pipeline import PreprocessConfig
    from mammo_insight.runs.config import load_config
    from mammo_insight.stages.train import train_run
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("predict")
    make_synthetic_cohort(root / "cohort", n_patients=10, seed=0, size=(96, 72), prevalence=0.4)
    build_cache(
        load_cohort("rsna", root / "cohort"),
        root / "cache",
        PreprocessConfig(size=(48, 32)),
        sheet_size=0,
        show_progress=False,
    )
    config = load_config(None, model="test_resnet", folds=2, epochs=1, batch_size=8, cpu_threads=1)
    train_run(root / "cache", root / "run", config)
    return {
        "root": root,
        "images": root / "cohort" / "train_images",
        "cache": root / "cache",
        "run": root / "run",
    }


def _by_hand(run: Path, cache: Path) -> pd.DataFrame:
    """The expected predictions, without the package's scoring code: each fold's state dict loaded into a
    plain timm backbone and linear head, the cache PNGs read with PIL and normalised with config.json's
    input_mean/input_std, sigmoid of the logit, folds averaged.

    Single view: one row per image (index image_id). Multi view: one row per breast (index breast_id), the
    head reading [mean, max] of the breast's view features. Column "prob"; "breast_id" for images.
    """
    import timm
    import torch
    from PIL import Image

    config = json.loads((run / "config.json").read_text())
    multi = config["view_mode"] == "multi"
    index = pd.read_parquet(cache / "index.parquet").query("status == 'ok'").set_index("image_id")
    pixels = {}
    for image_id, row in index.iterrows():
        array = np.asarray(Image.open(cache / row["cache_path"]))
        assert list(array.shape) == config["image_size"]  # no resizing to reproduce
        unit = torch.from_numpy(array.astype(np.float32) / np.iinfo(array.dtype).max)[None]
        # the normalisation the run recorded (the backbone's pretrained mean/std), as the model applies it
        pixels[image_id] = (unit - config.get("input_mean", 0.0)) / config.get("input_std", 1.0)
    groups = index.groupby("breast_id").groups if multi else {i: [i] for i in index.index}
    folds = sorted((run / "folds").glob("fold_*/model.pt"))
    assert len(folds) == config["folds"]
    probs = []
    for path in folds:
        state = torch.load(path, map_location="cpu", weights_only=True)
        backbone = timm.create_model(config["model"], pretrained=False, num_classes=0, in_chans=1).eval()
        backbone.load_state_dict(
            {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        )
        weight, bias = state["head.weight"], state["head.bias"]
        assert set(state) == {f"backbone.{k}" for k in backbone.state_dict()} | {"head.weight", "head.bias"}
        fold_probs = {}
        with torch.no_grad():
            for key, image_ids in groups.items():
                features = backbone(torch.stack([pixels[i] for i in image_ids]))
                if multi:
                    features = torch.cat([features.mean(0), features.amax(0)])[None]
                fold_probs[key] = torch.sigmoid(features @ weight.T + bias).item()
        probs.append(pd.Series(fold_probs))
    out = pd.concat(probs, axis=1).mean(axis=1).rename("prob").to_frame()
    if not multi:
        out["breast_id"] = index.loc[out.index, "breast_id"]
    return out


def test_predict_matches_the_run(trained, tmp_path):
    run = trained["run"]
    predict_studies(run, trained["images"], tmp_path / "out.csv", cache=tmp_path / "cache")
    config = json.loads((run / "config.json").read_text())
    assert config["preprocess"]["size"] == [48, 32]  # train recorded its preprocessing
    new_config = json.loads((tmp_path / "cache" / "config.json").read_text())
    assert {k: new_config[k] for k in ("size", "bits", "flip", "margin", "mask")} == {
        k: config["preprocess"][k] for k in ("size", "bits", "flip", "margin", "mask")
    }
    # the same DICOMs preprocessed for prediction give the training cache's pixels
    old, new = read_cache_index(trained["cache"]), read_cache_index(tmp_path / "cache")
    for image_id in old["image_id"].head(5):
        np.testing.assert_array_equal(
            load_cache_image(trained["cache"], old.set_index("image_id").loc[image_id]),
            load_cache_image(tmp_path / "cache", new.set_index("image_id").loc[image_id]),
        )

    images = pd.read_csv(
        image_csv_path(tmp_path / "out.csv"), dtype={"image_id": str, "breast_id": str, "patient_id": str}
    )
    breasts = pd.read_csv(tmp_path / "out.csv", dtype={"breast_id": str, "patient_id": str})
    # every new study scored as the fold models score the training cache's images, by hand
    expected = _by_hand(run, trained["cache"])
    assert (images["status"] == "ok").all() and sorted(images["image_id"]) == sorted(expected.index)
    got = images.set_index("image_id")["prob"]
    np.testing.assert_allclose(got.loc[expected.index], expected["prob"], atol=1e-5)
    assert expected["prob"].std() > 1e-4  # the check would see a mix-up of images

    truth = pd.read_csv(trained["root"] / "cohort" / "train.csv", dtype=str)
    assert set(breasts["breast_id"]) == set(truth["patient_id"] + "_" + truth["laterality"])
    by_breast = expected.groupby("breast_id")["prob"].mean()  # a single-view breast: the mean of its images
    np.testing.assert_allclose(
        breasts.set_index("breast_id")["prob"], by_breast.loc[breasts["breast_id"]], atol=1e-5
    )
    assert (breasts["n_images"] == breasts["breast_id"].map(images["breast_id"].value_counts())).all()
    threshold = thresholds_of(json.loads((run / "metrics.json").read_text()))["breast"]
    assert np.allclose(breasts["threshold"], threshold)
    assert (breasts["decision"] == (breasts["prob"] >= threshold).astype(int)).all()
    manifest = json.loads((tmp_path / "out.csv.manifest.json").read_text())  # beside the CSV, named after it
    assert manifest["stage"] == "predict" and manifest["config"]["out"] == "out.csv"
    assert manifest["headline"] == {
        "breasts scored": str(len(breasts)),
        "flagged positive": str(int(breasts["decision"].sum())),
    }


def test_cli_rsna_format_writes_the_competition_submission(trained, tmp_path):
    """--format rsna: prediction_id = patient_laterality, cancer = the breast probability the full table has."""
    full = predict_studies(trained["run"], trained["images"], tmp_path / "full.csv").breasts
    out = tmp_path / "submission.csv"
    command = ["predict", "--run", str(trained["run"]), "--images", str(trained["images"])]
    result = CliRunner().invoke(app, [*command, "--out", str(out), "--format", "rsna"])
    assert result.exit_code == 0, result.output
    assert "(RSNA format)" in result.output
    submission = pd.read_csv(out, dtype={"prediction_id": str})
    assert list(submission.columns) == ["prediction_id", "cancer"]
    truth = pd.read_csv(trained["root"] / "cohort" / "train.csv", dtype=str)
    assert sorted(submission["prediction_id"]) == sorted(set(truth["patient_id"] + "_" + truth["laterality"]))
    expected = full.set_index(full["patient_id"] + "_" + full["laterality"])["prob"]
    np.testing.assert_allclose(
        submission.set_index("prediction_id")["cancer"], expected.loc[submission["prediction_id"]], atol=1e-6
    )
    assert json.loads(out.with_name("submission.csv.manifest.json").read_text())["config"]["format"] == "rsna"
    wrong = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "x.csv"), "--format", "kaggle"])
    assert isinstance(wrong.exception, MammoInsightError)
    assert "--format must be one of breasts, rsna, got 'kaggle'" in str(wrong.exception)


def test_corrupt_files_are_listed_and_the_rest_scored(trained, tmp_path):
    images = tmp_path / "studies"
    shutil.copytree(trained["images"], images)
    patient = min(p.name for p in images.iterdir())
    victim = min((images / patient).glob("*.dcm"))
    (images / patient / "garbage.dcm").write_bytes(b"not a dicom at all")
    (images / patient / "cut.dcm").write_bytes(victim.read_bytes()[:2000])
    n_good = len(list(trained["images"].rglob("*.dcm")))
    result = predict_studies(trained["run"], images, tmp_path / "out.csv")
    rows = result.images.set_index("image_id")
    assert (rows["status"] == "ok").sum() == n_good and rows["prob"].notna().sum() == n_good
    assert (
        rows.loc["garbage", "status"] == "failed" and "not a readable DICOM" in rows.loc["garbage", "reason"]
    )
    assert rows.loc["cut", "status"] == "failed" and "cut.dcm" in rows.loc["cut", "reason"]
    cut_breast = rows.loc["cut", "breast_id"]
    assert "1 image(s) failed" in result.breasts.set_index("breast_id").loc[cut_breast, "notes"]
    assert result.breasts["prob"].notna().all()


def test_cli_follows_the_folder_links_the_user_made(trained, tmp_path):
    """`predict --images LINK` where LINK is a folder link and a patient folder in it is a link too (the
    usual way to point at a read-only mount): every image is scored, as from the folder itself."""
    patients = sorted(trained["images"].iterdir())
    project = tmp_path / "project"
    project.mkdir()
    for patient in patients:
        (project / patient.name).symlink_to(patient, target_is_directory=True)
    (tmp_path / "studies").symlink_to(project, target_is_directory=True)
    for name, images in (("plain", trained["images"]), ("linked", tmp_path / "studies")):
        result = CliRunner().invoke(
            app,
            [
                "predict",
                "--run",
                str(trained["run"]),
                "--images",
                str(images),
                "--out",
                str(tmp_path / f"{name}.csv"),
            ],
        )
        assert result.exit_code == 0, result.output
    plain, linked = (pd.read_csv(tmp_path / f"{name}.csv") for name in ("plain", "linked"))
    assert len(linked) == len(plain) > 0 and linked["prob"].notna().all()
    pd.testing.assert_frame_equal(linked, plain)


def test_empty_or_unreadable_folder_is_a_clear_error(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MammoInsightError, match="no file to predict on"):
        predict_studies(trained["run"], tmp_path / "empty", tmp_path / "out.csv")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.dcm").write_bytes(b"junk")
    with pytest.raises(MammoInsightError, match="no image under .* could be read"):
        predict_studies(trained["run"], tmp_path / "bad", tmp_path / "out.csv")


def test_cli_flat_folder_with_cams_keeps_no_identifying_tag(trained, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    files = sorted(trained["images"].rglob("*.dcm"))[:6]
    for path in files:
        shutil.copy(path, flat / path.name)
    out = tmp_path / "pred" / "out.csv"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--run",
            str(trained["run"]),
            "--images",
            str(flat),
            "--out",
            str(out),
            "--cams",
            str(tmp_path / "cams"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "6 scored, 0 failed" in result.output
    images = pd.read_csv(out.with_name("out_images.csv"), dtype=str)
    # patients from the hashed DICOM PatientID: the same grouping as the folder names
    folder_patient = {p.stem: p.parent.name for p in files}
    assert images["patient_id"].str.match(r"^pid-[0-9a-f]{12}$").all()
    assert (
        images.groupby("patient_id")["image_id"]
        .apply(lambda s: len({folder_patient[i] for i in s}))
        .eq(1)
        .all()
    )
    assert images["patient_id"].nunique() == len(set(folder_patient.values()))
    pngs = sorted((tmp_path / "cams").glob("*.png"))
    assert {p.stem for p in pngs} == set(images["image_id"])
    assert (tmp_path / "cams" / "index.html").stat().st_size > 10_000
    for path in [*(tmp_path / "pred").iterdir(), tmp_path / "cams" / "index.html"]:
        text = path.read_bytes()
        assert b"SYNTH^" not in text and b"PatientName" not in text


def test_multi_view_run_scores_breasts(trained, tmp_path):
    """A multi-view run: the breast probability is the model's breast output (mean of folds), not an image mean."""
    from mammo_insight.runs.config import load_config
    from mammo_insight.stages.train import train_run

    run = train_run(
        trained["cache"],
        tmp_path / "run",
        load_config(
            None, model="test_resnet", view_mode="multi", folds=2, epochs=1, batch_size=4, cpu_threads=1
        ),
    )
    result = predict_studies(run, trained["images"], tmp_path / "out.csv", cache=tmp_path / "cache")
    expected = _by_hand(run, trained["cache"])["prob"]
    got = result.breasts.set_index("breast_id")["prob"]
    assert sorted(got.index) == sorted(expected.index)
    np.testing.assert_allclose(got.loc[expected.index], expected.to_numpy(), atol=1e-5)
    assert len(list((tmp_path / "cache" / "images").rglob("*.png"))) == len(result.images)


@pytest.mark.real_data
def test_real_rsna_test_dicoms(trained, data_dir, tmp_path):
    """The public RSNA test DICOMs (JPEG 2000), no CSV: laterality read from the headers matches test.csv."""
    result = predict_studies(trained["run"], data_dir / "rsna" / "test_images", tmp_path / "out.csv")
    truth = pd.read_csv(data_dir / "rsna" / "test.csv", dtype=str).set_index("image_id")
    rows = result.images.set_index("image_id")
    assert (rows["status"] == "ok").all() and len(rows) == len(truth)
    assert (rows["laterality"] == truth.loc[rows.index, "laterality"]).all()
    assert set(result.breasts["breast_id"]) == set(truth["prediction_id"])
    assert result.breasts["prob"].between(0, 1).all()
