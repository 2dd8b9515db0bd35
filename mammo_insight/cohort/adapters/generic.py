"""Any CSV described by a small TOML mapping file (see examples/cbis_ddsm_manifest.toml for every key).

The mapping says where the table is, which source column fills which canonical column, how values
are recoded, which column is the label and what counts as positive, and which extra columns are
factors worth analysing. Everything is checked up front so that a typo in the mapping or a bad
cell names the mapping file, the column and the rows instead of failing deep inside pandas.

Only a label is required (``[label]``, or ``cancer`` in ``[columns]``): a table with one row per lesion or
per woman and no image files loads as it is. Without an image id each row is its own image (named by its
file line); without a woman id each row is its own unit and the cohort declares women unidentified (eda
then reports no woman-level figures, and says so); without laterality (or a breast id) breasts are
unidentified in the same way. Codes outside a known scale (BI-RADS 0-6, density A-D) are flagged with
their lines in the cohort's notes and set to missing, so they never become levels of their own.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from mammo_insight.cohort.adapters.base import CohortDetails, DatasetAdapter
from mammo_insight.cohort.adapters.generic_mapping import (
    SHAPE_KEYS,
    as_strings,
    check_mapping,
    format_fields,
    read_mapping,
)
from mammo_insight.cohort.adapters.tables import file_lines, read_table
from mammo_insight.cohort.folds import TRAIN_ONLY_COLUMNS, flag_values
from mammo_insight.cohort.schema import DENSITIES, POST_OUTCOME_COLUMNS, UNITS, Cohort, empty_canonical
from mammo_insight.errors import CohortError
from mammo_insight.files import inside_dataset

log = logging.getLogger(__name__)

BIRADS_CODE = r"^[0-6](?:[abcABC]|\.0)?$"  # 4a/4b/4c are BI-RADS 4; "3.0" is 3
ROW_ID = "row"
DEFAULT_LABEL_MEANING = (
    "cancer = 1 where the label column holds a positive value (defined by the mapping file)."
)


def _formatted_paths(raw: pd.DataFrame, template: str, path: Path) -> pd.Series:
    """Each row's image path from ``image_path_format``; None where a field's cell is missing."""
    fields = list(dict.fromkeys(format_fields(template, path)))
    cells = raw[fields]
    complete = cells.notna().all(axis=1)
    return pd.Series(
        [
            template.format_map(dict(zip(fields, values, strict=True))) if ok else None
            for ok, values in zip(complete, cells.itertuples(index=False, name=None), strict=True)
        ],
        index=raw.index,
        dtype=object,
    )


def _annotations(raw: pd.DataFrame, image_ids: pd.Series, spec: dict[str, str], csv: Path) -> pd.DataFrame:
    """One lesion per row whose coordinate cells are all filled; rows with none of them give no lesion.

    A row with only some of them, a cell that is not a finite number, an empty box (x1 <= x0 or
    y1 <= y0) or a radius <= 0 stops the load naming the CSV, the column and the line.
    """
    shape = "box" if "x0" in spec else "circle"
    keys = SHAPE_KEYS[shape]
    cells = raw[[spec[k] for k in keys]].set_axis(keys, axis=1)
    filled = cells.notna()
    partial = filled.any(axis=1) & ~filled.all(axis=1)
    if partial.any():
        row = int(partial.to_numpy().argmax())
        empty_key = next(k for k in keys if not filled.iloc[row][k])
        raise CohortError(
            f"generic: {csv} line {row + 2}: annotation column '{spec[empty_key]}' ({empty_key}) is empty "
            f"while the row's other {shape} columns are filled"
        )
    numbers = cells.apply(pd.to_numeric, errors="coerce").astype("float64")
    for key in keys:
        bad = filled[key] & ~numbers[key].between(-float("inf"), float("inf"), inclusive="neither")
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise CohortError(
                f"generic: {csv} line {row + 2}: annotation column '{spec[key]}' ({key}) holds "
                f"{cells[key].iloc[row]!r}, not a finite number"
            )
    if shape == "box":
        bad = (numbers["x1"] <= numbers["x0"]) | (numbers["y1"] <= numbers["y0"])
        problem = "an empty box (x1 <= x0 or y1 <= y0)"
    else:
        bad = numbers["radius"] <= 0
        problem = "a radius <= 0"
    if bad.any():
        row = int(bad.to_numpy().argmax())
        columns = ", ".join(f"'{spec[k]}'" for k in keys)
        raise CohortError(f"generic: {csv} line {row + 2}: annotation columns {columns} give {problem}")
    keep = filled.all(axis=1).to_numpy() & image_ids.notna().to_numpy()
    lesions = numbers[keep].assign(image_id=image_ids[keep].astype(str).to_numpy(), shape=shape)
    if "abnormality" in spec:
        lesions["abnormality"] = raw.loc[keep, spec["abnormality"]].to_numpy()
    return lesions.reset_index(drop=True)


def _one_row_per_image(table: pd.DataFrame, csv: Path) -> tuple[pd.DataFrame, list[int] | None]:
    """A table with one row per finding (annotations) collapsed to one row per image, and the kept rows'
    file lines (None when no image repeats).

    The rows of one image must agree on every column the cohort keeps; one that differs (a label
    taken from a per-finding column, say) stops the load naming the column, the image and the lines.
    """
    repeated = table["image_id"].notna() & table["image_id"].duplicated(keep=False)
    if not repeated.any():
        return table, None
    groups = table[repeated].astype("string").groupby(table.loc[repeated, "image_id"])
    for column in table.columns:
        differs = groups[column].nunique(dropna=False) > 1
        if differs.any():
            image = differs.index[int(differs.to_numpy().argmax())]
            rows = (table["image_id"] == image).to_numpy().nonzero()[0]
            raise CohortError(
                f"generic: {csv} holds several rows of image {image!r} ({file_lines(rows)}) that disagree on "
                f"'{column}'; with [annotations] the rows of one image may differ only in their lesion"
            )
    keep = (~table["image_id"].duplicated() | table["image_id"].isna()).to_numpy()
    return table[keep].reset_index(drop=True), [int(i) + 2 for i in keep.nonzero()[0]]


def _label(raw: pd.DataFrame, label: dict[str, Any], path: Path) -> pd.Series:
    """1 for positive values, 0 for negative ones (or for every other value when no negatives are listed).

    Positive values that match no cell are an error: a typo there would silently make every label 0."""
    values = raw[label["column"]]
    positive = values.isin(as_strings(label["positive"]))
    if not positive.any():
        seen = sorted(values.dropna().astype(str).unique())
        raise CohortError(
            f"generic: {path} [label] positive = {label['positive']!r} matches no value of column "
            f"'{label['column']}'; it holds {seen[:10]}{' ...' if len(seen) > 10 else ''}"
        )
    negative = (
        values.isin(as_strings(label["negative"])) if "negative" in label else values.notna() & ~positive
    )
    return pd.Series(1.0, index=raw.index).where(positive, pd.Series(0.0, index=raw.index).where(negative))


def _image_paths(cells: pd.Series, image_root: Path, path: Path, source: str) -> pd.Series:
    """Absolute paths under image_root; a path that escapes it (.., absolute elsewhere) stops the load.

    ``source`` names where the paths came from in the message: a column, or the mapping's format."""
    base = os.path.normpath(image_root.absolute())
    resolved = cells.map(lambda v: os.path.normpath(os.path.join(base, v)) if isinstance(v, str) else None)
    outside = resolved.map(lambda p: isinstance(p, str) and os.path.commonpath([base, p]) != base)
    if outside.any():
        shown = ", ".join(repr(v) for v in cells[outside].head(3))
        raise CohortError(
            f"generic: {source} points outside the image root {base} in "
            f"{file_lines(outside.to_numpy().nonzero()[0])} ({shown}); fix the CSV or "
            f"'image_root' in {path}"
        )
    return resolved


def _continuous(series: pd.Series, column: str, csv: Path) -> pd.Series:
    numeric = pd.to_numeric(series, errors="coerce")
    junk = numeric.isna() & series.notna()
    if junk.any():
        raise CohortError(
            f"generic: continuous factor '{column}' in {csv} holds non-numeric value(s) "
            f"{sorted(set(series[junk]))[:5]} in {file_lines(junk.to_numpy().nonzero()[0])}; "
            "add them to missing_values or declare the factor categorical"
        )
    return numeric.astype("float64")


def _post_outcome(spec: dict[str, Any], table: pd.DataFrame, path: Path) -> list[str]:
    """The canonical post-outcome columns (birads, biopsy, invasive, difficult_negative_case) plus the mapping's
    ``post_outcome`` list, which names canonical columns or factors (source names)."""
    declared = spec.get("post_outcome", [])
    if not isinstance(declared, list) or not all(isinstance(c, str) for c in declared):
        raise CohortError(f"generic: {path} 'post_outcome' must be a list of column names, got {declared!r}")
    unknown = [c for c in declared if c not in table.columns]
    if unknown:
        raise CohortError(
            f"generic: {path} 'post_outcome' names {unknown}, which are neither canonical columns "
            "nor [factors] of the mapping"
        )
    return list(dict.fromkeys([*POST_OUTCOME_COLUMNS, *declared]))


def _out_of_range(table: pd.DataFrame, columns: dict[str, str], csv: Path) -> list[str]:
    """Codes outside BI-RADS 0-6 or density A-D set to missing; one note per column naming values and lines."""
    notes = []
    checks = {
        "birads": (lambda v: v.astype(str).str.match(BIRADS_CODE), "BI-RADS is 0-6; 4a, 4b, 4c count as 4"),
        "density": (lambda v: v.astype(str).str.upper().isin(sorted(DENSITIES)), "density is A, B, C or D"),
    }
    for column, (valid, scale) in checks.items():
        if column not in columns:
            continue
        values = table[column]
        text = values.astype("string").str.strip()
        bad = text.notna() & ~valid(text.fillna(""))
        if bad.any():
            notes.append(
                f"generic: column '{columns[column]}' ({column}) of {csv.name} holds out-of-range value(s) "
                f"{sorted(set(text[bad]))[:5]} in {file_lines(bad.to_numpy().nonzero()[0])}: set to missing, "
                f"since {scale}"
            )
            log.warning(notes[-1])
            table[column] = values.mask(bad)
        if column == "birads":
            table[column] = table[column].astype("string").str.strip().str[0]
    return notes


def _identify_units(table: pd.DataFrame, columns: dict[str, str]) -> tuple[tuple[str, ...], list[str]]:
    """Fill ids the mapping does not give (each row its own image, woman, breast); the units really known."""
    known, notes = ["image"], []
    if "patient_id" in columns:
        known.append("patient")
    else:
        table["patient_id"] = table["image_id"]
        notes.append(
            "generic: no woman id mapped (patient_id): each row is its own unit; woman-level figures are unavailable"
        )
    if "breast_id" in columns or ("laterality" in columns and "patient_id" in columns):
        known.append("breast")
    else:
        table["breast_id"] = table["image_id"]
        if "patient_id" in columns:
            notes.append(
                "generic: no laterality or breast id mapped: breasts cannot be identified, each row counts as its own"
            )
    return tuple(u for u in UNITS if u in known), notes


def _table_path(root: Path, spec: dict[str, Any], mapping: Path | None) -> Path:
    """The mapping's 'csv' under the dataset root: '..', an absolute path or a link out of the root (but
    a folder link the user made in the root) are refused, as for image paths; a mapping names the
    dataset's own table, never another file of the machine."""
    csv = root / spec["csv"]
    text_inside = os.path.commonpath([os.path.normpath(root.absolute()), os.path.normpath(csv.absolute())])
    if text_inside != os.path.normpath(root.absolute()) or not inside_dataset(csv, root):
        raise CohortError(
            f"generic: 'csv' in {mapping} ({spec['csv']!r}) leads out of the dataset root {root}; "
            "give the table's path relative to --root"
        )
    return csv


class GenericAdapter(DatasetAdapter):
    name = "generic"
    label_meaning = DEFAULT_LABEL_MEANING

    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        spec = read_mapping(mapping)
        csv, raw = _read_raw(root, spec, mapping)
        check_mapping(spec, raw, mapping, csv)
        columns: dict[str, str] = spec.get("columns", {})
        table = _canonical_table(spec, raw, mapping, csv)
        image_root = root / spec.get("image_root", ".")
        _fill_images(table, raw, spec, image_root, mapping)
        notes = _out_of_range(table, columns, csv)
        lesions, lines = None, None
        if "annotations" in spec:
            table["image_id"] = table["image_id"].map(
                lambda v: v.strip() or None if isinstance(v, str) else v
            )
            lesions = _annotations(raw, table["image_id"], spec["annotations"], csv)
            table, lines = _one_row_per_image(table, csv)
        known_units, unit_notes = _identify_units(table, columns)
        details = CohortDetails(
            label_meaning=spec.get("label_meaning", DEFAULT_LABEL_MEANING),
            post_outcome=_post_outcome(spec, table, mapping),
            factors=spec.get("factors", {}),
            known_units=known_units,
            notes=[*unit_notes, *notes],
            row_unit=spec.get("row_unit"),
            kind=spec.get("cohort_kind"),
        )
        return self.cohort(
            table,
            source=f"{csv} (mapped by {mapping})",
            details=details,
            annotations=lesions,
            laterality_may_be_unknown="laterality" not in columns,
            image_root=image_root,
            lines=lines,
        )


def _read_raw(root: Path, spec: dict[str, Any], mapping: Path | None) -> tuple[Path, pd.DataFrame]:
    """The mapped CSV and its cells, the mapping's missing values (and empty cells) made missing."""
    csv = _table_path(root, spec, mapping)
    if not csv.is_file():
        raise CohortError(f"generic: table {csv} (key 'csv' in {mapping}) does not exist")
    raw = read_table(csv, sep=spec.get("sep", ","))
    if raw.empty:
        raise CohortError(f"generic: {csv} has no data rows")
    missing = {"", *as_strings(spec.get("missing_values", []))}
    return csv, raw.mask(raw.isin(missing))


def _canonical_table(
    spec: dict[str, Any], raw: pd.DataFrame, mapping: Path | None, csv: Path
) -> pd.DataFrame:
    """The canonical table filled from the mapped columns and factors: recoded, train-only flags read,
    continuous factors made numeric, the label derived from [label]."""
    columns: dict[str, str] = spec.get("columns", {})
    factors: dict[str, str] = spec.get("factors", {})
    table = empty_canonical(len(raw))
    for canonical, source in columns.items():
        table[canonical] = raw[source].to_numpy()
    for column in factors:
        if column not in table.columns:
            table[column] = raw[column].to_numpy()
    for column, recode in spec.get("values", {}).items():
        if column not in table.columns:
            raise CohortError(
                f"generic: {mapping} [values.{column}] names a column that is neither a mapped "
                f"canonical column nor a factor"
            )
        table[column] = table[column].replace({str(k): v for k, v in recode.items()})
    for flag in TRAIN_ONLY_COLUMNS:  # train-only rows: kept out of every validation fold
        if flag in columns:
            where = f"generic: column '{columns[flag]}' ({flag}) of {csv}"
            table[flag] = flag_values(
                table[flag], where, table["image_id"] if "image_id" in columns else None
            )
    for column, kind in factors.items():
        if kind == "continuous":
            table[column] = _continuous(table[column], column, csv)
    if "label" in spec:
        table[spec["label"].get("target", "cancer")] = _label(raw, spec["label"], mapping).to_numpy()
    return table


def _fill_images(
    table: pd.DataFrame, raw: pd.DataFrame, spec: dict[str, Any], image_root: Path, mapping: Path | None
) -> None:
    """Image paths (a column or the mapping's format) under ``image_root``; an image id from the path when
    none is mapped, or from the file line when there is no path either."""
    columns: dict[str, str] = spec.get("columns", {})
    if "image_path" in columns or "image_path_format" in spec:
        cells, named = (
            (raw[columns["image_path"]], f"image path column '{columns['image_path']}'")
            if "image_path" in columns
            else (_formatted_paths(raw, spec["image_path_format"], mapping), "'image_path_format'")
        )
        table["image_path"] = _image_paths(cells, image_root, mapping, named).to_numpy()
        if "image_id" not in columns:
            table["image_id"] = cells.to_numpy()
    elif "image_id" not in columns:
        table["image_id"] = [f"{ROW_ID}{line}" for line in range(2, len(table) + 2)]


ADAPTER = GenericAdapter()
