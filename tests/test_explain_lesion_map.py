"""`explain --patch-run` plumbing without training: fold refusal, the map_ summary, the side-by-side table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.explain.checks import rank_correlation
from mammo_insight.explain.gallery import checks_section
from mammo_insight.explain.lesion_map import PatchRunMaps, randomisation_rank_corr
from mammo_insight.explain.summary import map_summary
from mammo_insight.report.render import render_page
from mammo_insight.runs.patch import PatchConfig, build_patch_model, patch_run_cache, patch_scale_mismatch
from mammo_insight.runs.tiles import LesionMap, slide, tile_features

OOF = pd.DataFrame(
    {"patient_id": ["A", "A", "B", "C"], "image_id": ["a1", "a2", "b1", "c1"], "fold": [0, 0, 1, 1]}
)


def _patch_run(root: Path, folds: list[int], models: tuple[int, ...]) -> Path:
    config = PatchConfig(model="test_efficientnet", patch_size=16, folds=2, device="cpu")
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({**config.to_dict(), "stage": "patch-train"}))
    OOF.assign(fold=folds).to_csv(root / "oof_predictions.csv", index=False)
    for fold in models:
        (root / "folds" / f"fold_{fold}").mkdir(parents=True)
        (root / "folds" / f"fold_{fold}" / "model.pt").write_bytes(b"")
    return root


def test_a_patch_run_on_other_folds_or_without_a_fold_model_is_refused(tmp_path) -> None:
    device = torch.device("cpu")
    same = PatchRunMaps(_patch_run(tmp_path / "same", [0, 0, 1, 1], (0, 1)), device, seed=0)
    same.check_folds(OOF, tmp_path / "run")  # accepted
    same.check_folds(OOF[OOF["fold"] == 0], tmp_path / "run")  # a subset (explain --fold) too
    assert same.config.patch_size == 16 and same.config.stride == 4  # read back from config.json
    moved = PatchRunMaps(_patch_run(tmp_path / "moved", [0, 0, 1, 0], (0, 1)), device, seed=0)
    with pytest.raises(MammoInsightError, match=r"other folds .*image c1: fold 1 in .*run, fold 0 in"):
        moved.check_folds(OOF, tmp_path / "run")
    lacking = PatchRunMaps(_patch_run(tmp_path / "lacking", [0, 0, 1, 1], (0,)), device, seed=0)
    lacking.check_folds(OOF[OOF["fold"] == 0], tmp_path / "run")
    with pytest.raises(MammoInsightError, match=r"no patch model for fold\(s\) 1"):
        lacking.check_folds(OOF, tmp_path / "run")


def _per_image() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["A", "A", "B", "C"],
            "categories": ["checked", "checked", "checked", "TP"],
            "in_checks": [True, True, True, False],
            "pointing": [0.0, 0.0, 0.0, 1.0],
            "rank_corr": [0.1, 0.2, 0.3, 0.4],
            "area_fraction": [0.02, 0.02, 0.02, 0.02],
            "map_pointing": [1.0, 1.0, 0.0, 1.0],
            "map_rank_corr": [0.5, 0.6, 0.7, 0.8],
            "map_area_fraction": [0.02, 0.02, 0.02, 0.02],
        }
    )


def test_the_lesion_map_summary_reads_the_map_columns_of_the_check_sample() -> None:
    per_image = _per_image()
    cam, lesion_map = map_summary(per_image, seed=0), map_summary(per_image, seed=0, prefix="map_")
    assert cam["pointing"]["mean"] == 0.0 and cam["pointing"]["n"] == 3  # the TP gallery pick is left out
    assert lesion_map["pointing"]["mean"] == pytest.approx(2 / 3) and lesion_map["pointing"]["n"] == 3
    assert lesion_map["rank_corr"]["mean"] == pytest.approx(0.65)  # every explained image
    assert cam["rank_corr"]["mean"] == pytest.approx(0.25)


def test_the_index_sets_the_lesion_map_beside_the_cam_only_when_there_is_one(tmp_path) -> None:
    per_image = _per_image()
    metrics = {"method": "gradcam", "n_cases": 3, "summary": map_summary(per_image, seed=0)}
    plain = render_page(tmp_path / "plain.html", "t", [checks_section(metrics, 0.0)]).read_text()
    assert "lesion map" not in plain
    metrics["lesion_map"] = {
        "patch_run": "PATCHRUN",
        "model": "resnet10t",
        "patch_size": 32,
        "stride": 8,
        "summary": map_summary(per_image, seed=0, prefix="map_"),
    }
    html = render_page(tmp_path / "both.html", "t", [checks_section(metrics, 0.0)]).read_text()
    assert "Beside the lesion map of the patch model" in html and "PATCHRUN" in html
    row = html[html.index("pointing game</td>") :].split("</tr>")[0]
    assert "0.000" in row and "0.667" in row and "0.020" in row  # CAM, lesion map, chance
    assert np.isfinite(metrics["lesion_map"]["summary"]["pointing"]["ci_low"])


def _cache(root: Path, size: list[int]) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"size": size, "bits": 8}))
    return root


def test_a_patch_run_slid_over_a_cache_of_another_resolution_is_named(tmp_path) -> None:
    run = _patch_run(tmp_path / "run", [0, 0, 1, 1], (0, 1))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "cache_size": [64, 32]}))
    assert patch_scale_mismatch(run, _cache(tmp_path / "same", [64, 32])) is None
    message = patch_scale_mismatch(run, _cache(tmp_path / "finer", [128, 64]))
    assert message is not None and "64x32 cache images" in message and "holds 128x64" in message
    # a run from before cache_size was recorded: compared through the cache it names
    (run / "config.json").write_text(json.dumps({**config, "cache": str(tmp_path / "finer")}))
    assert patch_scale_mismatch(run, tmp_path / "finer") is None
    assert "128x64 cache images" in patch_scale_mismatch(run, tmp_path / "same")
    (tmp_path / "by_hand").mkdir()  # a cache without config.json (built by hand): nothing to compare
    assert patch_scale_mismatch(run, tmp_path / "by_hand") is None


def test_the_randomisation_check_of_a_lesion_map_ignores_the_shared_tissue_support() -> None:
    """Two maps that agree only on where the tissue is are not called similar."""
    rng = np.random.default_rng(0)
    tissue = np.zeros((40, 20), bool)
    tissue[5:35, :12] = True
    trained, random = rng.random(tissue.sum()), rng.random(tissue.sum())

    def as_map(cells: np.ndarray) -> LesionMap:
        heatmap = np.zeros(tissue.shape, np.float32)
        heatmap[tissue] = cells
        return LesionMap(heatmap, float(cells.max()), cells)

    whole_canvas = rank_correlation(as_map(trained).heatmap, as_map(random).heatmap)
    assert whole_canvas > 0.4  # what the canvas-wide correlation used to report
    assert abs(randomisation_rank_corr(as_map(trained), as_map(random))) < 0.15
    assert randomisation_rank_corr(as_map(trained), as_map(2 * trained)) == pytest.approx(1.0)


def test_tile_features_are_the_tiles_the_lesion_map_scores() -> None:
    """The multiple-instance study's tiles are slide's cells: same tiles, same order, same scores."""
    model = build_patch_model(PatchConfig(model="test_efficientnet", patch_size=16, device="cpu")).eval()
    image = np.zeros((64, 48), np.float32)
    image[8:56, :30] = np.random.default_rng(0).random((48, 30))
    options = {"patch_size": 16, "stride": 4, "tissue_level": 0.05, "device": torch.device("cpu")}
    lesion_map = slide(model, image, **options)
    features, logits = tile_features(model, image, **options, batch_size=7)  # several batches
    assert features.shape == (len(lesion_map.cells), model.embedding_dim) and len(lesion_map.cells) > 7
    assert np.allclose(1 / (1 + np.exp(-logits)), lesion_map.cells, atol=1e-6)


def test_a_patch_run_without_a_recorded_cache_says_so(tmp_path) -> None:
    run = _patch_run(tmp_path / "run", [0, 0, 1, 1], (0, 1))
    with pytest.raises(MammoInsightError, match=r"names no cache: give the cache explicitly"):
        patch_run_cache(run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "cache": str(tmp_path / "cache")}))
    assert patch_run_cache(run) == tmp_path / "cache"
