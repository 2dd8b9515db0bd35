"""A synthetic RSNA-like cohort on disk: the embedded default for the demo and the tests.

Writes, under ``out``: train.csv (RSNA's exact columns), train_images/<patient_id>/<image_id>.dcm,
planted_risk.csv (breast_id, the generator's cancer probability of the breast), annotations.csv (image_id, x, y, radius of each planted lesion, original pixels, x right, y down) and
breast_boxes.csv (image_id, x0, y0, x1, y1: the true breast bounding box, x1/y1 exclusive).
The planted effects are documented in :mod:`mammo_insight.synth.table` (``TRUE_EFFECTS``);
the DICOM variety in :mod:`mammo_insight.synth.dicom`. Same seed, same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.files import write_csv_atomic
from mammo_insight.progress import track
from mammo_insight.synth.dicom import PROFILES, DicomProfile, ImageMeta, study_uid, to_stored, write_dicom
from mammo_insight.synth.headers import PROCESSING_MACHINE, workup_views
from mammo_insight.synth.images import LesionSpec, draw_lesion_spec, render_image, scanner_curve
from mammo_insight.synth.table import (
    RSNA_COLUMNS,
    TRUE_EFFECTS,
    TrueEffects,
    breast_level,
    effects_for,
    make_synthetic_table,
)

__all__ = ["TRUE_EFFECTS", "TrueEffects", "breast_level", "make_synthetic_cohort", "make_synthetic_table"]

log = logging.getLogger(__name__)

SIZE_FACTORS = (1.0, 1.25, 1.5)
SIZE_SHARES = (0.6, 0.25, 0.15)
PAD_EVERY = 8  # one image in 8 (seeded phase) gets a padding strip, so even tiny cohorts have one
PROGRESS_MIN_IMAGES = 400
PLANTED_RISK_FILE = "planted_risk.csv"  # breast_id, planted_risk
OUTCOMES_FILE = "outcomes.csv"  # StudyInstanceUID, laterality, cancer, density
UNLISTED = "unlisted_images"  # work-up views and FOR PROCESSING copies: in the tree, not in train.csv


def _even(v: float) -> int:
    return max(16, round(v / 2) * 2)


def _rsna_csv(table: pd.DataFrame) -> pd.DataFrame:
    """RSNA's value formats: integer ages (empty when unknown), integer BIRADS or empty, True/False."""
    out = table[RSNA_COLUMNS].copy()
    out["age"] = out["age"].astype("Int64")
    out["difficult_negative_case"] = out["difficult_negative_case"].map({True: "True", False: "False"})
    return out


def extra_images(
    out: Path,
    stored: np.ndarray,
    pad: int | None,
    profile: DicomProfile,
    meta: ImageMeta,
    *,
    lesion: LesionSpec | None,
) -> None:
    """The files a hospital tree holds beside the screening images, under unlisted_images/ (not in
    train.csv): a FOR PROCESSING copy of every image of PROCESSING_MACHINE, and the work-up views of a
    share of positive breasts (one per breast, beside its CC image). Drawn from their own generators."""
    folder = out / UNLISTED / meta.patient_id
    if meta.machine_id == PROCESSING_MACHINE:
        copy = replace(meta, instance="processing")
        write_dicom(folder / f"{meta.image_id}_processing.dcm", stored, pad, profile, meta=copy)
    if lesion is None:
        return
    for code, meaning in workup_views(meta.seed, int(meta.patient_id), meta.laterality):
        tag = meaning.split()[0].lower()
        rng = np.random.default_rng([meta.seed, 9, int(meta.image_id), ord(tag[0])])
        img = render_image(
            rng,
            *stored.shape,
            meta.laterality,
            view="CC",
            density=meta.density,
            lesion=lesion,
            pad_far_side=False,
        )
        work, _ = to_stored(img.pixels, img.padding, profile)
        workup = replace(meta, modifiers=((code, meaning),), instance=tag)
        write_dicom(folder / f"{meta.image_id}_{tag}.dcm", work, None, profile, meta=workup)


def write_outcomes(out: Path, table: pd.DataFrame, seed: int) -> Path:
    """OUTCOMES_FILE: one row per breast of each study (StudyInstanceUID as the DICOMs carry it,
    laterality, cancer, and density as a report records it: site 1 only), so the tree alone is a
    hospital-style export: ``--dataset dicom --root OUT --outcomes OUT/outcomes.csv --on study``."""
    breasts = table.groupby(["patient_id", "laterality"], sort=False).agg(
        site_id=("site_id", "first"), cancer=("cancer", "max"), density=("density", "first")
    )
    rows = []
    for (pid, lat), b in breasts.iterrows():
        meta = ImageMeta(str(pid), "0", lat, "CC", float("nan"), str(b["site_id"]), seed)
        rows.append((study_uid(meta), lat, int(b["cancer"]), b["density"] or ""))
    frame = pd.DataFrame(rows, columns=["StudyInstanceUID", "laterality", "cancer", "density"])
    return write_csv_atomic(out / OUTCOMES_FILE, frame, index=False)


@dataclass(frozen=True)
class _Layout:
    """What every image of the cohort is drawn with beside its own seed: each woman's size factor, the
    storage profiles' order, which images get padding, the base size and the scanner signature."""

    seed: int
    size: tuple[int, int]
    factor: dict
    order: np.ndarray
    pad_phase: int
    scanner_signature: bool


def _write_tables(out: Path, table: pd.DataFrame, seed: int) -> None:
    """train.csv, planted_risk.csv (each breast's true cancer probability) and outcomes.csv."""
    write_csv_atomic(out / "train.csv", _rsna_csv(table), index=False)
    planted = breast_level(table)
    risk = pd.DataFrame(
        {
            "breast_id": planted["patient_id"].astype(str) + "_" + planted["laterality"],
            "planted_risk": planted["p_cancer"],
        }
    )
    write_csv_atomic(out / PLANTED_RISK_FILE, risk, index=False)
    write_outcomes(out, table, seed)


def _write_image(out: Path, i: int, row: dict, layout: _Layout, lesion: LesionSpec | None) -> tuple:
    """Render, store and write one image (and its work-up copies); returns (breast box row, lesion row)."""
    rng = np.random.default_rng([layout.seed, 4, int(row["image_id"])])
    f = layout.factor[row["patient_id"]]
    img = render_image(
        rng,
        _even(layout.size[0] * f),
        _even(layout.size[1] * f),
        row["laterality"],
        view=row["view"],
        density=row["density_true"],
        lesion=lesion,
        pad_far_side=i % PAD_EVERY == layout.pad_phase,
    )
    if layout.scanner_signature:
        img = scanner_curve(img, row["machine_id"])
    profile = PROFILES[layout.order[i % len(PROFILES)]]
    stored, pad_value = to_stored(img.pixels, img.padding, profile)
    pid = int(row["patient_id"])
    meta = ImageMeta(
        patient_id=str(pid),
        image_id=str(row["image_id"]),
        laterality=row["laterality"],
        view=row["view"],
        age=float(row["age_true"]),
        site_id=str(row["site_id"]),
        seed=layout.seed,
        machine_id=str(row["machine_id"]),
        size_factor=float(f),
        density=str(row["density_true"]),
    )
    pad = pad_value if img.padding.any() else None
    write_dicom(out / "train_images" / str(pid) / f"{row['image_id']}.dcm", stored, pad, profile, meta=meta)
    extra_images(out, stored, pad, profile, meta, lesion=lesion if row["view"] == "CC" else None)
    lesion_row = None if img.lesion is None else (row["image_id"], *(round(v, 2) for v in img.lesion))
    return (row["image_id"], *img.breast_box), lesion_row


def make_synthetic_cohort(
    out: Path,
    n_patients: int,
    seed: int,
    size: tuple[int, int] = (256, 192),
    *,
    prevalence: float = 0.2,
    scanner_signature: bool = False,
    strong_effects: bool = False,
) -> dict:
    """Write the cohort (see module docstring) and return summary counts.

    size is the base (height, width); each woman's images use one of a few sizes around it
    (x1, x1.25, x1.5). prevalence is the fraction of positive breasts. scanner_signature: machine-specific
    cancer rates and each machine's intensity curve burnt into its images. strong_effects: metadata effects
    a cohort of a hundred women can detect (``effects_for``). Also writes planted_risk.csv: each breast's
    cancer probability under the generator's own risk model (the oracle a metadata model can at best reach).
    """
    out = Path(out)
    effects = effects_for(strong=strong_effects, scanner_signature=scanner_signature)
    table = make_synthetic_table(n_patients, seed, prevalence, effects=effects)
    out.mkdir(parents=True, exist_ok=True)
    _write_tables(out, table, seed)

    women = table["patient_id"].unique()
    woman_rng = np.random.default_rng([seed, 1])
    layout = _Layout(
        seed=seed,
        size=size,
        factor=dict(zip(women, woman_rng.choice(SIZE_FACTORS, size=len(women), p=SIZE_SHARES), strict=True)),
        order=np.random.default_rng([seed, 2]).permutation(len(PROFILES)),
        pad_phase=int(np.random.default_rng([seed, 5]).integers(PAD_EVERY)),
        scanner_signature=scanner_signature,
    )
    lesions: dict[tuple[int, str], LesionSpec] = {}
    ann_rows, box_rows = [], []
    rows = table.to_dict("records")
    items = (
        track(enumerate(rows), "synthetic DICOMs", total=len(rows))
        if len(rows) >= PROGRESS_MIN_IMAGES
        else enumerate(rows)
    )
    for i, row in items:
        key = (int(row["patient_id"]), row["laterality"])
        if row["cancer"] == 1 and key not in lesions:
            lesions[key] = draw_lesion_spec(np.random.default_rng([seed, 3, key[0], ord(key[1])]))
        box_row, lesion_row = _write_image(out, i, row, layout, lesions.get(key))
        box_rows.append(box_row)
        if lesion_row is not None:
            ann_rows.append(lesion_row)
    annotations = pd.DataFrame(ann_rows, columns=["image_id", "x", "y", "radius"])
    write_csv_atomic(out / "annotations.csv", annotations, index=False)
    boxes = pd.DataFrame(box_rows, columns=["image_id", "x0", "y0", "x1", "y1"])
    write_csv_atomic(out / "breast_boxes.csv", boxes, index=False)
    breasts = breast_level(table)
    summary = {
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
        "n_breasts": len(breasts),
        "n_positive_images": int(table["cancer"].sum()),
        "n_positive_breasts": int(breasts["cancer"].sum()),
        "n_lesions": len(ann_rows),
        "out": str(out),
    }
    log.info("synthetic cohort: %s", summary)
    return summary
