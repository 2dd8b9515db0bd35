"""`explain` end to end: CAMs of a run's fold models on held-out cases, checks, gallery, files.

Every case is explained by the fold model that never saw its woman (the ``fold`` column of the OOF
predictions). Cases are the gallery (per fold: most confident TP, FP, FN) plus the annotated images
used by the checks (up to ``max_checked``, a seeded random sample when there are more).

OUT/index.html, OUT/cam_metrics.json, OUT/tables/cam_checks.csv, OUT/cases/<case>.png|.html,
OUT/manifest.json.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.explain import checks, mapping
from mammo_insight.explain.cam import CamExplainer
from mammo_insight.explain.gallery import (
    compose_panels,
    png_bytes,
    render_case_page,
    render_index,
    safe_name,
    select_gallery,
)
from mammo_insight.imaging.cache import read_cache_annotations, read_cache_index
from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.manifest import write_manifest
from mammo_insight.models.data import CacheImageDataset, breast_table
from mammo_insight.models.factory import build_classifier
from mammo_insight.models.run_io import load_fold_model, load_oof, load_run_config, run_folds
from mammo_insight.progress import progress_bar

log = logging.getLogger(__name__)
THUMB_SIDE = 320
SUMMARY_KEYS = {"pointing_game": "pointing", "energy_inside": "energy_inside", "lesion_area_fraction": "area_fraction",
                "randomisation_rank_corr": "rank_corr", "randomised_pointing_game": "random_pointing",
                "randomised_energy_inside": "random_energy_inside", "pointing_game_cell": "pointing_cell",
                "randomised_pointing_game_cell": "random_pointing_cell",
                "lesion_area_fraction_cell": "area_fraction_cell"}


@dataclass
class ExplainConfig:
    """What an explain run depends on (written to the manifest)."""

    method: str = "gradcam"
    n: int = 3                  # gallery cases per fold and category
    fold: int | None = None     # only this fold
    max_checked: int = 100      # annotated images used by the checks
    tolerance: float = 0.0      # pointing-game tolerance, original pixels
    layer: str | None = None    # CAM layer by name; None: found automatically
    batch_size: int = 8
    seed: int = 0               # random-model weights and the check sample
    display_side: int = 640     # longest side of displayed originals
    device: str = "cpu"


def random_twin(config: dict[str, Any], seed: int) -> torch.nn.Module:
    """The run's architecture with fresh random weights (seeded without touching the global RNG)."""
    size = config.get("image_size")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(config["model"], config.get("view_mode", "single"),
                                 img_size=tuple(size) if size else None)
    return model.eval()


def _cases(oof: pd.DataFrame, index: pd.DataFrame, annotations: pd.DataFrame, run_config: dict, cfg: ExplainConfig,
           unit: str, label: str) -> pd.DataFrame:
    """One row per case to explain: case_id, fold, categories (list), prob, label."""
    threshold = run_config.get("threshold")
    if threshold is None:
        raise MammoInsightError("config.json of the run has no 'threshold'; cannot pick TP/FP/FN cases")
    usable = oof[oof["image_id"].isin(index["image_id"])]
    if cfg.fold is not None:
        usable = usable[usable["fold"] == cfg.fold]
    gallery = select_gallery(usable, float(threshold), cfg.n, unit, label)
    annotated = usable[usable["image_id"].isin(annotations["image_id"].astype(str))].drop_duplicates(unit)
    if len(annotated) > cfg.max_checked:
        annotated = annotated.sample(cfg.max_checked, random_state=cfg.seed)
    checked = pd.DataFrame({"case_id": annotated[unit].astype(str), "fold": annotated["fold"].astype(int),
                            "category": "checked", "prob": annotated["prob"], "label": annotated[label]})
    both = pd.concat([gallery, checked], ignore_index=True)
    return (both.groupby(["case_id", "fold"], sort=False)
            .agg(categories=("category", list), prob=("prob", "first"), label=("label", "first")).reset_index())


def _case_images(case_id: str, unit: str, table: pd.DataFrame, max_views: int, label: str) -> pd.DataFrame:
    """The cache rows of one case: the image, or a breast's views in the order the model saw them."""
    rows = table[table[unit] == case_id].reset_index(drop=True)
    if unit == "image_id" or rows.empty:
        return rows
    return rows.iloc[breast_table(rows, max_views, label).at[0, "rows"]].reset_index(drop=True)


def _display(row: pd.Series, cache_image: np.ndarray, geom: CacheGeometry, side: int) -> tuple[np.ndarray, float, str]:
    """(display image, factor, source): the original file when readable, else rebuilt from the cache."""
    path = row.get("image_path")
    if isinstance(path, str) and Path(path).is_file():
        try:
            img, factor = mapping.read_original_display(path, side)
            if img.shape[:2] == tuple(round(v * factor) for v in (geom.orig_height, geom.orig_width)):
                return img, factor, "original file"
        except Exception as exc:  # noqa: BLE001 - a display fallback, never a reason to lose the case
            log.debug("original %s unreadable for display: %s", path, exc)
    factor = mapping.display_scale((geom.orig_height, geom.orig_width), side)
    return mapping.downsample(mapping.original_from_cache(cache_image, geom), factor), factor, "rebuilt from cache"


class _Explainers:
    """Trained-model and random-model explainers for the fold being processed."""

    def __init__(self, run_dir: Path, run_config: dict, cfg: ExplainConfig, size: tuple[int, int], stack: ExitStack):
        self.run_dir, self.cfg, self.size, self.stack = run_dir, cfg, size, stack
        self.random = stack.enter_context(CamExplainer(random_twin(run_config, cfg.seed).to(cfg.device), cfg.method,
                                                       size, cfg.layer))
        self.trained: CamExplainer | None = None
        self.fold: int | None = None

    def for_fold(self, fold: int) -> CamExplainer:
        if fold != self.fold:
            if self.trained is not None:
                self.trained.close()
            model = load_fold_model(self.run_dir, fold, self.cfg.device)
            self.trained = self.stack.enter_context(CamExplainer(model, self.cfg.method, self.size, self.cfg.layer))
            self.fold = fold
        return self.trained


def explain_run(run_dir: str | Path, cache_dir: str | Path, out_dir: str | Path,
                cfg: ExplainConfig | None = None) -> dict[str, Any]:
    """Write the explain outputs (see module doc) and return the cam_metrics dict."""
    cfg = cfg or ExplainConfig()
    run_dir, cache_dir, out_dir = Path(run_dir), Path(cache_dir), Path(out_dir)
    run_config = load_run_config(run_dir)
    label = run_config.get("label_column", "cancer")
    multi = run_config.get("view_mode", "single") == "multi"
    unit = "breast_id" if multi else "image_id"
    size = tuple(run_config["image_size"])
    max_views = int(run_config.get("max_views", 4))
    oof = load_oof(run_dir)
    if label not in oof:
        raise MammoInsightError(f"{run_dir / 'oof_predictions.csv'} has no column {label!r}")
    folds = run_folds(run_dir)
    oof = oof[oof["fold"].isin(folds)]
    if cfg.fold is not None and cfg.fold not in folds:
        raise MammoInsightError(f"{run_dir}: fold {cfg.fold} has no model; folds with a model: {folds}")
    index = read_cache_index(cache_dir)
    index = index.assign(image_id=index["image_id"].astype(str), breast_id=index["breast_id"].astype(str))
    annotations = read_cache_annotations(cache_dir)
    annotations = annotations.assign(image_id=annotations["image_id"].astype(str))
    failures = [f"image {i}: in the OOF predictions but not an ok image of the cache"
                for i in sorted(set(oof["image_id"]) - set(index["image_id"]))[:20]]
    cases = _cases(oof, index, annotations, run_config, cfg, unit, label)
    if cases.empty:
        raise MammoInsightError(f"no case to explain: the OOF predictions of {run_dir} share no image with "
                                f"{cache_dir} (or the chosen fold is empty)")
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    lesions_by_image = {k: g[["x", "y", "radius"]].to_numpy(float) for k, g in annotations.groupby("image_id")}

    records, gallery = [], {}
    with ExitStack() as stack, progress_bar() as bar:
        explainers = _Explainers(run_dir, run_config, cfg, size, stack)
        task = bar.add_task(f"{cfg.method} CAMs", total=len(cases))
        for fold, fold_cases in cases.groupby("fold", sort=True):
            trained = explainers.for_fold(int(fold))
            for start in range(0, len(fold_cases), cfg.batch_size):
                batch = fold_cases.iloc[start:start + cfg.batch_size]
                try:
                    recs, thumbs = _explain_batch(batch, unit, index, lesions_by_image, trained,
                                                  explainers.random, cfg, cache_dir, out_dir, size, max_views, label)
                except MammoInsightError as exc:
                    failures.append(f"fold {fold}, cases {', '.join(batch['case_id'])}: {exc}")
                    bar.advance(task, len(batch))
                    continue
                records.extend(recs)
                for key, item in thumbs:
                    gallery.setdefault(key, []).append(item)
                bar.advance(task, len(batch))
    for fold in sorted(cases["fold"].unique()):
        for category in ("TP", "FP", "FN"):
            gallery.setdefault((int(fold), category), [])

    per_image = pd.DataFrame(records)
    per_image.to_csv(out_dir / "tables" / "cam_checks.csv", index=False)
    # the checks summarise the random sample of annotated images only: gallery picks are chosen by confidence
    in_sample = per_image["categories"].str.split("+").apply(lambda c: "checked" in c)
    lesion_rows = per_image[in_sample & per_image["pointing"].notna()] if "pointing" in per_image else per_image.iloc[:0]
    summary = checks.summarise_checks(lesion_rows, seed=cfg.seed)
    summary["rank_corr"] = checks.mean_with_ci(per_image["rank_corr"].to_numpy(), per_image["patient_id"].to_numpy(),
                                               seed=cfg.seed)
    metrics: dict[str, Any] = {"method": cfg.method, "n_cases": len(lesion_rows),
                               "n_explained_images": len(per_image), "tolerance_px": cfg.tolerance,
                               "threshold": float(run_config["threshold"]), "run": str(run_dir),
                               "model": run_config.get("model"), "view_mode": run_config.get("view_mode", "single"),
                               "layer": explainers.random.target.name,
                               "cam_grid": list(explainers.random.grid_shape or []), "input_size": list(size), "folds": sorted(int(f) for f in cases["fold"].unique())}
    for key, column in SUMMARY_KEYS.items():
        entry = summary.get(column) or {}
        metrics[key] = entry.get("mean")
        metrics[f"{key}_ci"] = [entry.get("ci_low"), entry.get("ci_high")]
    metrics["n_flat_maps"] = int((per_image["cam_max"] <= 0).sum()) if "cam_max" in per_image else 0
    metrics["summary"] = summary
    metrics["failures"] = failures
    (out_dir / "cam_metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    shown = per_image.drop(columns=[c for c in ("png",) if c in per_image])
    write_manifest(out_dir, "explain", {**asdict(cfg), "run": str(run_dir), "cache": str(cache_dir)}, cfg.seed,
                   {"oof_predictions": run_dir / "oof_predictions.csv", "cache_index": cache_dir / "index.parquet"})
    render_index(out_dir / "index.html", metrics, cfg.tolerance, gallery, shown, failures)
    log.info("explained %d images; pointing game %s", len(per_image), metrics["pointing_game"])
    return metrics


def _load_inputs(case_rows: list[pd.DataFrame], cache_dir: Path, size: tuple[int, int], multi: bool,
                 max_views: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model inputs exactly as training saw them (the cache datasets' loading and resizing)."""
    tensors = []
    for rows in case_rows:
        ds = CacheImageDataset(cache_dir, rows, size=size, labels=np.zeros(len(rows)))
        tensors.append(torch.stack([ds.image(i) for i in range(len(rows))]))
    if not multi:
        return torch.cat(tensors), None
    stack = torch.zeros(len(tensors), max_views, 1, *size)
    mask = torch.zeros(len(tensors), max_views, dtype=torch.bool)
    for b, t in enumerate(tensors):
        stack[b, : len(t)] = t
        mask[b, : len(t)] = True
    return stack, mask


def _explain_batch(batch, unit, index, lesions_by_image, trained, random, cfg, cache_dir, out_dir,
                   size, max_views, label):
    """CAMs for one batch of cases; writes each case's PNG and page; returns per-image records and thumbnails."""
    from mammo_insight.imaging.cache import load_cache_image

    multi = unit == "breast_id"
    case_rows = [_case_images(c, unit, index, max_views, label) for c in batch["case_id"]]
    missing = [c for c, rows in zip(batch["case_id"], case_rows) if rows.empty]
    if missing:
        raise MammoInsightError(f"no cache image for case(s) {', '.join(missing)}")
    images, mask = _load_inputs(case_rows, cache_dir, size, multi, max_views)
    got, rnd = trained(images, mask), random(images, mask)
    records, thumbs = [], []
    for b, (case, rows) in enumerate(zip(batch.itertuples(), case_rows)):
        prob = float(1 / (1 + np.exp(-got.logits[b])))
        panels, case_records = [], []
        for v, row in enumerate(rows.to_dict("records")):
            cam = got.maps[b, v] if multi else got.maps[b]
            cam_rand = rnd.maps[b, v] if multi else rnd.maps[b]
            geom = CacheGeometry.from_row(row)
            cache_img = load_cache_image(cache_dir, row)
            full = mapping.cam_to_original(cam, geom)
            full_rand = mapping.cam_to_original(cam_rand, geom)
            support = mapping.support_mask(geom)
            lesions = lesions_by_image.get(str(row["image_id"]))
            rec = {"case_id": case.case_id, "image_id": row["image_id"], "patient_id": row.get("patient_id"),
                   "fold": int(case.fold), "categories": "+".join(case.categories), "label": case.label,
                   "oof_prob": case.prob, "prob": prob, "cam_max": float(cam.max()),
                   "rank_corr": checks.rank_correlation(cam, cam_rand)}
            if lesions is not None and len(lesions):
                hit_mask = checks.lesion_mask(full.shape, lesions, cfg.tolerance)
                inside = checks.lesion_mask(full.shape, lesions)
                cell = _half_cell_original(trained.grid_shape, size, geom)
                cell_mask = checks.lesion_mask(full.shape, lesions, cell)
                rec.update(pointing_cell=checks.pointing_hit(full, cell_mask, support),
                           random_pointing_cell=checks.pointing_hit(full_rand, cell_mask, support),
                           area_fraction_cell=checks.area_fraction(cell_mask, support), half_cell_px=cell)
                rec.update(pointing=checks.pointing_hit(full, hit_mask, support),
                           energy_inside=checks.energy_inside(full, inside),
                           area_fraction=checks.area_fraction(inside, support),
                           random_pointing=checks.pointing_hit(full_rand, hit_mask, support),
                           random_energy_inside=checks.energy_inside(full_rand, inside))
            display, factor, source = _display(row, cache_img, geom, cfg.display_side)
            peak = mapping.peak_location(full)
            shown_cam = mapping.downsample(full, factor)
            over = mapping.overlay(display, shown_cam, lesions, peak, scale=factor)
            cache_lesions = None
            if lesions is not None and len(lesions):
                cx, cy = geom.to_cache(lesions[:, 0], lesions[:, 1])
                cache_lesions = np.stack([cx, cy, geom.length_to_cache(lesions[:, 2])], axis=1)
            model_in = mapping.overlay(cache_img, cv2_resize(cam, cache_img.shape), cache_lesions)
            over_rand = mapping.overlay(display, mapping.downsample(full_rand, factor), lesions,
                                        mapping.peak_location(full_rand), scale=factor)
            hit = rec.get("pointing")
            verdict = "" if hit is None else (", hit" if hit >= 0.5 else ", miss")
            panels.append([(over, f"{row.get('view', '')} {row.get('laterality', '')}: original ({source}){verdict}"),
                           (model_in, "model input"), (over_rand, "random weights")])
            case_records.append(rec)
            if v == 0:
                f = mapping.display_scale(over.shape[:2], THUMB_SIDE)
                thumb = np.clip(mapping.downsample(over, f), 0, 255).astype(np.uint8) if f < 1 else over
        name = safe_name(case.case_id)
        title = (f"{case.case_id}: fold {case.fold}, {'/'.join(case.categories)}, label {case.label:g}, "
                 f"p={prob:.3f}")
        (out_dir / "cases" / f"{name}.png").write_bytes(png_bytes(compose_panels(panels, title)))
        facts = {"fold": str(case.fold), "label": f"{case.label:g}", "probability": f"{prob:.3f}",
                 "category": ", ".join(case.categories)}
        table_cols = ["image_id", "cam_max", "rank_corr", "pointing", "energy_inside", "area_fraction",
                      "random_pointing", "random_energy_inside"]
        frame = pd.DataFrame(case_records)
        render_case_page(out_dir / "cases" / f"{name}.html", case.case_id, f"{name}.png", facts,
                         frame[[c for c in table_cols if c in frame]], cfg.method)
        for rec in case_records:
            rec["png"] = f"cases/{name}.png"
        records.extend(case_records)
        for category in case.categories:
            if category in ("TP", "FP", "FN"):
                thumbs.append(((int(case.fold), category),
                               (thumb, f"{case.case_id} p={prob:.3f}", f"cases/{name}.html")))
    return records, thumbs


def _half_cell_original(grid: tuple[int, int] | None, size: tuple[int, int], geom: CacheGeometry) -> float:
    """Half the diagonal of one CAM grid cell, in original pixels: the finest the map can point."""
    if not grid:
        return 0.0
    cell_h = size[0] / grid[0] * geom.out_height / size[0]   # input pixels -> cache pixels
    cell_w = size[1] / grid[1] * geom.out_width / size[1]
    return float(0.5 * np.hypot(cell_h, cell_w) / np.sqrt(geom.scale_x * geom.scale_y))


def cv2_resize(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    return cam if cam.shape == tuple(shape) else cv2.resize(cam, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
