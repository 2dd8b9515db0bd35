"""Options several commands share, declared once: the dataset mapping and the outcomes joined to a DICOM tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Mapping = Annotated[
    Path | None, typer.Option(help="TOML mapping file (generic; dicom: the scan options of its dicom table)")
]
Outcomes = Annotated[
    Path | None,
    typer.Option(help="--dataset dicom: a CSV of labels keyed by patient, study or accession"),
]
OutcomesKey = Annotated[str, typer.Option(help="what --outcomes is keyed by: patient, study or accession")]
OutcomesLabel = Annotated[str, typer.Option(help="the 0/1 label column of --outcomes")]
