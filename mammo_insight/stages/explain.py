"""`explain`: maps of a run's fold models on held-out cases, checked against lesions, as a gallery.

A cnn run's maps are CAMs (``--method``); a patch run's are its lesion maps (its fold model slid over the
film, ``runs.patch_run``), checked and drawn the same way with a random-weight twin of the patch model.

Every case is explained by the fold model that never saw its woman (the ``fold`` column of the OOF
predictions). Cases are the gallery (per fold: most confident TP, FP, FN, TN) plus the annotated images
used by the checks (up to ``max_checked``, a seeded random sample when there are more). The per-case
mechanics (inputs, CAMs mapped to the original pixels, checks, figures) are in
:mod:`mammo_insight.explain.cam_run`.

With ``patch_run`` (a `patch-train` folder on the same folds) each explained image also gets that run's
lesion map from the same fold, checked like the CAM (``map_`` columns of cam_checks.csv, the
``lesion_map`` entry of cam_metrics.json) and drawn beside it.

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

import pandas as pd

from mammo_insight.errors import MammoInsightError
from mammo_insight.explain import checks
from mammo_insight.explain.cam import METHODS, CamExplainer
from mammo_insight.explain.cam_run import CaseContext, ExplainedCase, explain_batch, random_twin
from mammo_insight.explain.gallery import CATEGORIES, render_case_page, render_index, select_gallery
from mammo_insight.explain.lesion_map import LesionMapExplainer, PatchRunMaps
from mammo_insight.explain.summary import headline_checks, lesion_map_metrics, map_summary
from mammo_insight.files import atomic_write, write_csv_atomic, write_text_atomic
from mammo_insight.imaging import annotations as lesion_table
from mammo_insight.imaging.cache import INDEX_FILE, read_cache_index
from mammo_insight.nets.device import resolve_device
from mammo_insight.progress import progress_bar
from mammo_insight.runs.base import Run
from mammo_insight.runs.open import open_run
from mammo_insight.runs.patch import patch_scale_mismatch
from mammo_insight.stages.base import StageResult, finish_stage

log = logging.getLogger(__name__)
GALLERY_CATEGORIES = tuple(CATEGORIES)  # TP, FP, FN, TN

EXPLAIN_PRINTED = (
    "method",
    "n_cases",
    "pointing_game",
    "energy_inside",
    "lesion_area_fraction",
    "randomisation_rank_corr",
    "randomised_pointing_game",
)
LESION_MAP_PRINTED = ("pointing_game", "energy_inside", "lesion_area_fraction", "randomised_pointing_game")


@dataclass(frozen=True)
class ExplainConfig:
    """What an explain run depends on (written to the manifest)."""

    run: Path
    cache: Path
    method: str = "gradcam"
    n: int = 3  # gallery cases per fold and category
    fold: int | None = None  # only this fold
    max_checked: int = 100  # annotated images used by the checks
    tolerance: float = 0.0  # pointing-game tolerance, original pixels
    layer: str | None = None  # CAM layer by name; None: found automatically
    batch_size: int = 8
    seed: int = 0  # random-model weights and the check sample
    display_side: int = 640  # longest side of displayed originals
    device: str = "auto"
    patch_run: Path | None = None  # a `patch-train` run on the same folds: its lesion maps beside the CAMs


@dataclass(frozen=True, eq=False)
class ExplainResult(StageResult):
    """The explained cases, the per-image checks table and the cam_metrics summary."""

    config: ExplainConfig
    cases: tuple[ExplainedCase, ...]
    checks: pd.DataFrame  # one row per explained image (tables/cam_checks.csv)
    metrics: dict[str, Any]  # cam_metrics.json
    failures: tuple[str, ...]

    stage = "explain"
    title = "Grad-CAM explanations"

    def headline(self) -> dict[str, str]:
        m = self.metrics
        shown = {
            k.replace("_", " "): f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, ""))
            for k in ("method", "n_cases", "pointing_game", "energy_inside", "randomisation_rank_corr")
            if k in m
        }
        if isinstance((m.get("lesion_map") or {}).get("pointing_game"), float):
            shown["lesion map pointing game"] = f"{m['lesion_map']['pointing_game']:.3f}"
        return shown

    def lines(self) -> list[str]:
        lines = []
        for key in EXPLAIN_PRINTED:
            value = self.metrics.get(key)
            lines.append(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
        lesion_map = self.metrics.get("lesion_map") or {}
        for key in LESION_MAP_PRINTED:
            if key in lesion_map:
                value = lesion_map[key]
                lines.append(
                    f"lesion map {key}: {value:.3f}"
                    if isinstance(value, float)
                    else f"lesion map {key}: {value}"
                )
        return lines

    def problems(self) -> list[str]:
        return [f"problem: {problem}" for problem in self.failures]

    def gallery(self) -> dict[tuple[int, str], list]:
        """(fold, TP/FP/FN/TN) -> [(thumbnail, caption, case page)] for every fold with a case."""
        items: dict[tuple[int, str], list] = {}
        for case in self.cases:
            for category in case.categories:
                if category in GALLERY_CATEGORIES:
                    items.setdefault((case.fold, category), []).append(
                        (case.thumb, f"{case.case_id} p={case.prob:.3f}", f"cases/{case.name}.html")
                    )
        for fold in sorted({c.fold for c in self.cases} | set(self.metrics.get("folds", []))):
            for category in GALLERY_CATEGORIES:
                items.setdefault((int(fold), category), [])
        return items


def _cases(
    oof: pd.DataFrame,
    index: pd.DataFrame,
    annotations: pd.DataFrame,
    *,
    threshold: float,
    cfg: ExplainConfig,
    unit: str,
    label: str,
) -> pd.DataFrame:
    """One row per case to explain: case_id, fold, categories (list), prob, label."""
    usable = oof[oof["image_id"].isin(index["image_id"])]
    if cfg.fold is not None:
        usable = usable[usable["fold"] == cfg.fold]
    gallery = select_gallery(usable, threshold, cfg.n, unit, label=label)
    annotated = usable[usable["image_id"].isin(annotations["image_id"].astype(str))].drop_duplicates(unit)
    if len(annotated) > cfg.max_checked:
        annotated = annotated.sample(cfg.max_checked, random_state=cfg.seed)
    checked = pd.DataFrame(
        {
            "case_id": annotated[unit].astype(str),
            "fold": annotated["fold"].astype(int),
            "category": checks.CHECK_SAMPLE,
            "prob": annotated["prob"],
            "label": annotated[label],
        }
    )
    both = pd.concat([gallery, checked], ignore_index=True)
    return (
        both.groupby(["case_id", "fold"], sort=False)
        .agg(categories=("category", list), prob=("prob", "first"), label=("label", "first"))
        .reset_index()
    )


class _Explainers:
    """Trained-model and random-model explainers for the fold being processed: Grad-CAM-style maps of a cnn
    run's models, lesion maps of a patch run's."""

    def __init__(self, run: Run, cfg: ExplainConfig, device, stack: ExitStack):
        self.run, self.cfg, self.device, self.stack = run, cfg, device, stack
        twin = random_twin(run.spec, cfg.seed).to(device)
        self.random = stack.enter_context(self._explainer(twin))
        self.trained: CamExplainer | LesionMapExplainer | None = None
        self.fold: int | None = None

    def _explainer(self, model) -> CamExplainer | LesionMapExplainer:
        if self.run.spec.kind == "patch":
            return LesionMapExplainer(self.run, model, self.device)
        return CamExplainer(model, self.cfg.method, self.run.image_size, self.cfg.layer)

    def for_fold(self, fold: int) -> CamExplainer | LesionMapExplainer:
        if fold != self.fold:
            if self.trained is not None:
                self.trained.close()
            self.trained = self.stack.enter_context(self._explainer(self.run.model(fold, self.device)))
            self.fold = fold
        return self.trained


def run_explain(cfg: ExplainConfig) -> ExplainResult:
    """Explain the chosen cases with their fold's model and a random twin; summarise the checks."""
    if cfg.method not in METHODS:
        raise MammoInsightError(f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    device = resolve_device(cfg.device)  # a device that is absent fails before any work
    run_dir, cache_dir = Path(cfg.run), Path(cfg.cache)
    run = open_run(run_dir)
    run.refuse_ensemble("explain")
    label = run.label_column
    unit = "breast_id" if run.multi_view else "image_id"
    if run.image_size is None:
        raise MammoInsightError(f"{run_dir / 'config.json'} records no image_size")
    threshold, oof = _threshold_and_oof(run, cfg.fold)
    index = read_cache_index(cache_dir)
    index = index.assign(image_id=index["image_id"].astype(str), breast_id=index["breast_id"].astype(str))
    annotations = lesion_table.read(cache_dir)
    lesion_maps = None if cfg.patch_run is None else _beside_maps(cfg, oof, device)
    failures = [
        f"image {i}: in the OOF predictions but not an ok image of the cache"
        for i in sorted(set(oof["image_id"]) - set(index["image_id"]))[:20]
    ]
    cases = _cases(oof, index, annotations, threshold=float(threshold), cfg=cfg, unit=unit, label=label)
    if cases.empty:
        raise MammoInsightError(
            f"no case to explain: the OOF predictions of {run_dir} share no image with "
            f"{cache_dir} (or the chosen fold is empty)"
        )
    context = CaseContext(
        cache_dir=cache_dir,
        index=index,
        unit=unit,
        size=run.image_size,
        max_views=run.max_views,
        label=label,
        tolerance=cfg.tolerance,
        display_side=cfg.display_side,
        lesions_by_image=lesion_table.by_image(annotations),
        lesion_maps=lesion_maps,
    )
    explained: list[ExplainedCase] = []
    with ExitStack() as stack, progress_bar() as bar:
        explainers = _Explainers(run, cfg, device, stack)
        task = bar.add_task(f"{explainers.random.target.name} maps", total=len(cases))
        for fold, fold_cases in cases.groupby("fold", sort=True):
            trained = explainers.for_fold(int(fold))
            for start in range(0, len(fold_cases), cfg.batch_size):
                batch = fold_cases.iloc[start : start + cfg.batch_size]
                try:
                    explained.extend(explain_batch(batch, context, trained=trained, random=explainers.random))
                except MammoInsightError as exc:
                    failures.append(f"fold {fold}, cases {', '.join(batch['case_id'])}: {exc}")
                bar.advance(task, len(batch))
        layer, grid = explainers.random.target.name, list(explainers.random.grid_shape or [])

    per_image = pd.DataFrame([rec for case in explained for rec in case.records])
    # the column says which rows the summary averages, so the CSV reproduces cam_metrics.json
    per_image.insert(
        per_image.columns.get_loc("categories") + 1, "in_checks", checks.in_check_sample(per_image)
    )
    metrics = _metrics(run, cfg, per_image, cases, threshold=threshold, target=(layer, grid))
    if lesion_maps is not None:
        metrics["lesion_map"] = lesion_map_metrics(per_image, lesion_maps, seed=cfg.seed)
    metrics["failures"] = failures
    log.info("explained %d images; pointing game %s", len(per_image), metrics["pointing_game"])
    return ExplainResult(
        config=cfg, cases=tuple(explained), checks=per_image, metrics=metrics, failures=tuple(failures)
    )


def _metrics(
    run: Run,
    cfg: ExplainConfig,
    per_image: pd.DataFrame,
    cases: pd.DataFrame,
    *,
    threshold: float,
    target: tuple[str, list[int]],
) -> dict[str, Any]:
    """cam_metrics.json's body: what was explained, with what, and the checks' means and intervals."""
    layer, grid = target
    summary = map_summary(per_image, seed=cfg.seed)
    metrics: dict[str, Any] = {
        "method": "lesion_map" if run.spec.kind == "patch" else cfg.method,
        "n_cases": int(per_image["in_checks"].sum()),
        "summary_rows": "rows of tables/cam_checks.csv with in_checks true",
        "n_explained_images": len(per_image),
        "tolerance_px": cfg.tolerance,
        "threshold": float(threshold),
        "run": str(Path(cfg.run)),
        "model": run.model_name,
        "kind": run.spec.kind,
        "view_mode": run.view_mode,
        "layer": layer,
        "cam_grid": grid,
        "input_size": list(run.image_size),
        "folds": sorted(int(f) for f in cases["fold"].unique()),
    }
    metrics.update(headline_checks(summary))
    metrics["n_flat_maps"] = int((per_image["cam_max"] <= 0).sum()) if "cam_max" in per_image else 0
    metrics["summary"] = summary
    return metrics


def _threshold_and_oof(run: Run, fold: int | None) -> tuple[float, pd.DataFrame]:
    """The run's image threshold and its out-of-fold rows of folds with a model; one-line errors."""
    threshold = run.spec.thresholds.get("image")
    if threshold is None:
        raise MammoInsightError("config.json of the run has no 'threshold'; cannot pick TP/FP/FN/TN cases")
    oof = run.oof()
    if run.label_column not in oof:
        raise MammoInsightError(f"{run.root / 'oof_predictions.csv'} has no column {run.label_column!r}")
    if fold is not None and fold not in run.folds:
        raise MammoInsightError(
            f"{run.root}: fold {fold} has no model; folds with a model: {list(run.folds)}"
        )
    return float(threshold), oof[oof["fold"].isin(run.folds)]


def _beside_maps(cfg: ExplainConfig, oof: pd.DataFrame, device) -> PatchRunMaps:
    """The --patch-run's lesion maps to draw beside the CAMs, refused on another scale or other folds."""
    scale = patch_scale_mismatch(Path(cfg.patch_run), Path(cfg.cache))
    if scale:
        raise MammoInsightError(f"{scale}; explain with the cache the patch run was trained on")
    lesion_maps = PatchRunMaps(Path(cfg.patch_run), device, cfg.seed)
    lesion_maps.check_folds(oof if cfg.fold is None else oof[oof["fold"] == cfg.fold], Path(cfg.run))
    return lesion_maps


def write_explain(result: ExplainResult, out: str | Path) -> Path:
    """OUT/cases/*, tables/cam_checks.csv, cam_metrics.json, then the manifest, then index.html (returned)."""
    out = Path(out)
    cfg = result.config
    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for case in result.cases:
        atomic_write(out / "cases" / f"{case.name}.png", lambda tmp, png=case.png: tmp.write_bytes(png))
        render_case_page(
            out / "cases" / f"{case.name}.html",
            case.case_id,
            f"{case.name}.png",
            case.facts,
            per_image=case.table(),
            method=cfg.method,
            lesion_map=cfg.patch_run is not None,
        )
    write_csv_atomic(out / "tables" / "cam_checks.csv", result.checks)
    write_text_atomic(out / "cam_metrics.json", json.dumps(result.metrics, indent=2, default=float))
    shown = result.checks.drop(columns=[c for c in ("png",) if c in result.checks])
    run_dir, cache_dir = Path(cfg.run), Path(cfg.cache)
    finish_stage(
        out,
        result,
        {
            **asdict(cfg),
            "run": str(run_dir),
            "cache": str(cache_dir),
            "patch_run": None if cfg.patch_run is None else str(cfg.patch_run),
        },
        seed=cfg.seed,
        inputs={
            "oof_predictions": run_dir / "oof_predictions.csv",
            "cache_index": cache_dir / INDEX_FILE,
            **({} if cfg.patch_run is None else {"patch_run_config": Path(cfg.patch_run) / "config.json"}),
        },
        render=lambda: render_index(
            out / "index.html",
            result.metrics,
            cfg.tolerance,
            result.gallery(),
            checks_table=shown,
            failures=list(result.failures),
        ),
    )
    return out / "index.html"
