"""`embed`: out-of-fold embeddings of a run, each image embedded by the fold model that never saw its woman.

Any kind of run but an ensemble (``runs.open.open_run``): a cnn run embeds the whole film; a patch run
the mean of its patch model's features over the film's tissue tiles (``runs.patch_run``), with the logit of
its film score (its lesion map's max) as ``cnn_logit``.

The table layout lives in :mod:`mammo_insight.fusion.emb_table` (torch-free, so fuse-train reads it without
importing torch). What each kind of row holds here:

- ``level == "image"``: one row per cached image: image_id, breast_id, patient_id, view, cancer, fold,
  oof, emb_000 ... emb_{D-1}. Single-view runs: the model's ``embed`` of the image. Multi-view runs: the
  model's ``embed`` of that view alone (a one-view stack).
- ``level == "breast"``: one row per breast: image_id empty, view = the breast's views joined by "+"
  (e.g. "CC+MLO"), same other columns. Single-view runs: the mean of the breast's image embeddings, with
  as ``cnn_logit`` the logit of the mean of its images' probabilities (the breast score `train` reports).
  Multi-view runs: the model's ``embed`` over the breast's stacked views (what its head sees).

``fold`` is the run's out-of-fold assignment of the patient (from RUN/oof_predictions.csv) and ``oof``
is True for those rows. Images of patients absent from the run's out-of-fold predictions (a held-out
cache) get the mean over every fold model's embedding, ``fold`` empty and ``oof`` False.

The table goes to EMB.parquet, its manifest beside it (EMB.parquet.manifest.json).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write
from mammo_insight.fusion.emb_table import ID_COLUMNS, embedding_columns
from mammo_insight.imaging.cache import INDEX_FILE, read_cache_index
from mammo_insight.nets.device import resolve_device
from mammo_insight.progress import progress_bar
from mammo_insight.runs.base import Run, prob_logit
from mammo_insight.runs.data import CacheBreastDataset
from mammo_insight.runs.open import open_run
from mammo_insight.stages.base import StageResult, finish_stage

log = logging.getLogger(__name__)

MAX_VIEWS = 4


def patient_folds(oof: pd.DataFrame) -> pd.Series:
    """patient_id -> the fold whose model never saw her; a patient in two folds is an error (a leak)."""
    if "fold" not in oof.columns or "patient_id" not in oof.columns:
        raise MammoInsightError("oof_predictions.csv needs columns patient_id and fold")
    per_patient = oof.dropna(subset=["fold"]).groupby("patient_id")["fold"].agg(["min", "max"])
    split = per_patient[per_patient["min"] != per_patient["max"]]
    if len(split):
        raise MammoInsightError(
            f"oof_predictions.csv: patient(s) {', '.join(map(str, split.index[:5]))} appear "
            "in more than one fold; folds must be grouped by patient"
        )
    return per_patient["min"].astype(int)


def fold_of_rows(patient_id: pd.Series, folds_of_patient: pd.Series, available: Sequence[int]) -> np.ndarray:
    """Fold per row (-1 where the patient is not out-of-fold in the run, or her fold has no saved model)."""
    fold = patient_id.map(folds_of_patient).fillna(-1).astype(int).to_numpy()
    missing = sorted(set(fold[fold >= 0]) - set(available))
    if missing:
        log.warning("folds %s have no saved model: their images get the mean over the other folds", missing)
        fold[np.isin(fold, missing)] = -1
    return fold


def _loader(dataset: Dataset, rows: np.ndarray, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        Subset(dataset, rows.tolist()), batch_size=batch_size, shuffle=False, num_workers=workers
    )


@torch.no_grad()
def _embed_stacks(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> np.ndarray:
    """(n, D + 1) per breast stack: a multi-view model's embedding over its views, then its logit."""
    out = []
    for batch in loader:
        emb = model.embed(batch["image"].to(device), batch["mask"].to(device))
        out.append(torch.cat([emb, model.head(emb)], dim=1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _embed_by_fold(
    run: Run,
    fold: np.ndarray,
    embed_rows: Callable[[torch.nn.Module, np.ndarray], np.ndarray],
    *,
    device: torch.device,
    label: str,
) -> np.ndarray:
    """Embed (and score) every item with its fold's model; items with fold -1 get the mean over folds.

    ``embed_rows(model, positions)``: (len(positions), D + 1) for those items, embedding then logit.
    """
    held_out = np.flatnonzero(fold < 0)
    total = int((fold >= 0).sum() + len(held_out) * len(run.folds))
    result: np.ndarray | None = None
    with progress_bar() as bar:
        task = bar.add_task(label, total=total)
        for k, model in run.models(device):
            for rows, weight in ((np.flatnonzero(fold == k), 1.0), (held_out, 1.0 / len(run.folds))):
                if not len(rows):
                    continue
                emb = embed_rows(model, rows)
                if result is None:
                    result = np.zeros((len(fold), emb.shape[1]), np.float32)
                result[rows] += weight * emb
                bar.advance(task, len(rows))
            del model
    if result is None:
        raise MammoInsightError("nothing to embed: the cache has no usable image")
    return result


def _frame(level: str, ids: pd.DataFrame, scored: np.ndarray, fold: np.ndarray) -> pd.DataFrame:
    emb, logit = scored[:, :-1], scored[:, -1]
    cols = {f"emb_{i:03d}": emb[:, i] for i in range(emb.shape[1])}
    frame = pd.DataFrame(
        {
            "level": level,
            "image_id": ids.get("image_id"),
            "breast_id": ids["breast_id"].to_numpy(),
            "patient_id": ids["patient_id"].to_numpy(),
            "view": ids["view"].to_numpy(),
            "cancer": ids["cancer"].to_numpy(dtype=float),
            "fold": pd.array(np.where(fold >= 0, fold, None), dtype="Int64"),
            "oof": fold >= 0,
            "cnn_logit": logit,
        }
    )[ID_COLUMNS]
    return pd.concat([frame, pd.DataFrame(cols, index=frame.index)], axis=1)


def _breast_views(index: pd.DataFrame) -> pd.DataFrame:
    """breast_id, patient_id, cancer, view ("CC+MLO") per breast, sorted by breast_id."""
    g = index.groupby("breast_id", sort=True)
    return pd.DataFrame(
        {
            "patient_id": g["patient_id"].first(),
            "cancer": g["cancer"].max(),
            "view": g["view"].agg(lambda v: "+".join(sorted(set(v.dropna().astype(str))))),
        }
    ).reset_index()


@dataclass(frozen=True)
class EmbedConfig:
    """Which run embeds which cache."""

    run: Path
    cache: Path
    batch_size: int = 32
    device: str = "auto"
    workers: int = 0


@dataclass(frozen=True, eq=False)
class EmbedResult(StageResult):
    """The EMB table: image and breast rows (see the module docstring)."""

    config: EmbedConfig
    table: pd.DataFrame
    device: str

    stage = "embed"
    title = "Embeddings"

    @property
    def images(self) -> pd.DataFrame:
        return self.table[self.table["level"] == "image"]

    @property
    def breasts(self) -> pd.DataFrame:
        return self.table[self.table["level"] == "breast"]

    @property
    def dim(self) -> int:
        return len(embedding_columns(self.table))

    @property
    def n_held_out(self) -> int:
        """Images not out-of-fold in the run (embedded as the mean over the fold models)."""
        return int((~self.images["oof"].astype(bool)).sum())

    def headline(self) -> dict[str, str]:
        return {
            "images": str(len(self.images)),
            "breasts": str(len(self.breasts)),
            "embedding dim": str(self.dim),
        }

    def lines(self) -> list[str]:
        return [
            f"images: {len(self.images)} ({self.n_held_out} not out-of-fold: mean over fold models)",
            f"breasts: {len(self.breasts)}; embedding dim: {self.dim}",
        ]


def run_embed(config: EmbedConfig) -> EmbedResult:
    """The EMB table of every ok image of the cache (image and breast rows, see the module docstring)."""
    device = resolve_device(config.device)  # a device that is absent fails before any work
    run = open_run(config.run)
    run.refuse_ensemble("embed")
    cache_dir = Path(config.cache)
    index = read_cache_index(cache_dir)
    if not len(index):
        raise MammoInsightError(f"{cache_dir}: the cache holds no ok image")
    index = index.sort_values(["breast_id", "image_id"]).reset_index(drop=True)
    by_patient = patient_folds(run.oof())
    image_fold = fold_of_rows(index["patient_id"], by_patient, run.folds)
    n_held = int((image_fold < 0).sum())
    if n_held:
        log.warning(
            "%d image(s) of patients outside the run's out-of-fold predictions: embedded as the mean "
            "over the %d fold models (oof=False)",
            n_held,
            len(run.folds),
        )

    def image_rows(model: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
        return run.embed(
            model,
            cache_dir,
            index.iloc[rows],
            device=device,
            batch_size=config.batch_size,
            workers=config.workers,
        )

    with torch.inference_mode():
        image_emb = _embed_by_fold(run, image_fold, image_rows, device=device, label="embedding images")
        breasts = _breast_views(index)
        breast_fold = fold_of_rows(breasts["patient_id"], by_patient, run.folds)
        if run.multi_view:
            breast_emb = _breast_stacks(run, cache_dir, index, breasts, breast_fold, config, device)
        else:
            codes = pd.Categorical(index["breast_id"], categories=breasts["breast_id"]).codes
            counts = np.bincount(codes, minlength=len(breasts)).astype(np.float32)
            breast_emb = np.zeros((len(breasts), image_emb.shape[1]), np.float32)
            np.add.at(breast_emb, codes, image_emb)
            breast_emb /= counts[:, None]
            breast_emb[:, -1] = _breast_logit(image_emb[:, -1], codes, counts)
    table = pd.concat(
        [_frame("image", index, image_emb, image_fold), _frame("breast", breasts, breast_emb, breast_fold)],
        ignore_index=True,
    )
    return EmbedResult(config=config, table=table, device=str(device))


def _breast_logit(image_logits: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each breast's logit as `train` scores a breast: the logit of the mean of its images' probabilities
    (the mean of their logits would rank breasts otherwise, and fuse-train reads this as the CNN's own
    breast score)."""
    probs = np.zeros(len(counts))
    np.add.at(probs, codes, 1 / (1 + np.exp(-image_logits.astype(np.float64))))
    return prob_logit(probs / counts).astype(np.float32)


def _breast_stacks(
    run: Run,
    cache_dir: Path,
    index: pd.DataFrame,
    breasts: pd.DataFrame,
    breast_fold: np.ndarray,
    config: EmbedConfig,
    device: torch.device,
) -> np.ndarray:
    """A multi-view run's breast rows: its model's embedding over each breast's stacked views."""
    stacks = CacheBreastDataset(cache_dir, index, max_views=MAX_VIEWS, size=run.image_size)
    order = stacks.breasts["breast_id"].to_numpy()
    pos = pd.Series(np.arange(len(order)), index=order)[breasts["breast_id"]].to_numpy()  # ours -> theirs
    stack_fold = np.empty_like(breast_fold)
    stack_fold[pos] = breast_fold

    def stack_rows(model: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
        return _embed_stacks(model, _loader(stacks, rows, config.batch_size, config.workers), device)

    return _embed_by_fold(run, stack_fold, stack_rows, device=device, label="embedding breasts")[pos]


def write_embed(result: EmbedResult, out: str | Path) -> Path:
    """EMB.parquet, then its manifest beside it (EMB.parquet.manifest.json); returns the table's path."""
    out = Path(out)
    atomic_write(out, lambda tmp: result.table.to_parquet(tmp, index=False))
    run, cache = Path(result.config.run), Path(result.config.cache)
    finish_stage(
        out,
        result,
        {
            "run": str(run),
            "cache": str(cache),
            "batch_size": result.config.batch_size,
            "device": result.config.device,
        },
        inputs={
            "run_config": run / "config.json",
            "oof": run / "oof_predictions.csv",
            "cache_index": cache / INDEX_FILE,
        },
        report=None,
    )
    return out
