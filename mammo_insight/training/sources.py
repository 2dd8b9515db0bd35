"""Training on several sources: the home cache's rows and other caches' train-only rows, and the films
the dataset-shift check scores where they meet.

``train --external-cache B`` adds B's rows as ``external_only`` (cohort.folds keeps them out of every
validation fold, so they are never scored nor in the metrics). After training, :func:`source_films` scores
each home film with the fold model that never saw its woman and each external film with one fold model
(external women dealt round the folds; every fold model trained on them, so their scores are optimistic),
with the pooled features the shift probe reads (``fusion.shift``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo_insight.cohort.folds import train_only_mask
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import INDEX_FILE, read_cache_index
from mammo_insight.runs.base import Run
from mammo_insight.runs.data import CACHE_ROOT

log = logging.getLogger(__name__)
SOURCE_COLUMN = "training_source"  # home or ext<k>, when a run trains on external caches too
HOME_SOURCE = "home"


def load_training_table(cache_dir: Path, label_column: str) -> pd.DataFrame:
    """The ok cache rows with a known label (unlabelled rows cannot train or be scored)."""
    index = read_cache_index(cache_dir)
    if label_column not in index:
        raise MammoInsightError(f"{cache_dir / INDEX_FILE} has no column {label_column!r}")
    table = index[index[label_column].notna()].reset_index(drop=True)
    dropped = len(index) - len(table)
    if dropped:
        log.warning("%d cache row(s) without a %s label are left out", dropped, label_column)
    if table.empty:
        raise MammoInsightError(f"{cache_dir / INDEX_FILE} has no ok row with a {label_column} label")
    labels = pd.to_numeric(table[label_column], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():  # caught before any fold trains, not when the metrics meet a non-binary label
        row = int(bad.to_numpy().argmax())
        raise MammoInsightError(
            f"label_column {label_column!r} must hold 0/1 labels, but {cache_dir / INDEX_FILE} holds "
            f"{table[label_column].iloc[row]!r} (image {table['image_id'].iloc[row]}); "
            f"{int(bad.sum())} such row(s)"
        )
    return table


def external_name(k: int) -> str:
    """How the k-th external cache (from 1) is named in ids, the source column and config.json."""
    return f"ext{k}"


def load_sources(
    cache_dir: Path, external: Sequence[Path], label_column: str, *, positives_only: bool = False
) -> pd.DataFrame:
    """The home cache's training rows, then each external cache's rows flagged ``external_only``.

    External rows train in every fold and are never validated or scored (``cohort.folds``). Their ids are
    prefixed with the cache's name (``ext1:P001``), so that a woman of another dataset who shares an id with
    a home woman is never taken for her; ``cache_root`` says where their images are, ``SOURCE_COLUMN`` which
    cache each row came from (home or ext<k>). `positives_only` keeps only an external cache's positives,
    the studies' recipe of adding another dataset's cancers.
    """
    home = load_training_table(cache_dir, label_column)
    if not external:
        return home
    parts = [home.assign(**{SOURCE_COLUMN: HOME_SOURCE})]
    for k, path in enumerate(external, start=1):
        rows = load_training_table(path, label_column)
        if positives_only:
            rows = rows[pd.to_numeric(rows[label_column]) == 1]
            if rows.empty:
                raise MammoInsightError(
                    f"{path / INDEX_FILE} has no positive ({label_column} = 1) row to add"
                )
        name = external_name(k)
        ids = {c: name + ":" + rows[c].astype(str) for c in ("patient_id", "breast_id", "image_id")}
        parts.append(rows.assign(**ids, external_only=True, **{CACHE_ROOT: str(path), SOURCE_COLUMN: name}))
        log.info("external cache %s (%s): %d training-only images", name, path, len(rows))
    return pd.concat(parts, ignore_index=True)


def source_films(
    run: Run,
    cache_dir: Path,
    table: pd.DataFrame,
    folds: pd.Series,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """(films, pooled features or None): every validated home film and every external film, scored.

    films: patient_id, image_id, source (home or ext<k>), label, prob, fold (the model that scored it).
    Features (the run's embedding of each film) come from single-view runs only (a multi-view model pools
    a breast's views).
    """
    label = run.label_column
    home = table[(folds >= 0).to_numpy() & ~train_only_mask(table).to_numpy()]
    external = table[table[SOURCE_COLUMN] != HOME_SOURCE]
    women = sorted(external["patient_id"].unique())
    dealt = external["patient_id"].map({w: i % len(run.folds) for i, w in enumerate(women)})
    films, features = [], []
    for k, fold in enumerate(run.folds):
        rows = pd.concat([home[folds.loc[home.index] == fold], external[dealt == k]]).reset_index(drop=True)
        if rows.empty:
            continue
        model = run.model(fold, device)
        images, _ = run.score(model, cache_dir, rows, device=device, batch_size=batch_size)
        films.append(
            pd.DataFrame(
                {
                    "patient_id": rows["patient_id"].astype(str),
                    "image_id": rows["image_id"].astype(str),
                    "source": rows[SOURCE_COLUMN].fillna(HOME_SOURCE).to_numpy(),
                    "label": pd.to_numeric(rows[label]).to_numpy(),
                    "prob": images["prob"].to_numpy(),
                    "fold": fold,
                }
            )
        )
        if not run.multi_view:
            embedded = run.embed(model, cache_dir, rows, device=device, batch_size=batch_size)
            features.append(embedded[:, :-1])  # the pooled features, without the logit
        del model
    frame = pd.concat(films, ignore_index=True)
    return frame, (np.concatenate(features) if features else None)
