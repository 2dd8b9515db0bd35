"""Grad-CAM of a run's fold models over new images, averaged like their probabilities and laid over the
original mammograms: the overlays `predict --cams` writes (explain's gallery reads a run's own folds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.explain import mapping as cam_mapping
from mammo_insight.explain.cam import CamExplainer
from mammo_insight.explain.gallery import compose_panels, png_bytes, safe_name
from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.imaging.resize import thumbnail
from mammo_insight.runs.base import Run

CAM_SIDE = 768  # longest side of an overlay PNG


@dataclass(frozen=True, eq=False)
class CamOverlay:
    """One scored image's Grad-CAM on the original mammogram: the PNG and its gallery thumbnail."""

    image_id: str
    caption: str
    png: bytes
    thumb: np.ndarray

    @property
    def name(self) -> str:
        return f"{safe_name(self.image_id)}.png"


def fold_cam_maps(
    run: Run, cache: Path, ok: pd.DataFrame, *, device, batch_size: int
) -> dict[str, np.ndarray]:
    """image_id -> Grad-CAM over the model input, the mean of the fold models' maps (as for the probabilities)."""
    from torch.utils.data import DataLoader

    from mammo_insight.runs.data import CacheBreastDataset, CacheImageDataset

    size = run.image_size
    table = ok.assign(_label=np.nan)
    if run.multi_view:
        ds = CacheBreastDataset(cache, table, label_column="_label", max_views=run.max_views, size=size)
        keys = [[table.at[r, "image_id"] for r in rows] for rows in ds.breasts["rows"]]
    else:
        ds = CacheImageDataset(cache, table, label_column="_label", size=size)
        keys = [[i] for i in table["image_id"]]
    sums: dict[str, np.ndarray] = {}
    for _, model in run.models(device):
        with CamExplainer(model, "gradcam", size) as cam:
            start = 0
            for batch in DataLoader(ds, batch_size):
                maps = cam(batch["image"], batch.get("mask")).maps
                for item, ids in zip(maps, keys[start : start + len(maps)], strict=True):
                    for k, image_id in enumerate(ids):
                        sums[image_id] = sums.get(image_id, 0) + (item[k] if run.multi_view else item)
                start += len(maps)
    return {k: v / len(run.folds) for k, v in sums.items()}


def cam_overlays(
    run: Run,
    cache: Path,
    ok: pd.DataFrame,
    *,
    image_rows: pd.DataFrame,
    breast_rows: pd.DataFrame,
    device,
    batch_size: int,
    side: int = CAM_SIDE,
) -> tuple[CamOverlay, ...]:
    """One overlay per scored image: the averaged CAM on the original mammogram, titled with its breast's decision."""

    maps = fold_cam_maps(run, cache, ok, device=device, batch_size=batch_size)
    breasts = breast_rows.set_index("breast_id")
    image_prob = image_rows.set_index("image_id")["prob"]
    items = []
    for row in ok.itertuples(index=False):
        geom = CacheGeometry.from_row(row)
        heat = cam_mapping.cam_to_original(maps[row.image_id], geom)
        gray, factor, _ = cam_mapping.display_image(row._asdict(), load_cache_image(cache, row), geom, side)
        shown = cam_mapping.overlay_original(gray, heat, factor)
        breast = breasts.loc[row.breast_id]
        decision = "positive" if breast["decision"] == 1 else "negative"
        title = (
            f"{row.image_id}  breast {row.breast_id}: p={breast['prob']:.3f} "
            f"(threshold {breast['threshold']:.3f}) -> {decision}"
        )
        sheet = compose_panels(
            [[(shown, f"Grad-CAM, image p={image_prob[row.image_id]:.3f}; cross: maximum")]],
            title,
            height=min(shown.shape[0], 720),
        )
        thumb = thumbnail(shown)
        items.append(
            CamOverlay(
                image_id=str(row.image_id),
                caption=f"{row.image_id} ({row.breast_id}, {decision})",
                png=png_bytes(sheet),
                thumb=thumb,
            )
        )
    return tuple(items)
