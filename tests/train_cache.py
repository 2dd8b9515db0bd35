"""A minimal image cache in the preprocess layout (index.parquet + PNGs) for the training tests.

Positive breasts carry a bright blob in each of their views, so a small CNN can find them in a
few epochs on a CPU. Built directly (no DICOM decoding) to keep the tests fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.cohort.schema import CANONICAL_COLUMNS
from mammo_insight.imaging.cache import INDEX_FILE, relative_image_path, write_png_atomic


def _image(rng: np.random.Generator, size: tuple[int, int], lesion: bool) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    breast = ((xx / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.48 * h)) ** 2) < 1.0
    tissue = 0.35 + 0.1 * rng.standard_normal((h, w)).astype(np.float32)
    pixels = np.where(breast, tissue, 0.0)
    if lesion:
        cy, cx = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.15 * w, 0.55 * w)
        pixels = pixels + 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def write_cache(
    root: Path,
    n_patients: int = 40,
    seed: int = 0,
    size: tuple[int, int] = (64, 48),
    prevalence: float = 0.3,
    drop_views: int = 0,
    extra_rows: pd.DataFrame | None = None,
) -> Path:
    """Write CACHE under root; ``drop_views`` images are removed so some breasts have one view."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        patient = f"P{p:03d}"
        for side in "LR":
            positive = rng.random() < prevalence
            for view in ("CC", "MLO"):
                image_id = f"{patient}{side}{view}"
                rel = relative_image_path(patient, image_id)
                write_png_atomic(root / rel, _image(rng, size, positive))
                rows.append(
                    {
                        "patient_id": patient,
                        "image_id": image_id,
                        "breast_id": f"{patient}_{side}",
                        "laterality": side,
                        "view": view,
                        "age": float(rng.integers(40, 80)),
                        "site_id": str(p % 2 + 1),
                        "machine_id": str(p % 3),
                        "density": "ABCD"[p % 4],
                        "cancer": float(positive),
                        "cache_path": rel,
                        "status": "ok",
                        "out_height": size[0],
                        "out_width": size[1],
                    }
                )
    table = pd.DataFrame(rows)
    if drop_views:
        table = table.drop(index=rng.choice(len(table), drop_views, replace=False))
    if extra_rows is not None:
        table = pd.concat([table, extra_rows], ignore_index=True)
    for column in CANONICAL_COLUMNS:
        if column not in table:
            table[column] = np.nan
    root.mkdir(parents=True, exist_ok=True)
    table.reset_index(drop=True).to_parquet(root / INDEX_FILE)
    return root
