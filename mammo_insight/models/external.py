"""External validation: every fold model of a run scores another cache; the fold probabilities are averaged.

The operating thresholds are the ones the run tuned on its own out-of-fold predictions, never
re-tuned on the external data (that would be optimistic).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mammo_insight.cohort.folds import train_only_mask
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import INDEX_FILE, read_cache_config, read_cache_index
from mammo_insight.manifest import file_sha256, write_manifest
from mammo_insight.metrics import evaluate_predictions, save_metrics_json, thresholds_of
from mammo_insight.models.predict import predict_cache
from mammo_insight.models.run_io import load_fold_model, load_run_config, run_folds, save_run_config

log = logging.getLogger(__name__)


def evaluate_run(run_dir: str | Path, cache_dir: str | Path, out_dir: str | Path, device: str = "auto",
                 batch_size: int = 32) -> Path:
    """Write OUT/oof_predictions.csv (fold -1: mean of folds), metrics.json, config.json, index.html."""
    import json

    from mammo_insight.models.run_report import render_run_report

    run_dir, cache_dir, out_dir = Path(run_dir), Path(cache_dir), Path(out_dir)
    config = load_run_config(run_dir)
    folds = run_folds(run_dir)
    if not folds:
        raise MammoInsightError(f"{run_dir} has no trained fold model (folds/fold_<k>/model.pt)")
    label = config.get("label_column", "cancer")
    index = read_cache_index(cache_dir)
    if label not in index:
        raise MammoInsightError(f"{cache_dir / INDEX_FILE} has no column {label!r} to validate against")
    usable = index[label].notna() & ~train_only_mask(index)    # augmented copies are never test images
    table = index[usable].reset_index(drop=True)
    if table.empty:
        raise MammoInsightError(f"{cache_dir / INDEX_FILE} has no ok row with a {label} label")
    dev = torch.device("cuda" if device in {"auto", "cuda"} and torch.cuda.is_available() else "cpu")
    size = tuple(config["image_size"])
    probs, preds = [], None
    for fold in folds:
        log.info("fold %d model scores %d images of %s", fold, len(table), cache_dir)
        model = load_fold_model(run_dir, fold, dev)
        preds, _ = predict_cache(model, cache_dir, table, config.get("view_mode", "single"), size, batch_size,
                                 config.get("max_views", 4), dev, label)
        probs.append(preds["prob"].to_numpy())
    preds["prob"] = np.mean(probs, axis=0)
    preds.insert(preds.columns.get_loc("patient_id") + 1, "fold", -1)
    out_dir.mkdir(parents=True, exist_ok=True)
    preds.to_csv(out_dir / "oof_predictions.csv", index=False)
    run_metrics = run_dir / "metrics.json"
    thresholds = thresholds_of(json.loads(run_metrics.read_text())) if run_metrics.is_file() else None
    save_metrics_json(out_dir / "metrics.json", evaluate_predictions(preds, thresholds, seed=config.get("seed", 0),
                                                                     label=label))
    values = {**config, "evaluated_run": str(run_dir), "cache": str(cache_dir), "folds_averaged": folds,
              "cache_index_sha256": file_sha256(cache_dir / INDEX_FILE), "n_images": len(table)}
    save_run_config(out_dir, values)
    write_manifest(out_dir, "evaluate", {"run": str(run_dir), "cache": str(cache_dir), "device": str(dev)},
                   config.get("seed"), {"cache_index": cache_dir / INDEX_FILE, "run_config": run_dir / "config.json"})
    dataset = (read_cache_config(cache_dir) if (cache_dir / "config.json").is_file() else {}).get("dataset")
    where = f"{dataset} ({cache_dir})" if dataset else str(cache_dir)
    return render_run_report(out_dir, title=f"External validation: {config.get('model')} on {where}")
