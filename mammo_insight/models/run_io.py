"""The run directory contract that train writes and embed, explain, evaluate and predict read.

RUN/config.json          resolved training config: model, view_mode, image_size [H, W], folds, seed,
                         threshold (tuned on out-of-fold predictions), cache_index_sha256, ...
RUN/folds/fold_<k>/model.pt   the chosen checkpoint of fold k as a plain state_dict
                              (loads with torch.load(weights_only=True))
RUN/oof_predictions.csv  image_id, breast_id, patient_id, fold, prob (+ cancer label)
RUN/metrics.json         {"image": {...}, "breast": {...}, "folds": {k, seed, policy, per_fold: patients, positive}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.models.factory import build_classifier


def fold_model_path(run_dir: str | Path, fold: int) -> Path:
    return Path(run_dir) / "folds" / f"fold_{fold}" / "model.pt"


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise MammoInsightError(f"{run_dir} is not a training run: {path.name} is missing")
    return json.loads(path.read_text())


def save_run_config(run_dir: str | Path, config: dict[str, Any]) -> Path:
    path = Path(run_dir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, default=str))
    return path


def save_fold_model(run_dir: str | Path, fold: int, model: nn.Module) -> Path:
    """Write atomically so a kill never leaves a half-written model that looks done."""
    path = fold_model_path(run_dir, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)
    return path


def load_fold_model(run_dir: str | Path, fold: int, device: str | torch.device = "cpu") -> nn.Module:
    """The eval-mode classifier of one fold, rebuilt from config.json and its state_dict."""
    config = load_run_config(run_dir)
    path = fold_model_path(run_dir, fold)
    if not path.is_file():
        raise MammoInsightError(f"{run_dir}: fold {fold} has no model ({path} missing)")
    size = config.get("image_size")
    model = build_classifier(config["model"], config.get("view_mode", "single"),
                             img_size=tuple(size) if size else None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def run_folds(run_dir: str | Path) -> list[int]:
    """Folds with a saved model, ascending."""
    root = Path(run_dir) / "folds"
    return sorted(int(p.parent.name.split("_")[1]) for p in root.glob("fold_*/model.pt"))


def load_oof(run_dir: str | Path) -> pd.DataFrame:
    """Out-of-fold predictions; the fold column says which model never saw each patient."""
    path = Path(run_dir) / "oof_predictions.csv"
    if not path.is_file():
        raise MammoInsightError(f"{run_dir}: oof_predictions.csv is missing")
    return pd.read_csv(path, dtype={"image_id": str, "breast_id": str, "patient_id": str})
