"""Issue 7 acceptance: a trained model's Grad-CAM points at planted lesions, a randomised one does not.

The cohort is built here, cheaply: "original" PNG mammograms (breast against the chest wall, left or
right, a padding strip, a bright lesion at a known original position in positive breasts) and a
cache made from them with the cache geometry (crop to the breast, flip right breasts, resize,
pad), so the CAMs must travel back through crop, flip, resize and padding to hit the lesions.
The model is trained with the real `stages.train.train_run`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mammo_insight.cohort.schema import CANONICAL_COLUMNS
from mammo_insight.imaging.annotations import ANNOTATIONS_FILE
from mammo_insight.imaging.cache import INDEX_FILE, relative_image_path, write_png_atomic
from mammo_insight.imaging.geometry import GEOMETRY_COLUMNS, CacheGeometry

ORIG = (200, 150)  # original height, width
CACHE = (96, 72)


def _original(
    rng: np.random.Generator, side: str, lesion: bool
) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    h, w = ORIG
    pad = int(rng.integers(10, 25))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = xx if side == "L" else (w - 1 - xx)
    a, b, cy = rng.uniform(0.6, 0.75) * (w - pad), rng.uniform(0.42, 0.47) * h, rng.uniform(0.47, 0.53) * h
    breast = (depth / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 3.0)
    img = np.where(breast, 0.4 + 0.6 * noise, 0.02)
    found = None
    if lesion:
        r = float(rng.uniform(11, 14))
        d = rng.uniform(0.25, 0.6) * a
        y = cy + rng.uniform(-0.5, 0.5) * b
        x = d if side == "L" else w - 1 - d
        disc = np.clip(1.2 - np.sqrt((xx - x) ** 2 + (yy - y) ** 2) / r, 0, 1)
        img = img + 0.45 * disc * breast
        found = (float(x), float(y), r)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), found


def _cache_image(original: np.ndarray, geom: CacheGeometry) -> np.ndarray:
    crop = original[geom.crop_y0 : geom.crop_y1, geom.crop_x0 : geom.crop_x1]
    small = cv2.resize(crop, (geom.resized_width, geom.resized_height), interpolation=cv2.INTER_AREA)
    if geom.flipped:
        small = small[:, ::-1]
    canvas = np.zeros((geom.out_height, geom.out_width), np.uint8)
    canvas[geom.pad_y : geom.pad_y + geom.resized_height, geom.pad_x : geom.pad_x + geom.resized_width] = (
        small
    )
    return canvas


def write_lesion_cohort(root: Path, n_patients: int = 40, seed: int = 0, prevalence: float = 0.4) -> Path:
    """Originals under root/originals, the cache under root/cache (index, PNGs, annotations)."""
    rng = np.random.default_rng(seed)
    cache = root / "cache"
    rows, lesions = [], []
    for p in range(n_patients):
        patient = f"W{p:03d}"
        for side in "LR":
            positive = bool(rng.random() < prevalence)
            for view in ("CC", "MLO"):
                image_id = f"{patient}{side}{view}"
                original, lesion = _original(rng, side, positive)
                path = root / "originals" / f"{image_id}.png"
                write_png_atomic(path, original)
                ys, xs = np.nonzero(original > 10)
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                geom = CacheGeometry.fit(*ORIG, box, side == "R", *CACHE)
                rel = relative_image_path(patient, image_id)
                write_png_atomic(cache / rel, _cache_image(original, geom))
                rows.append(
                    {
                        "patient_id": patient,
                        "image_id": image_id,
                        "breast_id": f"{patient}_{side}",
                        "laterality": side,
                        "view": view,
                        "cancer": float(positive),
                        "image_path": str(path),
                        "cache_path": rel,
                        "status": "ok",
                        **geom.as_dict(),
                    }
                )
                if lesion is not None:
                    cx, cy = geom.to_cache(lesion[0], lesion[1])
                    lesions.append(
                        {
                            "image_id": image_id,
                            "x": lesion[0],
                            "y": lesion[1],
                            "radius": lesion[2],
                            "cache_x": float(cx),
                            "cache_y": float(cy),
                            "cache_radius": float(geom.length_to_cache(lesion[2])),
                        }
                    )
    table = pd.DataFrame(rows)
    for column in CANONICAL_COLUMNS:
        if column not in table:
            table[column] = np.nan
    table[CANONICAL_COLUMNS + [c for c in table if c not in CANONICAL_COLUMNS]].to_parquet(cache / INDEX_FILE)
    pd.DataFrame(lesions).to_parquet(cache / ANNOTATIONS_FILE)
    assert set(GEOMETRY_COLUMNS) <= set(table.columns)
    return cache


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A test_resnet trained briefly with train_run (one torch thread: faster on busy shared cores)."""
    from mammo_insight.runs.config import load_config
    from mammo_insight.stages.train import train_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explain_cohort")
    cache = write_lesion_cohort(root)
    config = load_config(
        None,
        model="test_resnet",
        folds=2,
        epochs=6,
        batch_size=8,
        lr=0.01,
        seed=0,
        cpu_threads=1,
        augment={"rotate_degrees": 0},
    )
    run = train_run(cache, root / "run", config)
    yield run, cache
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_gradcam_points_at_planted_lesions_and_randomised_model_does_not(trained_run, tmp_path):
    from mammo_insight.stages.explain import ExplainConfig, run_explain, write_explain

    run, cache = trained_run
    auc = json.loads((run / "metrics.json").read_text())["image"]["roc_auc"]["value"]
    assert auc >= 0.9, "the fixture model did not learn the lesions; the CAM check would be meaningless"
    out = tmp_path / "explain"
    result = run_explain(
        ExplainConfig(
            run=run,
            cache=cache,
            method="gradcam",
            n=1,
            max_checked=40,
            layer="backbone.layer2",
            batch_size=16,
        )
    )
    write_explain(result, out)
    metrics = result.metrics
    saved = json.loads((out / "cam_metrics.json").read_text())
    assert saved["method"] == "gradcam" and saved["n_cases"] == metrics["n_cases"] >= 30
    chance = saved["lesion_area_fraction"]
    assert saved["pointing_game"] >= 0.8
    assert saved["energy_inside"] > 3 * chance
    assert saved["randomised_pointing_game"] <= max(0.25, 5 * chance)
    assert saved["randomisation_rank_corr"] < 0.5
    assert (out / "index.html").is_file() and (out / "manifest.json").is_file()
    assert len(list((out / "cases").glob("*.png"))) == len(list((out / "cases").glob("*.html"))) >= 30
    checks = pd.read_csv(out / "tables" / "cam_checks.csv")
    assert checks["in_checks"].sum() == saved["n_cases"]
    assert checks.loc[checks["in_checks"], "pointing"].mean() == pytest.approx(saved["pointing_game"])


@pytest.fixture(scope="module")
def patch_run(trained_run, tmp_path_factory) -> Path:
    """`patch-train` on the trained run's cache and folds (2 folds, seed 0, like the fixture run)."""
    from mammo_insight.runs.patch import PatchConfig
    from mammo_insight.stages.patch_train import PatchTrainConfig, run_patch_train, write_patch_train

    _, cache = trained_run
    out = tmp_path_factory.mktemp("explain_patch_run")
    options = PatchConfig(model="test_efficientnet", patch_size=16, folds=2, epochs=4, device="cpu")
    write_patch_train(run_patch_train(PatchTrainConfig(cache, out, options)), out)
    return out


@pytest.mark.slow
def test_lesion_map_beside_gradcam_points_at_planted_lesions_where_gradcam_does_not(
    trained_run, patch_run, tmp_path
):
    """`explain --patch-run`: the same fold's lesion map beside each CAM, scored by the same checks.

    At the same input size (the run's input is the 96x72 cache canvas the patch model slides over) and
    the default CAM layer (test_resnet's last stage, a 3 x 3 grid), Grad-CAM's maximum falls outside
    the planted lesions (about 0.01 against a chance level of 0.03) while the lesion map's falls inside
    (1.0 on this cohort). With a finer layer (backbone.layer2, 12 x 9) Grad-CAM reaches 0.97 here (the
    test above), so the gap is the coarse grid's, not a claim that the lesion map always wins.
    """
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app

    run, cache = trained_run
    out = tmp_path / "explain"
    args = ["explain", "--run", str(run), "--cache", str(cache), "--out", str(out), "--n", "1"]
    result = CliRunner().invoke(app, [*args, "--max-checked", "40", "--patch-run", str(patch_run)])
    assert result.exit_code == 0, result.output
    assert "lesion map pointing_game" in result.output
    metrics = json.loads((out / "cam_metrics.json").read_text())
    lesion_map = metrics["lesion_map"]
    assert metrics["input_size"] == list(CACHE) and metrics["cam_grid"] == [3, 3]
    assert lesion_map["patch_run"] == str(patch_run) and lesion_map["n_cases"] == metrics["n_cases"] >= 30
    chance = metrics["lesion_area_fraction"]
    assert lesion_map["lesion_area_fraction"] == pytest.approx(chance)  # the same images, the same support
    assert lesion_map["pointing_game"] >= 0.8 and lesion_map["pointing_game"] > 5 * chance
    assert lesion_map["pointing_game"] > metrics["pointing_game"] + 0.5
    assert metrics["pointing_game"] < 2 * chance  # Grad-CAM at this grid: no better than chance
    assert lesion_map["randomised_pointing_game"] <= max(0.25, 5 * chance)
    print("lesion map randomisation rank correlation over tissue:", lesion_map["randomisation_rank_corr"])
    assert lesion_map["randomisation_rank_corr"] < 0.5  # over the tissue cells, not the shared support
    table = pd.read_csv(out / "tables" / "cam_checks.csv")
    sampled = table[table["in_checks"]]
    assert sampled["map_pointing"].mean() == pytest.approx(lesion_map["pointing_game"])
    assert sampled["pointing"].mean() == pytest.approx(metrics["pointing_game"])
    html = (out / "index.html").read_text()
    assert "Beside the lesion map of the patch model" in html
    plain = _plain_case_widths(run, cache, tmp_path / "plain")
    shown = [name for name in plain if (out / "cases" / name).is_file()]
    widths = {name: cv2.imread(str(out / "cases" / name)).shape[1] for name in shown}
    assert widths and all(widths[name] > plain[name] for name in widths)  # the lesion-map panel

    # a patch run on other folds is refused in one line, before any map is drawn
    other = tmp_path / "other_folds"
    (other / "folds").mkdir(parents=True)
    (other / "config.json").write_text((patch_run / "config.json").read_text())
    oof = pd.read_csv(patch_run / "oof_predictions.csv")
    oof.assign(fold=1 - oof["fold"]).to_csv(other / "oof_predictions.csv", index=False)
    refused_args = [*args[:5], "--out", str(tmp_path / "no"), "--patch-run", str(other)]
    refused = CliRunner().invoke(app, refused_args)
    message = str(refused.exception)
    assert refused.exit_code != 0 and "trained on other folds" in message and "\n" not in message
    assert not (tmp_path / "no" / "cam_metrics.json").exists()


def _plain_case_widths(run: Path, cache: Path, out: Path) -> dict[str, int]:
    """Case-figure widths of a plain explain run (no patch run), by file name."""
    from mammo_insight.stages.explain import ExplainConfig, run_explain, write_explain

    write_explain(run_explain(ExplainConfig(run=run, cache=cache, n=1, max_checked=0, fold=0)), out)
    return {p.name: cv2.imread(str(p)).shape[1] for p in (out / "cases").glob("*.png")}


def _untrained_run(root: Path, cache: Path, view_mode: str) -> Path:
    """A run directory by hand (random weights, random OOF probabilities): cheap, for the pipeline's plumbing."""
    from mammo_insight.nets.factory import build_classifier
    from mammo_insight.runs.run_io import save_fold_model, save_run_config

    index = pd.read_parquet(cache / INDEX_FILE)
    run = root / f"run_{view_mode}"
    save_run_config(
        run,
        {
            "model": "test_resnet",
            "view_mode": view_mode,
            "image_size": list(CACHE),
            "threshold": 0.5,
            "max_views": 2,
            "label_column": "cancer",
        },
    )
    torch.manual_seed(1)
    for fold in (0, 1):
        save_fold_model(run, fold, build_classifier("test_resnet", view_mode))
    rng = np.random.default_rng(0)
    oof = index[["image_id", "breast_id", "patient_id", "cancer"]].copy()
    oof["fold"] = oof["patient_id"].str[1:].astype(int) % 2
    oof["prob"] = rng.random(len(oof))
    if view_mode == "multi":
        oof["prob"] = oof.groupby("breast_id")["prob"].transform("first")
    oof.to_csv(run / "oof_predictions.csv", index=False)
    return run


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_small")
    return root, write_lesion_cohort(root, n_patients=8, seed=3, prevalence=0.6)


@pytest.mark.slow
def test_cli_writes_the_contract_files(small_cohort):
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app

    root, cache = small_cohort
    run, out = _untrained_run(root, cache, "single"), root / "cli_out"
    result = CliRunner().invoke(
        app,
        [
            "explain",
            "--run",
            str(run),
            "--cache",
            str(cache),
            "--out",
            str(out),
            "--method",
            "eigencam",
            "--n",
            "1",
            "--max-checked",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "cam_metrics.json").read_text())
    for key in ("method", "n_cases", "pointing_game", "energy_inside", "randomisation_rank_corr"):
        assert key in metrics
    assert metrics["method"] == "eigencam" and metrics["n_cases"] == 5
    assert 0 <= metrics["pointing_game"] <= 1 and metrics["lesion_area_fraction"] > 0
    table = pd.read_csv(out / "tables" / "cam_checks.csv")
    summarised = table[table["in_checks"]]
    assert len(summarised) == metrics["n_cases"]
    assert summarised["pointing"].mean() == pytest.approx(metrics["pointing_game"], abs=1e-12)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "explain" and manifest["report"] == "index.html"
    assert manifest["headline"]["method"] == "eigencam" and manifest["headline"]["n cases"] == "5"
    html = (out / "index.html").read_text()
    assert "Gallery, fold 0" in html and "data:image/png;base64" in html
    assert "TN: most confident true negatives" in html  # beside the TP maps
    pngs = list((out / "cases").glob("*.png"))
    assert pngs and len(pngs) == len(list((out / "cases").glob("*.html")))
    assert cv2.imread(str(pngs[0])).shape[0] > 300


@pytest.mark.slow
def test_multi_view_run_explains_every_view_of_a_breast(small_cohort):
    from mammo_insight.stages.explain import ExplainConfig, run_explain, write_explain

    root, cache = small_cohort
    run = _untrained_run(root, cache, "multi")
    result = run_explain(ExplainConfig(run=run, cache=cache, method="gradcampp", n=1, max_checked=3))
    write_explain(result, root / "multi_out")
    metrics = result.metrics
    checks = pd.read_csv(root / "multi_out" / "tables" / "cam_checks.csv")
    per_case = checks.groupby("case_id")["image_id"].nunique()
    assert set(per_case) == {2}  # CC and MLO of each breast
    assert all(c.endswith(("_L", "_R")) for c in per_case.index)
    sampled = checks[checks["in_checks"]]
    assert metrics["view_mode"] == "multi" and metrics["n_cases"] == len(sampled) == 6  # 3 breasts x 2 views


@pytest.mark.slow
def test_multi_view_run_gets_a_lesion_map_for_every_view(small_cohort):
    """--patch-run on a multi-view run: each view of a breast mapped by the breast's fold patch model."""
    from mammo_insight.runs.patch import PatchConfig, build_patch_model
    from mammo_insight.runs.run_io import save_fold_model
    from mammo_insight.stages.explain import ExplainConfig, run_explain

    root, cache = small_cohort
    run = _untrained_run(root, cache, "multi")
    patch_run = root / "untrained_patch_run"
    options = PatchConfig(model="test_efficientnet", patch_size=16, folds=2, device="cpu")
    patch_run.mkdir()
    (patch_run / "config.json").write_text(json.dumps(options.to_dict()))
    pd.read_csv(run / "oof_predictions.csv").to_csv(patch_run / "oof_predictions.csv", index=False)
    for fold in (0, 1):
        save_fold_model(patch_run, fold, build_patch_model(options))
    result = run_explain(ExplainConfig(run=run, cache=cache, n=1, max_checked=3, patch_run=patch_run))
    checks = result.checks
    sampled = checks[checks["in_checks"]]
    assert result.metrics["lesion_map"]["n_cases"] == result.metrics["n_cases"] == len(sampled) == 6
    assert sampled["map_pointing"].notna().all() and checks["map_max"].between(0, 1).all()
    assert set(checks.groupby("case_id")["image_id"].nunique()) == {2}


def test_a_run_without_threshold_is_a_clear_error(small_cohort):
    from mammo_insight.errors import MammoInsightError
    from mammo_insight.runs.run_io import load_run_config, save_run_config
    from mammo_insight.stages.explain import ExplainConfig, run_explain

    root, cache = small_cohort
    run = _untrained_run(root, cache, "single")
    config = load_run_config(run)
    del config["threshold"]
    save_run_config(run, config)
    with pytest.raises(MammoInsightError, match="threshold"):
        run_explain(ExplainConfig(run=run, cache=cache))
