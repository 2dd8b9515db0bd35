"""Several training runs made on the same folds, read together: what `ensemble` averages and `compare` tests.

Out-of-fold predictions of two runs can be averaged or compared image by image only when every image was
validated in the same fold by both (the same women held out): :func:`open_run_set` refuses runs whose
folds differ, naming the first woman and image that differ (``cohort.folds.fold_mismatch``), and returns
the runs' tables aligned on the same rows.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.cohort.folds import fold_mismatch
from mammo_insight.errors import MammoInsightError
from mammo_insight.metrics import aggregate_to_breast, evaluate_predictions, thresholds_of
from mammo_insight.metrics.compare import paired_comparisons
from mammo_insight.runs.run_io import load_oof
from mammo_insight.runs.spec import RunSpec

log = logging.getLogger(__name__)
IDS = {"image_id": str, "breast_id": str, "patient_id": str}
COMPARED_METRICS = ("roc_auc", "pr_auc", "pf1")


@dataclass(frozen=True)
class RunSet:
    """Runs on the same folds; ``oof[i]`` holds run i's image rows in the first run's row order."""

    roots: tuple[Path, ...]
    names: tuple[str, ...]  # the runs' folder names, numbered where two share one
    configs: tuple[dict[str, Any], ...]
    oof: tuple[pd.DataFrame, ...]
    own_breasts: tuple[pd.DataFrame | None, ...]  # a multi-view run's own breast output, else None
    label: str

    def breasts(self, i: int) -> pd.DataFrame:
        """Run i's breast rows: its own breast output, else the mean of the breast's images (as its metrics)."""
        own = self.own_breasts[i]
        frame = own if own is not None else aggregate_to_breast(self.oof[i], "mean", self.label)
        return frame.set_index("breast_id").reindex(self.breast_ids).reset_index()

    @property
    def breast_ids(self) -> pd.Index:
        return pd.Index(self.oof[0]["breast_id"].drop_duplicates())

    def history(self, i: int) -> pd.DataFrame | None:
        path = self.roots[i] / "history.csv"
        return pd.read_csv(path) if path.is_file() else None


def _names(roots: Sequence[Path]) -> tuple[str, ...]:
    counts = Counter(r.name for r in roots)
    seen: Counter[str] = Counter()
    names = []
    for root in roots:
        seen[root.name] += 1
        names.append(f"{root.name} ({seen[root.name]})" if counts[root.name] > 1 else root.name)
    return tuple(names)


def open_run_set(run_dirs: Sequence[str | Path]) -> RunSet:
    """Read two or more runs' configs and out-of-fold predictions; refuse runs on other folds or labels."""
    roots = [Path(r) for r in run_dirs]
    if len(roots) < 2:
        raise MammoInsightError(f"--runs needs at least two run folders, got {len(roots)}")
    repeated = [r for r, n in Counter(p.resolve() for p in roots).items() if n > 1]
    if repeated:
        raise MammoInsightError(f"run folder {repeated[0]} is named twice in --runs")
    names = _names(roots)
    specs = [RunSpec.read(r) for r in roots]  # any kind; older folders upgraded in memory
    configs = [spec.to_dict() for spec in specs]
    labels = {spec.label_column for spec in specs}
    if len(labels) > 1:
        raise MammoInsightError(f"the runs predict different labels ({', '.join(sorted(labels))})")
    oofs = [load_oof(r) for r in roots]
    for root, name, oof in zip(roots[1:], names[1:], oofs[1:], strict=True):
        mismatch = fold_mismatch(oofs[0], oof, names=(names[0], name))
        if mismatch:
            raise MammoInsightError(
                f"{root} was not validated on the folds of {roots[0]} (first difference: {mismatch}); "
                "train the runs on the same cache with the same folds and seed"
            )
    order = oofs[0]["image_id"]
    aligned = [o.set_index("image_id").loc[order].reset_index() for o in oofs]
    own = []
    for root in roots:
        path = root / "oof_breast_predictions.csv"
        own.append(pd.read_csv(path, dtype=IDS) if path.is_file() else None)
    return RunSet(tuple(roots), names, tuple(configs), tuple(aligned), tuple(own), labels.pop())


def averaged_predictions(runs: RunSet) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(image rows, breast rows or None): every image's and breast's mean probability over the runs.

    Breast rows are returned when a run scores breasts itself (multi-view): each run's breast
    probability (its own, or the mean of its images) is averaged, as the runs' own metrics read them.
    """
    images = runs.oof[0].drop(columns=["prob"]).assign(prob=np.mean([o["prob"] for o in runs.oof], axis=0))
    if all(b is None for b in runs.own_breasts):
        return images, None
    frames = [runs.breasts(i) for i in range(len(runs.roots))]
    breasts = frames[0][["breast_id", "patient_id", runs.label]].assign(
        prob=np.mean([f["prob"] for f in frames], axis=0)
    )
    return images, breasts


def _thresholds(root: Path) -> dict[str, float] | None:
    path = root / "metrics.json"
    if not path.is_file():
        return None
    return thresholds_of(json.loads(path.read_text())) or None


def compare_runs(runs: RunSet, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Each run's metrics (at its own tuned thresholds) and every pair compared on the same women.

    {"runs": {name: metrics.json body}, "paired": {level: {"a_vs_b": {metric: paired bootstrap, "delong"}}},
    "n_boot", "seed"}. Paired tests run at image and breast level on the same patient resamples for both
    runs; DeLong's test treats the rows as independent (breasts of one woman are not quite).
    """
    label = runs.label
    scores = {
        name: evaluate_predictions(
            oof,
            _thresholds(root),
            n_boot,
            seed,
            label=label,
            breast_preds=own,
        )
        for name, root, oof, own in zip(runs.names, runs.roots, runs.oof, runs.own_breasts, strict=True)
    }
    pairs = [(a, b) for i, a in enumerate(runs.names) for b in runs.names[i + 1 :]]
    levels = {"image": runs.oof, "breast": [runs.breasts(i) for i in range(len(runs.roots))]}
    paired = {}
    for level, frames in levels.items():
        labelled = frames[0][label].notna().to_numpy()
        paired[level] = paired_comparisons(
            frames[0][label].to_numpy(float)[labelled],
            {n: f["prob"].to_numpy(float)[labelled] for n, f in zip(runs.names, frames, strict=True)},
            frames[0]["patient_id"].astype(str).to_numpy()[labelled],
            pairs,
            n_boot,
            metrics=COMPARED_METRICS,
            seed=seed,
        )
    return {"runs": scores, "paired": paired, "n_boot": n_boot, "seed": seed}
