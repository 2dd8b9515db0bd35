"""The run directory contract that train writes and `TrainedRun` (runs/trained_run.py) reads.

RUN/config.json          resolved training config: model, view_mode, image_size [H, W], folds, seed,
                         threshold (tuned on out-of-fold predictions), cache_index_sha256, ...
RUN/folds/fold_<k>/model.pt   the chosen checkpoint of fold k as a plain state_dict
                              (loads with torch.load(weights_only=True))
RUN/oof_predictions.csv  image_id, breast_id, patient_id, fold, prob (+ cancer label)
RUN/metrics.json         {"image": {...}, "breast": {...}, "folds": {k, seed, policy, per_fold: patients, positive}}
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write, write_text_atomic


def fold_model_path(run_dir: str | Path, fold: int) -> Path:
    return Path(run_dir) / "folds" / f"fold_{fold}" / "model.pt"


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise MammoInsightError(f"{run_dir} is not a training run: {path.name} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # torn by a kill or a full disk, or edited by hand
        raise MammoInsightError(
            f"{path}: not a readable run config ({exc}); rerun `train` to rewrite it"
        ) from exc
    if not isinstance(config, dict):
        raise MammoInsightError(f"{path}: not a run config (a JSON object is expected)")
    return config


def save_run_config(run_dir: str | Path, config: dict[str, Any]) -> Path:
    return write_text_atomic(Path(run_dir) / "config.json", json.dumps(config, indent=2, default=str))


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save through a buffer, then one plain write: a full disk (or a file-size limit) is then an
    OSError with its errno, which the CLI reports in one line; torch's own writer raises a RuntimeError
    ("[enforce fail at inline_container.cc] ... file write failed") that names neither."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def save_fold_model(run_dir: str | Path, fold: int, model: nn.Module) -> Path:
    """Write atomically so a kill never leaves a half-written model that looks done."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write(fold_model_path(run_dir, fold), lambda tmp: save_torch(state, tmp))


class TornCheckpointError(MammoInsightError):
    """A checkpoint file that is cut short or garbled (a kill or full disk mid-write), not a refused one."""


def load_weights(path: str | Path) -> Any:
    """torch.load(weights_only=True) with one-line errors: a file holding objects other than tensors and
    plain containers is refused (MammoInsightError); a torn one raises TornCheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MammoInsightError(
            f"refused to unpickle {path}: it holds objects other than tensors, which could run code "
            f"(torch.load weights_only=True: {reason[:200]})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise TornCheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def load_oof(run_dir: str | Path) -> pd.DataFrame:
    """Out-of-fold predictions; the fold column says which model never saw each patient."""
    path = Path(run_dir) / "oof_predictions.csv"
    if not path.is_file():
        raise MammoInsightError(f"{run_dir}: oof_predictions.csv is missing")
    return pd.read_csv(path, dtype={"image_id": str, "breast_id": str, "patient_id": str})
