"""`open_run`: any run folder, opened as its kind, behind the one `Run` protocol (``runs.base``).

Kinds, by config.json's ``kind`` (``runs.spec``; older folders are upgraded in memory):

- ``cnn`` (`train`): :class:`~mammo_insight.runs.trained_run.CnnRun`, whole-image fold models;
- ``patch`` (`patch-train`): :class:`~mammo_insight.runs.patch_run.PatchRun`, patch models slid over films;
- ``ensemble`` (`ensemble`): :class:`~mammo_insight.runs.ensemble.EnsembleRun`, the mean of its members.

A new kind is a `RunSpec` kind (its recipe class in ``spec.RECIPES``), a class implementing ``Run`` and one
line in ``OPENERS``.
"""

from __future__ import annotations

from pathlib import Path

from mammo_insight.runs.base import Run
from mammo_insight.runs.ensemble import EnsembleRun
from mammo_insight.runs.patch_run import PatchRun
from mammo_insight.runs.spec import RunSpec
from mammo_insight.runs.trained_run import CnnRun

OPENERS = {"cnn": CnnRun.open, "patch": PatchRun.open}


def open_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir``, of the kind its config.json names."""
    root = Path(run_dir)
    spec = RunSpec.read(root)
    if spec.kind == "ensemble":
        return EnsembleRun.open(root, spec, open_run)
    return OPENERS[spec.kind](root, spec)
