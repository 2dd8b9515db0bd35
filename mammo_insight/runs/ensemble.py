"""An ensemble folder opened as a run: the mean probability of several runs trained on the same folds.

`mammo-insight ensemble` writes OUT/config.json (a spec of kind ``ensemble`` whose ``ensemble_of`` lists the
member run folders, absolute), the averaged out-of-fold predictions and metrics.json with the thresholds
tuned on them. ``runs.open.open_run`` returns an :class:`EnsembleRun` for such a folder, so evaluate and
predict use it as any run: each member scores the rows as it reads films (a cnn run its resized film, a
patch run its slid map) and the members' averaged probabilities are averaged, image by image and breast by
breast.

The members must share the preprocessing, since one cache is built and fed to all of them; their kinds,
view modes and input sizes may differ. An ensemble has no single embedding or map: embed and explain take
a member run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.metrics import aggregate_to_breast
from mammo_insight.runs.base import Predictions, Run, RunFolder, mean_predictions
from mammo_insight.runs.spec import RunSpec


def shared_preprocess(members: Sequence[Run]) -> dict[str, Any]:
    """The preprocessing every member reads; refuses members whose caches were made another way."""
    first = members[0].preprocess()
    for run in members[1:]:
        theirs = run.preprocess()
        if theirs != first:
            differ = sorted(k for k in set(first) | set(theirs) if first.get(k) != theirs.get(k))
            raise MammoInsightError(
                f"{run.root} reads images preprocessed otherwise than {members[0].root} ({', '.join(differ)} "
                "differ); an ensemble scores one cache with every member, so its members must share "
                "their preprocessing"
            )
    return first


@dataclass(frozen=True)
class EnsembleRun(RunFolder):
    """An ensemble folder: ``members`` are the runs it averages; folds are the folds they all have."""

    members: tuple[Run, ...] = ()

    @classmethod
    def open(cls, root: Path, spec: RunSpec, open_member: Callable[[Path], Run]) -> EnsembleRun:
        """Open an ensemble folder, its members with ``open_member`` (``open_run``: any kind)."""
        if len(spec.members) < 2:
            raise MammoInsightError(f"{root / 'config.json'}: 'ensemble_of' must list at least two runs")
        members = []
        for path in spec.members:
            if not (Path(path) / "config.json").is_file():
                raise MammoInsightError(f"{root}: member run {path} is gone (no config.json there)")
            members.append(open_member(Path(path)))
        folds = tuple(sorted(set.intersection(*(set(m.folds) for m in members))))
        if not folds:
            raise MammoInsightError(f"{root}: its member runs share no fold with a trained model")
        return cls(root, spec, folds, tuple(members))

    def refuse_ensemble(self, what: str) -> None:
        raise self._refusal(what)

    def _refusal(self, what: str) -> MammoInsightError:
        return MammoInsightError(
            f"{self.root} is an ensemble of {len(self.members)} runs: {what} needs one model's layers; "
            f"run it on a member ({', '.join(str(m.root) for m in self.members)})"
        )

    def preprocess(self) -> dict[str, Any]:
        return dict(self.spec.preprocess or self.members[0].preprocess())

    def model(self, fold: int, device: str | torch.device = "cpu") -> nn.Module:
        raise self._refusal(f"fold {fold}'s model")

    def score(self, model: nn.Module, cache_dir: str | Path, rows: pd.DataFrame, **_: Any) -> Predictions:
        raise self._refusal("scoring with one fold model")

    def embed(self, model: nn.Module, cache_dir: str | Path, rows: pd.DataFrame, **_: Any) -> Any:
        raise self._refusal("embed")

    def ensemble_predict(
        self,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> Predictions:
        """The members' averaged predictions, averaged; breast rows when a member scores breasts itself
        (the others' breasts are the mean of their films, as their metrics read them)."""
        parts = [m.ensemble_predict(cache_dir, rows, device, batch_size) for m in self.members]
        images = mean_predictions([(p[0], None) for p in parts])[0]
        if all(p[1] is None for p in parts):
            return images, None
        label = self.label_column
        breasts = [b if b is not None else aggregate_to_breast(i, "mean", label) for i, b in parts]
        order = breasts[0]["breast_id"]
        aligned = [(b.set_index("breast_id").loc[order].reset_index(), None) for b in breasts]
        return images, mean_predictions(aligned)[0]
