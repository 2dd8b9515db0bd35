"""An ensemble folder opened as a run: the mean probability of several runs trained on the same folds.

`mammo-insight ensemble` writes OUT/config.json with ``ensemble_of`` (the member run folders, absolute),
the averaged out-of-fold predictions and metrics.json with the thresholds tuned on them. ``TrainedRun.open``
returns an :class:`EnsembleRun` for such a folder, so evaluate and predict use it as any run: its fold k
model is :class:`MeanProbability` over the members' fold k models, and ``ensemble_predict`` averages those
over the folds, which is the mean over every member's every fold model.

The members must read the same input (view mode, image size, preprocessing): one cache is built and fed to
all of them. An ensemble has no single embedding or Grad-CAM target: embed and explain take a member run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.runs.trained_run import TrainedRun

MEMBERS_KEY = "ensemble_of"
SHARED_INPUT = ("view_mode", "image_size", "max_views")
PROB_EPS = 1e-7


class MeanProbability(nn.Module):
    """The members' mean probability, returned as its logit so that every caller's sigmoid reads it back."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.sigmoid(m(*inputs).float()) for m in self.members]).mean(dim=0)
        return torch.logit(probs.clamp(PROB_EPS, 1 - PROB_EPS))

    def embed(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise MammoInsightError("an ensemble has no single embedding: embed one of its member runs")


def shared_input(members: list[TrainedRun]) -> dict[str, Any]:
    """What every member reads (view mode, image size, max views, preprocessing); refuses members that differ."""
    first = members[0]
    values = {key: first.config.get(key) for key in SHARED_INPUT} | {"preprocess": first.preprocess()}
    for run in members[1:]:
        theirs = {key: run.config.get(key) for key in SHARED_INPUT} | {"preprocess": run.preprocess()}
        differ = [key for key in values if values[key] != theirs[key]]
        if differ:
            key = differ[0]
            raise MammoInsightError(
                f"{run.root} reads other input than {first.root} ({key}: {theirs[key]!r} vs {values[key]!r}); "
                "an ensemble scores one cache with every member, so its members must share "
                f"{', '.join(SHARED_INPUT)} and preprocessing"
            )
    return values


@dataclass(frozen=True)
class EnsembleRun(TrainedRun):
    """An ensemble folder: ``members`` are the runs it averages; folds are the folds they all have."""

    members: tuple[TrainedRun, ...] = ()

    @classmethod
    def from_folder(cls, root: Path, config: dict[str, Any]) -> EnsembleRun:
        paths = config.get(MEMBERS_KEY) or []
        if len(paths) < 2:
            raise MammoInsightError(f"{root / 'config.json'}: '{MEMBERS_KEY}' must list at least two runs")
        members = []
        for path in paths:
            if not (Path(path) / "config.json").is_file():
                raise MammoInsightError(f"{root}: member run {path} is gone (no config.json there)")
            members.append(TrainedRun.open(path))
        folds = tuple(sorted(set.intersection(*(set(m.folds) for m in members))))
        if not folds:
            raise MammoInsightError(f"{root}: its member runs share no fold with a trained model")
        return cls(root, config, folds, tuple(members))

    @property
    def model_name(self) -> str:
        return " + ".join(m.model_name for m in self.members)

    def refuse_ensemble(self, what: str) -> None:
        raise MammoInsightError(
            f"{self.root} is an ensemble of {len(self.members)} runs: {what} needs one model's layers; "
            f"run it on a member ({', '.join(str(m.root) for m in self.members)})"
        )

    def preprocess(self) -> dict[str, Any]:
        return dict(self.config.get("preprocess") or self.members[0].preprocess())

    def model(self, fold: int, device: str | torch.device = "cpu") -> nn.Module:
        """Fold k of the ensemble: the mean probability of every member's fold k model."""
        if fold not in self.folds:
            raise MammoInsightError(
                f"{self.root}: fold {fold} is not a fold of every member; folds: {self.folds}"
            )
        return MeanProbability([m.model(fold, device) for m in self.members]).to(device).eval()
