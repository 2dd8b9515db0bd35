"""The EMB.parquet table that `embed` writes and `fuse-train` reads (no torch here).

One file; a ``level`` column tells the two kinds of rows apart:

- ``level == "image"``: one row per cached image: image_id, breast_id, patient_id, view, cancer, fold,
  oof, emb_000 ... emb_{D-1}.
- ``level == "breast"``: one row per breast: image_id empty, view = the breast's views joined by "+"
  (e.g. "CC+MLO"), same other columns; the breast's pooled embedding.

``fold``: the CNN run's out-of-fold assignment of the patient (empty when she was not in the run's
out-of-fold predictions); ``oof``: True when the embedding comes from the one fold model that never saw
her, False when it is the mean over every fold model; ``cnn_logit``: that same model's malignancy logit
(optional for tables made by hand).

Each fold model has its own embedding space, so LightGBM trained on other folds' embeddings cannot read
a held-out fold's directly; the logit is on one scale for every fold model, which is why fuse-train
uses it next to the embedding's principal components.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.errors import MammoInsightError

ID_COLUMNS = ["level", "image_id", "breast_id", "patient_id", "view", "cancer", "fold", "oof", "cnn_logit"]


def embedding_columns(frame: pd.DataFrame) -> list[str]:
    """The emb_### columns of an embeddings table, in order."""
    return sorted(c for c in frame.columns if c.startswith("emb_"))


def read_embeddings(path: str | Path) -> pd.DataFrame:
    """Read and check an EMB.parquet written by `mammo-insight embed` (or by hand with the same layout)."""
    path = Path(path)
    if not path.is_file():
        raise MammoInsightError(f"embeddings file {path} does not exist")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise MammoInsightError(f"embeddings file {path} is not a readable parquet table: {exc}") from exc
    missing = [c for c in ("level", "breast_id", "patient_id") if c not in frame.columns]
    if missing:
        raise MammoInsightError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the layout of "
            "`mammo-insight embed` (level, image_id, breast_id, patient_id, fold, view, emb_###)"
        )
    emb = embedding_columns(frame)
    if not emb:
        raise MammoInsightError(f"{path}: no emb_### column")
    values = frame[[*emb, *(["cnn_logit"] if "cnn_logit" in frame.columns else [])]]
    numeric = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(numeric) & values.notna().to_numpy()  # inf or text; empty cells are allowed
    if bad.any():
        row, col = (int(i[0]) for i in bad.nonzero())
        raise MammoInsightError(
            f"{path}: {int(bad.any(axis=1).sum())} row(s) hold non-finite or non-numeric embedding values, "
            f"first row {row} column {values.columns[col]!r} = {values.iat[row, col]}"
        )
    for col in ("breast_id", "patient_id", "image_id"):
        if col in frame.columns:
            frame[col] = frame[col].astype("string")
    return frame
