"""`patch-train`: a lesion-patch classifier per fold, its patch-level metrics, lesion maps and their checks.

A command of its own rather than `train --stage patch`: its outputs are a different contract (patch
rows, patch models of a patch input size, lesion-map checks) that evaluate, embed, explain and predict
do not read, so folding it into `train` would make every reader of a run folder ask which kind it holds.

Each fold trains on the engine `train` uses (training/engine.py, through training/patches.py): config.json
is written first, a rerun of an interrupted command resumes its unfinished fold from last.ckpt and skips
the finished ones, and a rerun with other settings is refused. Everything is out-of-fold: the folds are the whole-image folds (``runs.patch.patch_folds``), each
fold's model scores the patches and slides over the films of the women it never saw. Writes::

    PATCHRUN/config.json            PatchConfig plus the cache it read and that cache's image size
    PATCHRUN/patches.csv            one row per sampled patch: image, fold, centre, label, oof prob
    PATCHRUN/metrics.json           patch-level metrics with intervals that resample women;
                                    image- and breast-level metrics of the max-pooled lesion map, and
                                    under "learned" the same levels of the learned pooling, with its
                                    per-fold coefficients under "learned_pooling"
    PATCHRUN/oof_predictions.csv    per image: fold, label, prob (max of its lesion map), the map's
                                    statistics (map_*) and prob_learned (``models.map_pooling``)
    PATCHRUN/tables/lesion_map_checks.csv   per annotated image: pointing game, energy inside, chance
    PATCHRUN/lesion_map_metrics.json        their means with patient-bootstrap intervals
    PATCHRUN/folds/fold_<k>/model.pt        the fold's patch classifier (state dict), written atomically
    PATCHRUN/folds/fold_<k>/history.csv     its per-epoch loss, pF1, ROC-AUC of training and validation patches
    PATCHRUN/checkpoints/fold_<k>/          Lightning's last.ckpt (every epoch) until the fold is done
    PATCHRUN/manifest.json, index.html
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammo_insight.explain import checks
from mammo_insight.explain.lesion_map import lesion_map_record
from mammo_insight.files import write_csv_atomic
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import (
    CONFIG_FILE,
    INDEX_FILE,
    load_cache_image,
    read_cache_config,
    recorded_image_size,
)
from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.metrics import (
    ThresholdRule,
    evaluate_predictions,
    metrics_with_ci,
    save_metrics_json,
    thresholds_of,
)
from mammo_insight.nets.device import resolve_device
from mammo_insight.progress import track
from mammo_insight.report.blocks import fmt_ci, paragraph, table
from mammo_insight.report.render import Section, render_page
from mammo_insight.runs.config import PatchConfig
from mammo_insight.runs.map_pooling import MAP_STATISTICS, PENALTY_C, learned_film_scores, map_statistics
from mammo_insight.runs.patch import build_patch_model, load_patch_model, score_patches
from mammo_insight.runs.patch_run import slide_film
from mammo_insight.runs.run_io import fold_model_path
from mammo_insight.runs.spec import RunSpec
from mammo_insight.runs.tiles import LesionMap
from mammo_insight.stages.base import StageResult, finish_stage, working_folder
from mammo_insight.training.patches import patch_folds, sample_patches, train_patch_folds
from mammo_insight.training.sources import load_training_table

log = logging.getLogger(__name__)
CHECK_SUMMARY = {
    "pointing_game": "pointing",
    "energy_inside": "energy_inside",
    "lesion_area_fraction": "area_fraction",
    "pointing_game_cell": "pointing_cell",
    "lesion_area_fraction_cell": "area_fraction_cell",
    "randomised_pointing_game": "random_pointing",
    "randomised_energy_inside": "random_energy_inside",
    "randomisation_rank_corr": "rank_corr",
}


@dataclass(frozen=True)
class PatchTrainConfig:
    cache: Path
    out: Path
    options: PatchConfig = field(default_factory=PatchConfig)


@dataclass(frozen=True)
class PatchTrainResult(StageResult):
    config: PatchTrainConfig
    patches: pd.DataFrame
    images: pd.DataFrame  # per validation image: fold, label, prob (max of its map), map_*, prob_learned
    map_checks: pd.DataFrame
    metrics: dict[str, Any]
    map_metrics: dict[str, Any]
    writer: bool = True  # False on a DDP worker rank: it trained beside rank 0, which scores and writes
    stage = "patch-train"
    title = "Patch classifier and lesion maps"

    @classmethod
    def of_worker_rank(cls, config: PatchTrainConfig) -> PatchTrainResult:
        """What a DDP worker rank holds once the folds are trained: nothing to write or show."""
        empty = pd.DataFrame()
        return cls(config, empty, empty, empty, {}, {}, writer=False)

    def headline(self) -> dict[str, str]:
        if not self.writer:
            return {}
        patch = self.metrics["patch"]
        image = self.metrics["image"]
        return {
            "patch ROC-AUC": fmt_ci(patch["roc_auc"]),
            "image ROC-AUC (max-pooled map, prob)": fmt_ci(image["roc_auc"]),
            "image ROC-AUC (learned pooling)": fmt_ci(self.metrics["learned"]["image"]["roc_auc"]),
            "lesion-map pointing game": _mean_vs(self.map_metrics, "pointing_game", "lesion_area_fraction"),
        }

    def figures(self) -> list[tuple[Callable[[], Any], str]]:
        return []


def _mean_vs(summary: dict, key: str, chance: str) -> str:
    value, ref = summary.get(key), summary.get(chance)
    if value is None:
        return ""
    return f"{value:.3f} (chance {ref:.3f})" if ref is not None else f"{value:.3f}"


def run_patch_train(config: PatchTrainConfig) -> PatchTrainResult:
    """Sample patches, train one patch model per fold (resuming an interrupted run), score the fold's
    patches and films out-of-fold. On a DDP worker rank an empty result (rank 0 scores and writes)."""
    opts = config.options
    started = time.perf_counter()
    table = patch_folds(load_training_table(config.cache, opts.label_column), opts)
    table = table.assign(image_id=table["image_id"].astype(str))
    lesions = annotations.read(config.cache)
    patches, pixels = sample_patches(config.cache, table, lesions, opts)
    log.info(
        "%d patches (%d lesion, %d background) of %dx%d from %d images",
        len(patches),
        int(patches["label"].sum()),
        int((patches["label"] == 0).sum()),
        opts.patch_size,
        opts.patch_size,
        len(table),
    )
    if not train_patch_folds(config.out, run_values(config), patches, pixels, opts):
        return PatchTrainResult.of_worker_rank(config)
    patches["prob"] = np.nan
    image_rows, check_rows = _score_folds(config, table, lesions, patches, pixels)
    images = pd.DataFrame(image_rows)
    images["prob_learned"], coefficients = learned_film_scores(images, opts.label_column)
    map_checks = pd.DataFrame(check_rows)
    metrics = _metrics(patches, images, opts)
    metrics["learned_pooling"] = {"features": MAP_STATISTICS, "C": PENALTY_C, "coefficients": coefficients}
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    metrics["train_loss"] = _train_losses(config.out, opts.folds)
    return PatchTrainResult(config, patches, images, map_checks, metrics, _map_summary(map_checks, opts.seed))


def run_spec(config: PatchTrainConfig) -> RunSpec:
    """The patch run's spec: its recipe, the cache it reads, that cache's image size and preprocessing."""
    cache = config.cache
    size = recorded_image_size(cache)
    return RunSpec.patch(
        config.options,
        image_size=size,
        cache=str(cache),
        preprocess=read_cache_config(cache) if (cache / CONFIG_FILE).is_file() else None,
        facts={"cache_size": size, "stage": "patch-train"},
    )


def run_values(config: PatchTrainConfig) -> dict[str, Any]:
    """PATCHRUN/config.json as the folds start (the thresholds come when they are scored): the spec's
    format from the first write, so a rerun compares like with like."""
    return run_spec(config).to_dict()


def _score_folds(
    config: PatchTrainConfig,
    table: pd.DataFrame,
    lesions: pd.DataFrame,
    patches: pd.DataFrame,
    pixels: np.ndarray,
) -> tuple[list[dict], list[dict]]:
    """Each fold's saved model scores its own patches (into patches["prob"]) and slides over its own films:
    (film rows, lesion-map check rows), the checks beside the same map from random weights."""
    opts = config.options
    device = resolve_device(opts.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed + 1)
        twin = build_patch_model(opts).to(device).eval()
    lesions_of = annotations.by_image(lesions)
    image_rows, check_rows = [], []
    for fold in range(opts.folds):
        model = load_patch_model(fold_model_path(config.out, fold), opts, device)
        val = (patches["fold"] == fold).to_numpy()
        patches.loc[val, "prob"] = score_patches(model, pixels[val], device)
        films = table[table["fold"] == fold].to_dict("records")
        for row in track(films, f"fold {fold}: lesion maps", total=len(films)):
            image = load_cache_image(config.cache, row)
            scored = slide_film(model, image, opts, device)
            image_rows.append(film_record(row, fold, scored, opts.label_column))
            own = lesions_of.get(row["image_id"])
            if own is None:
                continue
            random_map = slide_film(twin, image, opts, device)
            record = lesion_map_record(
                scored, random_map, own, CacheGeometry.from_row(row), config.cache, stride=opts.stride
            )
            check_rows.append({**_image_facts(row, opts.label_column), "fold": fold, **record})
    return image_rows, check_rows


def _train_losses(out: Path, folds: int) -> dict[str, list[float]]:
    """Each fold's mean training loss per epoch (its history.csv)."""
    losses = {}
    for fold in range(folds):
        history = pd.read_csv(out / "folds" / f"fold_{fold}" / "history.csv")
        train = history[history["split"] == "train"].sort_values("epoch")
        losses[str(fold)] = [round(float(v), 4) for v in train["loss"]]
    return losses


def film_record(row: dict, fold: int, scored: LesionMap, label: str) -> dict[str, Any]:
    """One oof_predictions.csv row before pooling: the film, its fold, prob (the map's max), the map_* inputs."""
    return {**_image_facts(row, label), "fold": fold, "prob": scored.score, **map_statistics(scored.cells)}


def _image_facts(row: dict, label: str) -> dict[str, Any]:
    facts = {k: row.get(k) for k in ("image_id", "patient_id", "breast_id", "laterality", "view")}
    return {**facts, label: row.get(label)}


def _metrics(patches: pd.DataFrame, images: pd.DataFrame, opts: PatchConfig) -> dict[str, Any]:
    label = opts.label_column
    patch = metrics_with_ci(patches["label"], patches["prob"], patches["patient_id"], seed=opts.seed)
    rule = ThresholdRule(opts.threshold_method, opts.target_sensitivity)
    levels = evaluate_predictions(images, None, seed=opts.seed, label=label, rule=rule)
    learned = evaluate_predictions(images, None, seed=opts.seed, label=label, prob="prob_learned", rule=rule)
    counts = patches.groupby("kind").size().to_dict()
    return {"patch": patch, **levels, "learned": learned, "patch_counts": counts, "folds": opts.folds}


def _map_summary(map_checks: pd.DataFrame, seed: int) -> dict[str, Any]:
    if map_checks.empty:
        return {"n_images": 0}
    summary = checks.summarise_checks(map_checks, seed=seed)
    out: dict[str, Any] = {"n_images": len(map_checks)}
    for key, column in CHECK_SUMMARY.items():
        entry = summary.get(column) or {}
        out[key] = entry.get("mean")
        out[f"{key}_ci"] = [entry.get("ci_low"), entry.get("ci_high")]
    return out


def write_patch_train(result: PatchTrainResult, out: Path) -> Path:
    """The run's tables and metrics, then the manifest, then index.html (returned)."""
    out = working_folder(result.config.out, out, "patch-train")
    if not result.writer:
        return out / "index.html"
    opts = result.config.options
    spec = run_spec(result.config).with_thresholds(thresholds_of(result.metrics))
    spec.write(out)
    values = spec.to_dict()
    write_csv_atomic(out / "patches.csv", result.patches)
    write_csv_atomic(out / "oof_predictions.csv", result.images)
    write_csv_atomic(out / "tables" / "lesion_map_checks.csv", result.map_checks)
    save_metrics_json(out / "metrics.json", result.metrics)
    save_metrics_json(out / "lesion_map_metrics.json", result.map_metrics)
    finish_stage(
        out,
        result,
        values,
        seed=opts.seed,
        inputs={"cache_index": result.config.cache / INDEX_FILE},
        render=lambda: _render(result, out / "index.html"),
    )
    return out / "index.html"


def _render(result: PatchTrainResult, page: Path) -> Path:
    opts = result.config.options
    metrics = result.metrics
    levels = [(level, metrics[level]) for level in ("patch", "image", "breast", "breast_max")]
    levels += [(f"{level}, learned pooling", metrics["learned"][level]) for level in ("image", "breast")]
    rows = [
        {"level": level, "n": values["n"], "positives": values["n_pos"]}
        | {name: fmt_ci(values[name]) for name in ("roc_auc", "pr_auc", "balanced_accuracy")}
        for level, values in levels
    ]
    summary = result.map_metrics

    def cell(key: str) -> str:
        low, high = summary.get(f"{key}_ci") or (None, None)
        return fmt_ci({"value": summary.get(key), "ci_low": low, "ci_high": high})

    check_rows = [
        {
            "check": name,
            "lesion map (95% CI)": cell(key),
            "chance": cell(chance) if chance else "",
            "random weights": cell(random) if random else "",
        }
        for name, key, chance, random in (
            ("pointing game", "pointing_game", "lesion_area_fraction", "randomised_pointing_game"),
            ("pointing game, half-cell tolerance", "pointing_game_cell", "lesion_area_fraction_cell", ""),
            ("energy inside", "energy_inside", "lesion_area_fraction", "randomised_energy_inside"),
            ("rank correlation with the random map", "randomisation_rank_corr", "", ""),
        )
        if summary.get(key) is not None
    ]
    sections = [
        Section(
            "Patch classifier",
            [
                paragraph(
                    f"{opts.model} on {opts.patch_size}x{opts.patch_size} cache-pixel patches: "
                    f"{opts.lesion_patches} jittered patches per annotated lesion (jitter "
                    f"{opts.jitter:g} of the patch), {opts.background_ratio:g} background patches per "
                    f"lesion patch from breast tissue away from lesions; {opts.folds} patient-grouped folds "
                    f"identical to those of train, {opts.epochs} epochs. Image and breast levels score each film "
                    "by the maximum of its out-of-fold lesion map (max pooling, nothing trained on top; "
                    "this is prob in oof_predictions.csv). The learned-pooling rows score it by a logistic "
                    f"regression (standardised, L2 with C={PENALTY_C:g}) over five statistics of the map's "
                    "tissue cells (max, mean of the top 5, share above 0.5, mean, standard deviation), "
                    "fitted for each fold on the other folds' films (prob_learned). Caveat: the other "
                    "folds' statistics came from patch models that trained on this fold's women. "
                    "Intervals resample women."
                ),
                table(pd.DataFrame(rows)),
            ],
        ),
        Section(
            "Lesion-map checks",
            [
                paragraph(
                    f"The fold's patch model slid over each annotated validation film (stride {opts.stride} "
                    "cache pixels), mapped to the original pixels and scored like Grad-CAM: pointing game "
                    "and energy inside the lesions against the lesion's share of the crop (the chance "
                    "level of both), and the same map from random weights."
                ),
                table(pd.DataFrame(check_rows)) if check_rows else paragraph("No annotated validation film."),
            ],
        ),
    ]
    return render_page(
        page, "Patch classifier", sections, subtitle=f"mammo-insight patch-train; {result.config.cache}"
    )
