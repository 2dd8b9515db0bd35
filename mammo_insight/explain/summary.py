"""A run's map checks summed up for cam_metrics.json: means with patient-bootstrap intervals of the CAM's
checks and of the --patch-run lesion maps' beside them, and the named headline figures."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mammo_insight.explain import checks
from mammo_insight.explain.cam_run import MAP_PREFIX
from mammo_insight.explain.lesion_map import PatchRunMaps

SUMMARY_KEYS = {
    "pointing_game": "pointing",
    "energy_inside": "energy_inside",
    "lesion_area_fraction": "area_fraction",
    "randomisation_rank_corr": "rank_corr",
    "randomised_pointing_game": "random_pointing",
    "randomised_energy_inside": "random_energy_inside",
    "pointing_game_cell": "pointing_cell",
    "randomised_pointing_game_cell": "random_pointing_cell",
    "lesion_area_fraction_cell": "area_fraction_cell",
}


def lesion_map_metrics(per_image: pd.DataFrame, lesion_maps: PatchRunMaps, *, seed: int) -> dict[str, Any]:
    """cam_metrics.json's ``lesion_map`` entry: the --patch-run maps' checks beside the CAMs'."""
    summary = map_summary(per_image, seed=seed, prefix=MAP_PREFIX)
    return {
        "patch_run": str(lesion_maps.root),
        "model": lesion_maps.config.model,
        "patch_size": lesion_maps.config.patch_size,
        "stride": lesion_maps.config.stride,
        "n_cases": int(summary.get("pointing", {}).get("n", 0)),
        **headline_checks(summary),
        "n_flat_maps": int((per_image[f"{MAP_PREFIX}max"] <= 0).sum()),
        "summary": summary,
    }


def map_summary(per_image: pd.DataFrame, *, seed: int, prefix: str = "") -> dict[str, dict]:
    """Means and patient-bootstrap intervals of one map's check columns (the CAM's, or ``prefix``ed ones).

    Lesion checks average the check sample (``in_checks``); the rank correlation every explained image.
    """
    columns = {c: c.removeprefix(prefix) for c in per_image if c.startswith(prefix)}
    frame = per_image[list(columns)].rename(columns=columns)
    frame = frame.assign(patient_id=per_image["patient_id"], categories=per_image["categories"])
    summary = checks.summarise_checks(frame[per_image["in_checks"]], seed=seed)
    summary["rank_corr"] = checks.mean_with_ci(
        frame["rank_corr"].to_numpy(), frame["patient_id"].to_numpy(), seed=seed
    )
    return summary


def headline_checks(summary: dict[str, dict]) -> dict[str, Any]:
    """cam_metrics.json's named figures (pointing_game, its _ci, ...) from a summary."""
    out: dict[str, Any] = {}
    for key, column in SUMMARY_KEYS.items():
        entry = summary.get(column) or {}
        out[key] = entry.get("mean")
        out[f"{key}_ci"] = [entry.get("ci_low"), entry.get("ci_high")]
    return out
