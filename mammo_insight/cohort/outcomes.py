"""Outcomes joined to a DICOM tree from a table kept elsewhere (a cancer registry, biopsy results).

``--outcomes FILE.csv --on patient|study|accession [--label COLUMN]``: the key column holds the raw
PatientID, StudyInstanceUID or AccessionNumber, which is hashed with the project's salt exactly as the scan
hashed the headers, so the join never needs a raw id in the table. An optional ``laterality`` column (L/R)
makes the outcome a breast's; without it the outcome is every breast of the patient, study or accession.
An optional ``density`` column (A-D, as a report records it; headers carry none) fills the cohort's density.

What did not match is listed, never dropped in silence: studies without an outcome (their images keep an
empty label), outcome rows without images (by their line in the file), and breasts that two outcome rows
give different labels (their images get an empty label: neither row is trusted over the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.cohort.adapters.tables import read_table
from mammo_insight.cohort.dicom_record import keyed_id
from mammo_insight.cohort.schema import file_lines
from mammo_insight.errors import CohortError

ON = {"patient": "patient_id", "study": "study_id", "accession": "accession_id"}
KEY_NAMES = {
    "patient": ("PatientID", "patient_id", "patient"),
    "study": ("StudyInstanceUID", "study_instance_uid", "study_uid", "study_id", "study"),
    "accession": ("AccessionNumber", "accession_number", "accession"),
}
LABEL_VALUES = {"1": 1.0, "0": 0.0, "true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "1.0": 1.0, "0.0": 0.0}
REPORT_COLUMNS = ["problem", "key", "laterality", "outcome_lines", "n_images", "detail"]
NO_OUTCOME, NO_IMAGES, CONFLICT = "study without an outcome", "outcome without images", "conflicting outcomes"


@dataclass(frozen=True)
class OutcomesSpec:
    """An outcomes table and how it joins: ``on`` one of patient, study, accession; ``label`` its 0/1 column."""

    path: Path
    on: str = "study"
    label: str = "cancer"


def outcomes_spec(path: Path | None, on: str = "study", label: str = "cancer") -> OutcomesSpec | None:
    """The spec of ``--outcomes/--on/--label`` (None without ``--outcomes``)."""
    return None if path is None else OutcomesSpec(Path(path), on, label)


def _key_column(raw: pd.DataFrame, spec: OutcomesSpec) -> str:
    lower = {c.lower(): c for c in raw.columns}
    for name in KEY_NAMES[spec.on]:
        if name.lower() in lower:
            return lower[name.lower()]
    raise CohortError(
        f"{spec.path}: no {spec.on} key column (one of {', '.join(KEY_NAMES[spec.on])}); "
        f"it has {', '.join(map(repr, raw.columns))}"
    )


def read_outcomes(spec: OutcomesSpec, salt: bytes) -> pd.DataFrame:
    """key (hashed), laterality (L/R or None), label (0/1), line (in the file), one row per outcome row."""
    if spec.on not in ON:
        raise CohortError(f"--on must be one of {', '.join(ON)}, got {spec.on!r}")
    if not Path(spec.path).is_file():
        raise CohortError(f"outcomes file {spec.path} does not exist")
    raw = read_table(Path(spec.path))
    if spec.label not in raw.columns:
        raise CohortError(
            f"{spec.path}: no label column {spec.label!r} (--label); it has {', '.join(map(repr, raw.columns))}"
        )
    key_col = _key_column(raw, spec)
    label = raw[spec.label].str.lower().map(LABEL_VALUES)
    bad = label.isna() & (raw[spec.label] != "")
    if bad.any():
        raise CohortError(
            f"{spec.path}: column {spec.label!r} must be 0/1 (or true/false, yes/no); "
            f"{file_lines(np.flatnonzero(bad))} hold e.g. {raw.loc[bad, spec.label].iloc[0]!r}"
        )
    empty_key = raw[key_col] == ""
    if empty_key.any():
        raise CohortError(
            f"{spec.path}: column {key_col!r} is empty in {file_lines(np.flatnonzero(empty_key))}"
        )
    lat = (
        raw["laterality"].str.upper().str[:1]
        if "laterality" in raw.columns
        else pd.Series(None, index=raw.index)
    )
    lat = lat.where(lat.isin(["L", "R"]), None)
    kind = spec.on
    return pd.DataFrame(
        {
            "key": [keyed_id(kind, v, salt) for v in raw[key_col]],
            "laterality": lat.astype(object),
            "label": label.to_numpy(dtype=float),
            "density": raw["density"].str.upper().replace("", None) if "density" in raw.columns else None,
            "line": np.arange(len(raw)) + 2,
        }
    )


def _lines(values: pd.Series) -> str:
    return ", ".join(str(int(v)) for v in sorted(set(values))[:10])


def join_outcomes(table: pd.DataFrame, outcomes: pd.DataFrame, on: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table with ``cancer`` filled from the outcomes, the match report: one row per problem)."""
    key = ON[on]
    out = table.copy()
    by_side = outcomes[outcomes["laterality"].notna()]
    whole = outcomes[outcomes["laterality"].isna()]
    # each image's candidate labels: from rows for its key and side, and from rows for its whole key
    side_match = (
        out[[key, "laterality", "breast_id"]]
        .reset_index()
        .merge(by_side, left_on=[key, "laterality"], right_on=["key", "laterality"])
    )
    whole_match = out[[key, "breast_id"]].reset_index().merge(whole, left_on=key, right_on="key")
    matched = pd.concat([side_match, whole_match], ignore_index=True)
    per_breast = matched.groupby("breast_id").agg(
        labels=("label", lambda s: sorted(set(s.dropna()))),
        lines=("line", _lines),
        density=("density", "first"),
    )
    conflicts = per_breast[per_breast["labels"].map(len) > 1]
    agreed = per_breast[per_breast["labels"].map(len) == 1]["labels"].map(lambda v: v[0])
    out["cancer"] = out["breast_id"].map(agreed).astype(float)
    if outcomes["density"].notna().any():
        out["density"] = out["breast_id"].map(per_breast["density"]).astype(object)
    return out, _match_report(out, matched, conflicts, outcomes, on)


def _match_report(
    out: pd.DataFrame, matched: pd.DataFrame, conflicts: pd.DataFrame, outcomes: pd.DataFrame, on: str
) -> pd.DataFrame:
    """One row per conflicting breast, per study without an outcome, per outcome row without images."""
    key = ON[on]
    report = []
    for breast, row in conflicts.iterrows():
        members = out[out["breast_id"] == breast]
        report.append(
            {
                "problem": CONFLICT,
                "key": members[key].iloc[0],
                "laterality": members["laterality"].iloc[0],
                "outcome_lines": row["lines"],
                "n_images": len(members),
                "detail": f"breast {breast}: labels {row['labels']}; its images get no label",
            }
        )
    unmatched = out[out[key].notna() & ~out.index.isin(matched["index"])]
    for study, group in unmatched.groupby("study_id", dropna=False, sort=True):
        report.append(
            {
                "problem": NO_OUTCOME,
                "key": group[key].iloc[0],
                "laterality": "",
                "outcome_lines": "",
                "n_images": len(group),
                "detail": f"study {study}: no outcome row for its {on}",
            }
        )
    no_key = out[key].isna()
    if no_key.any():
        report.append(
            {
                "problem": NO_OUTCOME,
                "key": "",
                "laterality": "",
                "outcome_lines": "",
                "n_images": int(no_key.sum()),
                "detail": f"images whose header holds no {on} id: they cannot be joined",
            }
        )
    used = set(matched["line"])
    for row in outcomes[~outcomes["line"].isin(used)].itertuples(index=False):
        report.append(
            {
                "problem": NO_IMAGES,
                "key": row.key,
                "laterality": row.laterality or "",
                "outcome_lines": str(row.line),
                "n_images": 0,
                "detail": f"no image in the tree has this {on}",
            }
        )
    return pd.DataFrame(report, columns=REPORT_COLUMNS)


def match_notes(report: pd.DataFrame, n_outcomes: int, path: Path) -> list[str]:
    """One line per problem kind for the cohort's notes (eda shows them; the table lists every case)."""
    counts = report["problem"].value_counts()
    notes = [f"outcomes from {Path(path).name}: {n_outcomes} row(s)"]
    for problem in (NO_OUTCOME, NO_IMAGES, CONFLICT):
        if problem in counts:
            notes.append(f"{problem}: {int(counts[problem])} (listed in outcome_match.csv)")
    return notes
