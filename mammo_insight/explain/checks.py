"""Numbers that say whether a CAM is right: pointing game, energy inside the lesion, randomisation check.

All maps here are in original pixels (after ``mapping.cam_to_original``) and lesions are boolean
masks in original pixels, rasterised from the cache's annotations table (circles, boxes, ROI masks) by
``imaging.annotations.lesion_mask``.

- Pointing game (Zhang et al. 2016): a hit when the CAM maximum lies inside a lesion, optionally
  widened by ``tolerance`` original pixels (default 0: the circle itself). Ties are scored as a
  uniform random pick among the maximal pixels, so a flat (all-zero) map scores exactly the chance
  rate, the lesion's share of the region the model saw (``support``), instead of a hit or a miss
  decided by array order.
  Per image the value is therefore 1 or 0 except for a map with tied maxima, where it is the
  lesion's share of the tied pixels; the summary is the plain mean of these values over the check
  sample, the rows of ``tables/cam_checks.csv`` with ``in_checks`` true.
- Energy inside: the share of the CAM's total mass that falls inside the lesion; its chance
  reference is the same area share.
- Model randomisation (Adebayo et al. 2018): Spearman rank correlation between the CAM of the
  trained model and that of the same architecture freshly initialised. A map that barely changes
  when the learned weights are thrown away shows the input's edges, not what the model learned.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from mammo_insight.metrics.bootstrap import group_codes, percentile_interval, resample_counts

CHECK_SAMPLE = "checked"  # the case category of the seeded random sample of annotated images


def pointing_hit(heatmap: np.ndarray, lesion: np.ndarray, support: np.ndarray | None = None) -> float:
    """1.0 when the map's maximum is inside ``lesion`` (bool mask), 0.0 when not; a tie gives the hit share."""
    region = np.ones(heatmap.shape, dtype=bool) if support is None else support
    values = np.where(region, heatmap, -np.inf)
    top = values.max()
    if not np.isfinite(top):
        return float("nan")
    maxima = values >= top - 1e-6 * max(abs(float(top)), 1e-12)
    return float(np.count_nonzero(maxima & lesion) / np.count_nonzero(maxima))


def energy_inside(heatmap: np.ndarray, lesion: np.ndarray) -> float:
    """Share of the (non-negative) CAM mass inside the lesion; NaN for an all-zero map."""
    h = np.clip(heatmap, 0.0, None)
    total = float(h.sum(dtype=np.float64))
    return float(h[lesion].sum(dtype=np.float64) / total) if total > 0 else float("nan")


def area_fraction(lesion: np.ndarray, support: np.ndarray | None = None) -> float:
    """The lesion's share of the support: the chance level of both the pointing game and the energy."""
    region = np.ones(lesion.shape, dtype=bool) if support is None else support
    n = np.count_nonzero(region)
    return float(np.count_nonzero(lesion & region) / n) if n else float("nan")


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps of the same shape; NaN when either is constant."""
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.shape} vs {b.shape}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def lesion_checks(
    heatmap: np.ndarray, lesion: np.ndarray, support: np.ndarray | None = None
) -> dict[str, float]:
    """The per-image lesion numbers for one map."""
    return {
        "pointing": pointing_hit(heatmap, lesion, support),
        "energy_inside": energy_inside(heatmap, lesion),
        "area_fraction": area_fraction(lesion, support),
    }


def map_checks(
    heatmap: np.ndarray,
    random_map: np.ndarray,
    lesion_at: Callable[[float], np.ndarray],
    support: np.ndarray,
    *,
    tolerance: float,
    cell: float,
) -> dict[str, float]:
    """Every lesion check of one map and its random-weight twin (both in original pixels).

    ``lesion_at(t)`` is the lesion mask widened by t original pixels (``annotations.lesion_masker``);
    ``cell`` half a map cell's diagonal, the finest the map can point (the ``_cell`` columns).
    Grad-CAM and the patch lesion map are scored by this one function.
    """
    hit_mask, inside, cell_mask = lesion_at(tolerance), lesion_at(0.0), lesion_at(cell)
    return {
        "pointing_cell": pointing_hit(heatmap, cell_mask, support),
        "random_pointing_cell": pointing_hit(random_map, cell_mask, support),
        "area_fraction_cell": area_fraction(cell_mask, support),
        "half_cell_px": cell,
        "pointing": pointing_hit(heatmap, hit_mask, support),
        "energy_inside": energy_inside(heatmap, inside),
        "area_fraction": area_fraction(inside, support),
        "random_pointing": pointing_hit(random_map, hit_mask, support),
        "random_energy_inside": energy_inside(random_map, inside),
    }


def mean_with_ci(
    values: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    level: float = 0.95,
) -> dict[str, float | int]:
    """Mean of the finite values with a percentile bootstrap interval that resamples ``groups`` (patients).

    Images of one woman are not independent, so the interval resamples women, not images.
    """
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    n = int(keep.sum())
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    v = values[keep]
    codes, n_groups = group_codes(None if groups is None else np.asarray(groups)[keep], n)
    sums = np.bincount(codes, weights=v, minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    w = resample_counts(n_groups, n_boot, seed).astype(np.float64)
    boot = (w @ sums) / np.maximum(w @ counts, 1e-12)
    low, high = percentile_interval(boot, float(v.mean()), level, min_valid=1)
    return {"mean": float(v.mean()), "ci_low": low, "ci_high": high, "n": n}


def in_check_sample(per_image: pd.DataFrame) -> pd.Series:
    """Rows the summary averages: the random sample of annotated images, each with a lesion.

    Gallery picks (TP/FP/FN/TN) carry lesion checks too but are chosen by confidence, so they are left
    out; a flat map stays in (it scores the chance level), so ``energy_inside`` is no sample marker.
    """
    if "pointing" not in per_image or "categories" not in per_image:
        return pd.Series(False, index=per_image.index)
    sampled = per_image["categories"].astype(str).str.split("+").apply(lambda c: CHECK_SAMPLE in c)
    return sampled & per_image["pointing"].notna()


def summarise_checks(per_image: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Mean and patient-bootstrap interval of every check column present in the per-image table."""
    columns = [
        "pointing",
        "energy_inside",
        "area_fraction",
        "rank_corr",
        "random_pointing",
        "random_energy_inside",
        "pointing_cell",
        "random_pointing_cell",
        "area_fraction_cell",
    ]
    groups = per_image["patient_id"].to_numpy() if "patient_id" in per_image else None
    return {c: mean_with_ci(per_image[c].to_numpy(), groups, n_boot, seed) for c in columns if c in per_image}
