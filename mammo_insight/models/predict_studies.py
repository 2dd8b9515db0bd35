"""`predict`: breast-level probabilities and the run's tuned decision for new DICOM studies.

The images go through exactly the preprocessing the run was trained on (size, bit depth, flip,
crop margin, masking, decoder: the run's config.json ``preprocess``, else its training cache's
config.json) into a cache (temporary unless ``cache_dir`` is given), every fold model scores it and
the fold probabilities are averaged (no fold model saw these images, so none is preferred). Breast
probabilities are formed as the run's metrics formed them: the mean over a breast's images for a
single-view model, the model's own breast output for a multi-view one; the decision is
prob >= the breast-level threshold the run tuned on its out-of-fold predictions.

Without ``dataset`` the folder needs no CSV: patient_id is the first sub-folder under DIR
(RSNA layout ``<patient_id>/<image_id>.dcm``), or for files directly in DIR a hash of the DICOM
PatientID; laterality comes from ImageLaterality/Laterality and view from ViewPosition. What could not
be determined is written in the ``notes`` column. No identifying DICOM tag (PatientName, BirthDate,
...) is ever copied to an output; PatientID only as a one-way hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.cohort.schema import CANONICAL_COLUMNS, Cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import CONFIG_FILE, read_cache_index
from mammo_insight.imaging.pipeline import PreprocessConfig

log = logging.getLogger(__name__)
BREAST_COLUMNS = ["breast_id", "patient_id", "laterality", "n_images", "prob", "threshold", "decision", "notes"]
IMAGE_COLUMNS = ["image_id", "breast_id", "patient_id", "laterality", "view", "file", "prob", "status", "reason",
                 "notes"]
PREPROCESS_KEYS = ("size", "bits", "flip", "backend", "margin", "mask")
THUMB_SIDE = 256  # index.html embeds thumbnails; the full overlays are the PNG files


@dataclass
class Prediction:
    """What `predict_studies` wrote: the breast and image tables and their paths."""

    breasts: pd.DataFrame
    images: pd.DataFrame
    breast_csv: Path
    image_csv: Path
    cams_index: Path | None = None


def run_preprocess_config(run_dir: Path, config: dict[str, Any]) -> PreprocessConfig:
    """The preprocessing the run was trained on: config.json ``preprocess``, else the training cache's config."""
    settings = config.get("preprocess")
    if not settings and config.get("cache") and (Path(config["cache"]) / CONFIG_FILE).is_file():
        settings = json.loads((Path(config["cache"]) / CONFIG_FILE).read_text())
    if not settings:
        size = config.get("image_size")
        if not size:
            raise MammoInsightError(f"{run_dir}/config.json records neither its preprocessing nor an image_size")
        log.warning("%s records no preprocessing and its training cache %s is gone: using the preprocess "
                    "defaults at size %sx%s", run_dir, config.get("cache"), *size)
        settings = {"size": size}
    values = {k: settings[k] for k in PREPROCESS_KEYS if k in settings}
    values["size"] = tuple(int(v) for v in values["size"])
    if "flip" in values:
        values["flip"] = values["flip"] in (True, "left")
    return PreprocessConfig(**values)


def breast_threshold(run_dir: Path, config: dict[str, Any]) -> float:
    """The breast-level operating threshold the run tuned (metrics.json, else config.json ``thresholds``)."""
    from mammo_insight.metrics import thresholds_of

    path = run_dir / "metrics.json"
    thresholds = thresholds_of(json.loads(path.read_text())) if path.is_file() else {}
    thresholds = thresholds or config.get("thresholds") or {}
    if "breast" not in thresholds:
        raise MammoInsightError(f"{run_dir}: no breast-level threshold in metrics.json or config.json; "
                                "is the training run finished?")
    return float(thresholds["breast"])


def _hashed(value: str) -> str:
    return "pid-" + hashlib.sha256(value.encode()).hexdigest()[:12]


def _header_facts(path: Path) -> tuple[dict[str, str | None], str | None]:
    """(laterality, view, hashed patient id) from the header only, or the reason it is not a DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable header is listed, never fatal
        return {}, f"{path.name}: not a readable DICOM ({type(exc).__name__}: {exc})"
    lat = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()[:1]
    view = str(ds.get("ViewPosition") or "").strip().upper()
    pid = str(ds.get("PatientID") or "").strip()
    return {"laterality": lat if lat in ("L", "R") else None, "view": view or None,
            "hashed_patient": _hashed(pid) if pid else None}, None


def folder_cohort(images_dir: Path) -> tuple[Cohort, pd.DataFrame]:
    """A canonical table for a folder of DICOMs without a CSV, plus the files whose header is unreadable."""
    files = sorted(p for p in images_dir.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(images_dir).parts))
    if not files:
        raise MammoInsightError(f"{images_dir} holds no file to predict on")
    stems = pd.Series([p.stem for p in files])
    rows, failed = [], []
    for path, stem, dup in zip(files, stems, stems.duplicated(keep=False)):
        rel = path.relative_to(images_dir)
        image_id = "_".join(rel.with_suffix("").parts) if dup else stem
        facts, reason = _header_facts(path)
        notes = []
        if len(rel.parts) > 1:
            patient = rel.parts[0]
        elif reason is None and facts.get("hashed_patient"):
            patient = facts["hashed_patient"]
        else:
            patient = f"file-{image_id}"
            notes.append("patient unknown (no sub-folder, no PatientID)")
        lat = facts.get("laterality")
        if lat is None:
            notes.append("laterality unknown: scored as its own breast")
        if facts.get("view") is None:
            notes.append("view unknown")
        if reason:  # no breast to attach it to: listed in the image table only
            failed.append({"patient_id": patient if len(rel.parts) > 1 else None, "image_id": image_id,
                           "file": str(rel), "reason": reason, "notes": ""})
            continue
        rows.append({"patient_id": patient, "image_id": image_id, "laterality": lat, "view": facts.get("view"),
                     "breast_id": f"{patient}_{lat}" if lat else f"{patient}_{image_id}", "image_path": str(path),
                     "file": str(rel), "notes": "; ".join(notes)})
    table = pd.DataFrame(rows, columns=[*CANONICAL_COLUMNS, "file", "notes"])
    for col in CANONICAL_COLUMNS:
        if col not in ("patient_id", "image_id", "laterality", "view", "breast_id", "image_path"):
            table[col] = np.nan
    return Cohort(table, dataset="folder", label_meaning="unknown (unlabelled)"), pd.DataFrame(failed)


def dataset_cohort(dataset: str, images_dir: Path, mapping: Path | None) -> Cohort:
    """A cohort through the dataset's adapter; image_path kept relative to the root for the outputs."""
    from mammo_insight.cohort.adapters import load_cohort

    cohort = load_cohort(dataset, images_dir, mapping)
    table = cohort.table.copy()
    table["file"] = [str(Path(p).relative_to(images_dir)) if isinstance(p, str) and Path(p).is_relative_to(images_dir)
                     else (Path(p).name if isinstance(p, str) else "") for p in table["image_path"]]
    table["notes"] = ""
    cohort.table = table
    return cohort


def score_cache(run_dir: Path, config: dict[str, Any], cache_dir: Path, table: pd.DataFrame,
                device: str = "cpu", batch_size: int = 32) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(image probs, breast probs or None): the mean of every fold model's probabilities."""
    from mammo_insight.models.predict import predict_cache
    from mammo_insight.models.run_io import load_fold_model, run_folds

    folds = run_folds(run_dir)
    if not folds:
        raise MammoInsightError(f"{run_dir} has no trained fold model (folds/fold_<k>/model.pt)")
    label = config.get("label_column", "cancer")
    table = table.assign(**{label: np.nan}) if label not in table else table
    size = tuple(config["image_size"]) if config.get("image_size") else None
    image_probs, breast_probs, images, breasts = [], [], None, None
    for fold in folds:
        model = load_fold_model(run_dir, fold, device)
        images, breasts = predict_cache(model, cache_dir, table, config.get("view_mode", "single"), size,
                                        batch_size, config.get("max_views", 4), device, label)
        image_probs.append(images["prob"].to_numpy())
        if breasts is not None:
            breast_probs.append(breasts["prob"].to_numpy())
    images["prob"] = np.mean(image_probs, axis=0)
    if breasts is not None:
        breasts["prob"] = np.mean(breast_probs, axis=0)
    return images, breasts


def _breast_table(image_rows: pd.DataFrame, breasts: pd.DataFrame | None, threshold: float) -> pd.DataFrame:
    """One row per breast of the input, also those none of whose images could be scored (prob empty)."""
    rows = image_rows[image_rows["breast_id"].notna()]
    ok = rows[rows["status"] == "ok"]
    prob = (breasts.set_index("breast_id")["prob"] if breasts is not None
            else ok.groupby("breast_id", sort=False)["prob"].mean())
    out = rows.groupby("breast_id", sort=False).agg(
        patient_id=("patient_id", "first"), laterality=("laterality", "first"),
        notes=("notes", lambda s: "; ".join(dict.fromkeys(n for v in s.dropna() for n in str(v).split("; ") if n))),
    ).reset_index()
    out["n_images"] = out["breast_id"].map(ok["breast_id"].value_counts()).fillna(0).astype(int)
    n_failed = out["breast_id"].map(rows.loc[rows["status"] != "ok", "breast_id"].value_counts()).fillna(0)
    out["notes"] = [("; ".join(filter(None, [n, f"{int(f)} image(s) failed"])) if f else n)
                    for n, f in zip(out["notes"], n_failed)]
    out["prob"] = out["breast_id"].map(prob)
    out["threshold"] = threshold
    out["decision"] = pd.array([pd.NA if pd.isna(p) else int(p >= threshold) for p in out["prob"]], dtype="Int64")
    return out[BREAST_COLUMNS]


def predict_studies(run_dir: str | Path, images_dir: str | Path, out_csv: str | Path,
                    cams_dir: str | Path | None = None, dataset: str | None = None, mapping: str | Path | None = None,
                    cache_dir: str | Path | None = None, device: str = "auto", batch_size: int = 32,
                    workers: int = 1) -> Prediction:
    """Write OUT.csv (one row per breast) and OUT_images.csv (one row per file, failures with reason).

    cache_dir: keep the preprocessed cache there (default: a temporary folder, deleted afterwards).
    cams_dir: one Grad-CAM overlay PNG per scored image on the original mammogram, plus index.html.
    """
    import torch

    from mammo_insight.imaging.build import build_cache
    from mammo_insight.models.run_io import load_run_config

    run_dir, images_dir, out_csv = Path(run_dir), Path(images_dir), Path(out_csv)
    config = load_run_config(run_dir)
    threshold = breast_threshold(run_dir, config)
    preprocess = run_preprocess_config(run_dir, config)
    if not images_dir.is_dir():
        raise MammoInsightError(f"--images {images_dir} is not a folder")
    if dataset:
        cohort, unreadable = dataset_cohort(dataset, images_dir, Path(mapping) if mapping else None), pd.DataFrame()
    else:
        cohort, unreadable = folder_cohort(images_dir)
    dev = torch.device("cuda" if device in {"auto", "cuda"} and torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="mammo-predict-") as tmp:
        cache = Path(cache_dir) if cache_dir else Path(tmp) / "cache"
        if cohort.table.empty:
            index = pd.DataFrame(columns=["image_id", "status"])
        else:
            build_cache(cohort, cache, preprocess, workers=workers, sheet_size=0, show_progress=False)
            index = read_cache_index(cache, include_failed=True)
        ok = index[index["status"] == "ok"].reset_index(drop=True)
        if ok.empty:
            reasons = list(unreadable.get("reason", [])) + list(_cache_reasons_by_id(cache).values())
            raise MammoInsightError(f"no image under {images_dir} could be read ({len(reasons)} file(s) failed"
                                    + (f"; first: {reasons[0]}" if reasons else "") + ")")
        images, breasts = score_cache(run_dir, config, cache, ok, dev, batch_size)
        image_rows = _image_table(cohort.table, unreadable, index, images, _cache_reasons_by_id(cache))
        breast_rows = _breast_table(image_rows, breasts, threshold)
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        image_csv = out_csv.with_name(f"{out_csv.stem}_images.csv")
        breast_rows.to_csv(out_csv, index=False)
        image_rows.to_csv(image_csv, index=False)
        cams_index = None
        if cams_dir is not None:
            cams_index = write_prediction_cams(run_dir, config, cache, ok, image_rows, breast_rows, Path(cams_dir),
                                               dev, batch_size)
    from mammo_insight.manifest import write_manifest

    write_manifest(out_csv.parent, "predict", {"run": str(run_dir), "images": str(images_dir), "out": out_csv.name,
                                               "dataset": dataset, "threshold": threshold, "preprocess": preprocess.as_dict(),
                                               "device": str(dev)}, config.get("seed"),
                   {"run_config": run_dir / "config.json"})
    n_failed = int((image_rows["status"] != "ok").sum())
    log.info("%d breast(s) scored from %d image(s); %d file(s) failed (see %s)", breast_rows["prob"].notna().sum(),
             len(images), n_failed, image_csv.name)
    return Prediction(breast_rows, image_rows, out_csv, image_csv, cams_index)


def _cache_reasons_by_id(cache: Path) -> dict[str, str]:
    path = cache / "failures.csv"
    if not path.is_file():
        return {}
    failures = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(failures["image_id"], failures["reason"]))


def _image_table(cohort_table: pd.DataFrame, unreadable: pd.DataFrame, index: pd.DataFrame, images: pd.DataFrame,
                 reasons: dict[str, str]) -> pd.DataFrame:
    """One row per input file: its probability, or status failed and the reason."""
    rows = pd.concat([cohort_table, unreadable], ignore_index=True) if not unreadable.empty else cohort_table.copy()
    prob = images.set_index("image_id")["prob"]
    rows["prob"] = rows["image_id"].map(prob)
    status = rows["image_id"].map(index.set_index("image_id")["status"]) if not index.empty else pd.Series(
        np.nan, index=rows.index)
    rows["status"] = status.fillna("failed").astype(str)
    if "reason" not in rows:
        rows["reason"] = None
    rows["reason"] = rows["reason"].where(rows["reason"].notna(), rows["image_id"].map(reasons))
    return rows[IMAGE_COLUMNS]


def _cam_maps(run_dir: Path, config: dict[str, Any], cache: Path, ok: pd.DataFrame, device, batch_size: int
              ) -> dict[str, np.ndarray]:
    """image_id -> Grad-CAM over the model input, the mean of the fold models' maps (as for the probabilities)."""
    from torch.utils.data import DataLoader

    from mammo_insight.explain.cam import CamExplainer
    from mammo_insight.models.data import CacheBreastDataset, CacheImageDataset
    from mammo_insight.models.run_io import load_fold_model, run_folds

    size = tuple(config["image_size"])
    multi = config.get("view_mode", "single") != "single"
    table = ok.assign(_label=np.nan)
    if multi:
        ds = CacheBreastDataset(cache, table, label_column="_label", max_views=config.get("max_views", 4), size=size)
        keys = [[table.at[r, "image_id"] for r in rows] for rows in ds.breasts["rows"]]
    else:
        ds = CacheImageDataset(cache, table, label_column="_label", size=size)
        keys = [[i] for i in table["image_id"]]
    sums: dict[str, np.ndarray] = {}
    folds = run_folds(run_dir)
    for fold in folds:
        with CamExplainer(load_fold_model(run_dir, fold, device), "gradcam", size) as cam:
            start = 0
            for batch in DataLoader(ds, batch_size):
                maps = cam(batch["image"], batch.get("mask")).maps
                for item, ids in zip(maps, keys[start:start + len(maps)]):
                    for k, image_id in enumerate(ids):
                        sums[image_id] = sums.get(image_id, 0) + (item[k] if multi else item)
                start += len(maps)
    return {k: v / len(folds) for k, v in sums.items()}


def write_prediction_cams(run_dir: Path, config: dict[str, Any], cache: Path, ok: pd.DataFrame,
                          image_rows: pd.DataFrame, breast_rows: pd.DataFrame, out_dir: Path, device,
                          batch_size: int, side: int = 768) -> Path:
    """OUT/<image_id>.png (the CAM on the original mammogram) and OUT/index.html listing them by breast."""
    import cv2

    from mammo_insight.explain import mapping
    from mammo_insight.explain.gallery import compose_panels, gallery_block, png_bytes, safe_name
    from mammo_insight.imaging.cache import load_cache_image
    from mammo_insight.imaging.geometry import CacheGeometry
    from mammo_insight.report import Section, paragraph, render_page, table

    out_dir.mkdir(parents=True, exist_ok=True)
    maps = _cam_maps(run_dir, config, cache, ok, device, batch_size)
    breasts = breast_rows.set_index("breast_id")
    image_prob = image_rows.set_index("image_id")["prob"]
    items = []
    for row in ok.itertuples(index=False):
        geom = CacheGeometry.from_row(row)
        heat = mapping.cam_to_original(maps[row.image_id], geom)
        try:
            gray, factor = mapping.read_original_display(row.image_path, side)
        except Exception as exc:  # noqa: BLE001 - display only: fall back to the cached pixels
            log.debug("original %s unreadable for display: %s", row.image_path, exc)
            factor = mapping.display_scale((geom.orig_height, geom.orig_width), side)
            gray = mapping.downsample(mapping.original_from_cache(load_cache_image(cache, row), geom), factor)
        peak = mapping.peak_location(heat)
        shown = mapping.overlay(gray, mapping.downsample(heat, factor), peak=peak, scale=factor)
        breast = breasts.loc[row.breast_id]
        decision = "positive" if breast["decision"] == 1 else "negative"
        title = (f"{row.image_id}  breast {row.breast_id}: p={breast['prob']:.3f} "
                 f"(threshold {breast['threshold']:.3f}) -> {decision}")
        sheet = compose_panels([[(shown, f"Grad-CAM, image p={image_prob[row.image_id]:.3f}; cross: maximum")]],
                               title, height=min(shown.shape[0], 720))
        name = f"{safe_name(row.image_id)}.png"
        (out_dir / name).write_bytes(png_bytes(sheet))
        thumb = cv2.resize(shown, None, fx=min(1.0, THUMB_SIDE / max(shown.shape[:2])),
                           fy=min(1.0, THUMB_SIDE / max(shown.shape[:2])), interpolation=cv2.INTER_AREA)
        items.append((thumb, f"{row.image_id} ({row.breast_id}, {decision})", name))
    sections = [
        Section("Breasts", [paragraph(
            "Breast probability: mean of the fold models; decision: probability >= the run's breast-level "
            "threshold tuned on its out-of-fold predictions. Research software, not a diagnostic device."),
            table(breast_rows)]),
        Section("Grad-CAM per image", [paragraph(
            "Where the averaged fold models' malignancy logit is most sensitive, laid over the original "
            "mammogram (only the breast crop the model saw can light up). Click a thumbnail's link for the full PNG."),
            gallery_block(items)]),
    ]
    failed = image_rows[image_rows["status"] != "ok"]
    if not failed.empty:
        sections.append(Section("Files not scored", [table(failed[["file", "reason"]])]))
    return render_page(out_dir / "index.html", "Predictions with Grad-CAM", sections,
                       subtitle=f"run {run_dir.name}; mammo-insight predict")
