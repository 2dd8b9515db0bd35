"""`predict`: breast-level probabilities and the run's tuned decision for new DICOM studies.

The images go through exactly the preprocessing the run was trained on (size, bit depth, flip,
crop margin, masking, decoder: the run's config.json ``preprocess``, else its training cache's
config.json) into a cache (temporary unless ``cache`` is given), every fold model scores it and
the fold probabilities are averaged (no fold model saw these images, so none is preferred). Breast
probabilities are formed as the run's metrics formed them: the mean over a breast's images for a
single-view model, the model's own breast output for a multi-view one; the decision is
prob >= the breast-level threshold the run tuned on its out-of-fold predictions.

Without ``dataset`` the folder needs no CSV: it is read by the dicom adapter's header scan
(cohort.adapters.dicom.folder_cohort): patient_id is the first sub-folder under DIR (RSNA layout
``<patient_id>/<image_id>.dcm``), or for files directly in DIR a keyed hash (HMAC-SHA256) of the DICOM
PatientID under a random key drawn for each run and kept in memory only, so images of one woman share an
id within a run and no id can be traced back to a PatientID by hashing guesses; laterality and view come
from the header. What could not be determined is written in the ``notes`` column. No identifying DICOM tag
(PatientName, BirthDate, ...) is ever copied to an output; PatientID only as that keyed hash.

OUT.csv (breasts), OUT_images.csv (files), OUT.csv.manifest.json beside them; with ``cams`` one Grad-CAM
overlay PNG per scored image and index.html in that folder. With ``output_format="rsna"`` OUT.csv is the
RSNA competition's submission instead (`cohort.adapters.rsna.submission`: prediction_id, cancer).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.cohort.adapters.dicom import folder_cohort
from mammo_insight.cohort.adapters.rsna import submission as rsna_submission
from mammo_insight.cohort.schema import Cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.explain.gallery import gallery_block
from mammo_insight.explain.overlays import CamOverlay, cam_overlays
from mammo_insight.files import atomic_write, write_csv_atomic
from mammo_insight.imaging.cache import read_cache_index
from mammo_insight.nets.device import resolve_device
from mammo_insight.runs.open import open_run
from mammo_insight.stages.base import StageResult, finish_stage

log = logging.getLogger(__name__)
BREAST_COLUMNS = [
    "breast_id",
    "patient_id",
    "laterality",
    "n_images",
    "prob",
    "threshold",
    "decision",
    "notes",
]
IMAGE_COLUMNS = [
    "image_id",
    "breast_id",
    "patient_id",
    "laterality",
    "view",
    "file",
    "prob",
    "status",
    "reason",
    "notes",
]
OUTPUT_FORMATS = ("breasts", "rsna")


@dataclass(frozen=True)
class PredictConfig:
    """What a prediction depends on.

    cache: keep the preprocessed images there (default: a temporary folder, deleted afterwards).
    cams: write one Grad-CAM overlay PNG per scored image (on the original mammogram) and index.html there.
    output_format: "breasts" (OUT.csv is the breast table) or "rsna" (the competition's prediction_id,cancer).
    """

    run: Path
    images: Path
    cams: Path | None = None
    dataset: str | None = None
    mapping: Path | None = None
    cache: Path | None = None
    device: str = "auto"
    batch_size: int = 32
    workers: int = 1
    output_format: str = "breasts"


@dataclass(frozen=True, eq=False)
class PredictResult(StageResult):
    """The breast and image tables (and the Grad-CAM overlays when asked for)."""

    config: PredictConfig
    breasts: pd.DataFrame  # one row per breast: prob (mean of fold models), threshold, decision
    images: pd.DataFrame  # one row per input file: prob, or status failed and the reason
    threshold: float
    preprocess: dict[str, Any]  # the run's preprocessing the images went through
    device: str
    seed: int | None = None
    overlays: tuple[CamOverlay, ...] | None = None

    stage = "predict"
    title = "Predictions on new studies"

    def headline(self) -> dict[str, str]:
        scored = self.breasts["prob"].notna()
        return {
            "breasts scored": str(int(scored.sum())),
            "flagged positive": str(int(self.breasts.loc[scored, "decision"].sum())),
        }

    def lines(self) -> list[str]:
        breasts, files = self.breasts, self.images
        scored = breasts["prob"].notna()
        failed = files[files["status"] != "ok"]
        positive = int(breasts.loc[scored, "decision"].sum())
        lines = [
            f"breasts: {int(scored.sum())} scored, {positive} positive at threshold {self.threshold:.3f}",
            f"images: {int((files['status'] == 'ok').sum())} scored, {len(failed)} failed",
            *(f"  failed: {row.file}: {row.reason}" for row in failed.head(10).itertuples(index=False)),
        ]
        if self.config.cams is not None:
            lines.append(f"Grad-CAM overlays: {self.config.cams / 'index.html'}")
        return lines


def image_csv_path(out_csv: str | Path) -> Path:
    """OUT_images.csv beside the breast-level OUT.csv."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}_images.csv")


def dataset_cohort(dataset: str, images_dir: Path, mapping: Path | None) -> Cohort:
    """A cohort through the dataset's adapter; image_path kept relative to the root for the outputs."""
    from mammo_insight.cohort.adapters import load_cohort

    cohort = load_cohort(dataset, images_dir, mapping)
    table = cohort.table.copy()
    table["file"] = [
        str(Path(p).relative_to(images_dir))
        if isinstance(p, str) and Path(p).is_relative_to(images_dir)
        else (Path(p).name if isinstance(p, str) else "")
        for p in table["image_path"]
    ]
    table["notes"] = ""
    cohort.table = table
    return cohort


def _breast_table(image_rows: pd.DataFrame, breasts: pd.DataFrame | None, threshold: float) -> pd.DataFrame:
    """One row per breast of the input, also those none of whose images could be scored (prob empty)."""
    rows = image_rows[image_rows["breast_id"].notna()]
    ok = rows[rows["status"] == "ok"]
    prob = (
        breasts.set_index("breast_id")["prob"]
        if breasts is not None
        else ok.groupby("breast_id", sort=False)["prob"].mean()
    )
    out = (
        rows.groupby("breast_id", sort=False)
        .agg(
            patient_id=("patient_id", "first"),
            laterality=("laterality", "first"),
            notes=(
                "notes",
                lambda s: "; ".join(dict.fromkeys(n for v in s.dropna() for n in str(v).split("; ") if n)),
            ),
        )
        .reset_index()
    )
    out["n_images"] = out["breast_id"].map(ok["breast_id"].value_counts()).fillna(0).astype(int)
    n_failed = out["breast_id"].map(rows.loc[rows["status"] != "ok", "breast_id"].value_counts()).fillna(0)
    out["notes"] = [
        ("; ".join(filter(None, [n, f"{int(f)} image(s) failed"])) if f else n)
        for n, f in zip(out["notes"], n_failed, strict=True)
    ]
    out["prob"] = out["breast_id"].map(prob)
    out["threshold"] = threshold
    out["decision"] = pd.array(
        [pd.NA if pd.isna(p) else int(p >= threshold) for p in out["prob"]], dtype="Int64"
    )
    return out[BREAST_COLUMNS]


def run_predict(config: PredictConfig) -> PredictResult:
    """Preprocess the images as the run was trained, score them with every fold model (mean), decide."""
    if config.output_format not in OUTPUT_FORMATS:
        raise MammoInsightError(
            f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {config.output_format!r}"
        )
    device = resolve_device(config.device)  # a device that is absent fails before any work
    run = open_run(config.run)
    if config.cams is not None:
        run.refuse_ensemble("predict --cams (Grad-CAM)")
        if run.spec.kind == "patch":
            raise MammoInsightError(
                f"{config.run} is a patch run: --cams draws a whole-image model's Grad-CAM; its lesion maps "
                "are drawn by `explain --run`"
            )
    images_dir = Path(config.images)
    threshold = run.threshold("breast")
    preprocess = run.preprocess_config()
    if not images_dir.is_dir():
        raise MammoInsightError(f"--images {images_dir} is not a folder")
    if config.dataset:
        mapping_file = Path(config.mapping) if config.mapping else None
        cohort, unreadable = dataset_cohort(config.dataset, images_dir, mapping_file), pd.DataFrame()
    else:
        cohort, unreadable = folder_cohort(images_dir, workers=config.workers)
    from mammo_insight.imaging.build import Engine, build_cache

    with tempfile.TemporaryDirectory(prefix="mammo-predict-") as tmp:
        cache = Path(config.cache) if config.cache else Path(tmp) / "cache"
        if cohort.table.empty:
            index = pd.DataFrame(columns=["image_id", "status"])
        else:
            build_cache(cohort, cache, preprocess, Engine(config.workers), sheet_size=0, show_progress=False)
            index = read_cache_index(cache, include_failed=True)
        ok = index[index["status"] == "ok"].reset_index(drop=True)
        if ok.empty:
            reasons = list(unreadable.get("reason", [])) + list(_cache_reasons_by_id(cache).values())
            raise MammoInsightError(
                f"no image under {images_dir} could be read ({len(reasons)} file(s) failed"
                + (f"; first: {reasons[0]}" if reasons else "")
                + ")"
            )
        images, breasts = run.ensemble_predict(cache, ok, device, config.batch_size)
        image_rows = _image_table(
            cohort.table, unreadable, index, images, reasons=_cache_reasons_by_id(cache)
        )
        breast_rows = _breast_table(image_rows, breasts, threshold)
        overlays = None
        if config.cams is not None:
            overlays = cam_overlays(
                run,
                cache,
                ok,
                image_rows=image_rows,
                breast_rows=breast_rows,
                device=device,
                batch_size=config.batch_size,
            )
    n_failed = int((image_rows["status"] != "ok").sum())
    log.info(
        "%d breast(s) scored from %d image(s); %d file(s) failed",
        breast_rows["prob"].notna().sum(),
        len(images),
        n_failed,
    )
    return PredictResult(
        config=config,
        breasts=breast_rows,
        images=image_rows,
        threshold=threshold,
        preprocess=preprocess.to_dict(),
        device=str(device),
        seed=run.seed,
        overlays=overlays,
    )


def write_predict(result: PredictResult, out: str | Path) -> Path:
    """OUT.csv (one row per breast; ``output_format="rsna"``: the competition's prediction_id,cancer),
    OUT_images.csv (one row per file), the overlays, then OUT.csv.manifest.json, then the overlays'
    index.html; returns OUT.csv."""
    out_csv = Path(out)
    config = result.config
    rsna = config.output_format == "rsna"
    write_csv_atomic(out_csv, rsna_submission(result.breasts) if rsna else result.breasts)
    write_csv_atomic(image_csv_path(out_csv), result.images)
    render, report = None, None
    if config.cams is not None and result.overlays is not None:
        cams = Path(config.cams)
        cams.mkdir(parents=True, exist_ok=True)
        for item in result.overlays:
            atomic_write(cams / item.name, lambda tmp, png=item.png: tmp.write_bytes(png))
        report = os.path.relpath(cams / "index.html", out_csv.parent)

        def render() -> Path:
            return _render_cams(result, cams / "index.html")

    run_dir = Path(config.run)
    finish_stage(
        out_csv,
        result,
        {
            "run": str(run_dir),
            "images": str(config.images),
            "out": out_csv.name,
            "format": config.output_format,
            "dataset": config.dataset,
            "threshold": result.threshold,
            "preprocess": result.preprocess,
            "device": result.device,
            "cams": str(config.cams) if config.cams else None,
        },
        seed=result.seed,
        inputs={"run_config": run_dir / "config.json"},
        report=report,
        render=render,
    )
    return out_csv


def _cache_reasons_by_id(cache: Path) -> dict[str, str]:
    path = cache / "failures.csv"
    if not path.is_file():
        return {}
    failures = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(failures["image_id"], failures["reason"], strict=True))


def _image_table(
    cohort_table: pd.DataFrame,
    unreadable: pd.DataFrame,
    index: pd.DataFrame,
    images: pd.DataFrame,
    *,
    reasons: dict[str, str],
) -> pd.DataFrame:
    """One row per input file: its probability, or status failed and the reason."""
    rows = (
        pd.concat([cohort_table, unreadable], ignore_index=True)
        if not unreadable.empty
        else cohort_table.copy()
    )
    prob = images.set_index("image_id")["prob"]
    rows["prob"] = rows["image_id"].map(prob)
    status = (
        rows["image_id"].map(index.set_index("image_id")["status"])
        if not index.empty
        else pd.Series(np.nan, index=rows.index)
    )
    rows["status"] = status.fillna("failed").astype(str)
    if "reason" not in rows:
        rows["reason"] = None
    rows["reason"] = rows["reason"].where(rows["reason"].notna(), rows["image_id"].map(reasons))
    return rows[IMAGE_COLUMNS]


def _render_cams(result: PredictResult, page: Path) -> Path:
    """CAMS/index.html: the breast table and the overlays' thumbnails, linking each PNG."""
    from mammo_insight.report import Section, paragraph, render_page, table

    sections = [
        Section(
            "Breasts",
            [
                paragraph(
                    "Breast probability: mean of the fold models; decision: probability >= the run's breast-level "
                    "threshold tuned on its out-of-fold predictions. Research software, not a diagnostic device."
                ),
                table(result.breasts),
            ],
        ),
        Section(
            "Grad-CAM per image",
            [
                paragraph(
                    "Where the averaged fold models' malignancy logit is most sensitive, laid over the original "
                    "mammogram (only the breast crop the model saw can light up). Click a thumbnail's link for the full PNG."
                ),
                gallery_block([(item.thumb, item.caption, item.name) for item in result.overlays or ()]),
            ],
        ),
    ]
    failed = result.images[result.images["status"] != "ok"]
    if not failed.empty:
        sections.append(Section("Files not scored", [table(failed[["file", "reason"]])]))
    return render_page(
        page,
        "Predictions with Grad-CAM",
        sections,
        subtitle=f"run {Path(result.config.run).name}; mammo-insight predict",
    )
