"""The generic adapter's TOML mapping file: read, type-checked, and checked against the table's header.

Everything a mapping can get wrong (an unknown key, a list where a name belongs, a column the CSV lacks,
an incomplete annotation shape) stops the load here, naming the mapping file and the key, before any
cell of the table is converted.
"""

from __future__ import annotations

import string
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd

from mammo_insight.cohort.folds import TRAIN_ONLY_COLUMNS
from mammo_insight.cohort.schema import CANONICAL_COLUMNS, COHORT_KINDS, LABEL_COLUMNS
from mammo_insight.errors import CohortError

KEYS = {
    "csv",
    "sep",
    "image_root",
    "missing_values",
    "label_meaning",
    "columns",
    "label",
    "values",
    "factors",
    "post_outcome",
    "annotations",
    "image_path_format",
    "row_unit",
    "cohort_kind",
}
LABEL_KEYS = {"column", "target", "positive", "negative"}
FACTOR_KINDS = {"categorical", "continuous"}
# [annotations]: canonical coordinate -> source column, one complete set per mapping (imaging.annotations)
SHAPE_KEYS = {"box": ("x0", "y0", "x1", "y1"), "circle": ("x", "y", "radius")}
ANNOTATION_KEYS = {*SHAPE_KEYS["box"], *SHAPE_KEYS["circle"], "abnormality"}


def read_mapping(path: Path | None) -> dict[str, Any]:
    if path is None:
        raise CohortError(
            "generic: a TOML mapping file is required (--mapping FILE.toml); "
            "see examples/cbis_ddsm_manifest.toml"
        )
    if not path.is_file():
        raise CohortError(f"generic: mapping file {path} does not exist")
    try:
        mapping = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CohortError(f"generic: {path} is not valid TOML: {exc}") from exc
    except RecursionError:
        raise CohortError(f"generic: {path} nests tables or arrays too deeply to read") from None
    unknown = sorted(set(mapping) - KEYS)
    if unknown:
        raise CohortError(f"generic: {path} has unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
    if "csv" not in mapping:
        raise CohortError(
            f"generic: {path} lacks the key 'csv' (the table's path relative to the dataset root)"
        )
    _check_types(mapping, path)
    return mapping


SCALAR = (str, int, float, bool)


def _check_types(mapping: dict[str, Any], path: Path) -> None:
    """Each key holds what it must (a list or a number where a name belongs is named, not str()-ed)."""
    _check_scalars(mapping, path)
    _check_tables(mapping, path)
    _check_label_and_recodes(mapping, path)


def _expect(path: Path, where: str, value: Any, ok: bool, what: str) -> None:
    """Stop the load naming the mapping, the key and the value when ``ok`` is false."""
    if not ok:
        raise CohortError(f"generic: {path} {where} must be {what}, got {value!r}")


def _is_values(value: Any) -> bool:
    """A scalar or a list of scalars: what positive, negative and missing_values may hold."""
    items = value if isinstance(value, list) else [value]
    return all(isinstance(v, SCALAR) for v in items)


def _check_scalars(mapping: dict[str, Any], path: Path) -> None:
    """The top-level keys that hold one value: cohort_kind, the strings, missing_values."""
    if "cohort_kind" in mapping:
        _expect(
            path,
            "'cohort_kind'",
            mapping["cohort_kind"],
            mapping["cohort_kind"] in COHORT_KINDS,
            f"one of {', '.join(COHORT_KINDS)}",
        )
    for key in ("csv", "sep", "image_root", "label_meaning", "image_path_format", "row_unit"):
        if key in mapping:
            _expect(path, f"'{key}'", mapping[key], isinstance(mapping[key], str), "a string")
    if "missing_values" in mapping:
        value = mapping["missing_values"]
        _expect(path, "'missing_values'", value, _is_values(value), "a value or a list of values")


def _check_tables(mapping: dict[str, Any], path: Path) -> None:
    """The TOML tables are tables, and those naming source columns hold strings."""
    for table in ("columns", "factors", "label", "values", "annotations"):
        value = mapping.get(table, {})
        _expect(path, f"[{table}]", value, isinstance(value, dict), "a table")
    for table in ("columns", "factors", "annotations"):
        for key, value in mapping.get(table, {}).items():
            _expect(path, f"[{table}] {key}", value, isinstance(value, str), "a string")


def _check_label_and_recodes(mapping: dict[str, Any], path: Path) -> None:
    """[label] names columns and lists values; each [values.COLUMN] maps old values to single new ones."""
    label = mapping.get("label", {})
    for key in ("column", "target"):
        if key in label:
            _expect(
                path, f"[label] {key}", label[key], isinstance(label[key], str), "a column name (a string)"
            )
    for key in ("positive", "negative"):
        if key in label:
            _expect(path, f"[label] {key}", label[key], _is_values(label[key]), "a value or a list of values")
    for column, recode in mapping.get("values", {}).items():
        _expect(path, f"[values.{column}]", recode, isinstance(recode, dict), "a table of old = new values")
        for old, new in recode.items():
            _expect(path, f"[values.{column}] {old}", new, isinstance(new, SCALAR), "a single value")


def as_strings(values: Any) -> list[str]:
    """TOML lists or scalars of any type, compared with CSV cells as text."""
    items = values if isinstance(values, list) else [values]
    return [str(v) for v in items]


def check_mapping(mapping: dict[str, Any], raw: pd.DataFrame, path: Path, csv: Path) -> None:
    columns = mapping.get("columns", {})
    bad_names = sorted(set(columns) - set(CANONICAL_COLUMNS) - set(TRAIN_ONLY_COLUMNS))
    if bad_names:
        raise CohortError(
            f"generic: {path} [columns] names non-canonical column(s) {bad_names}; "
            f"keys must be canonical names ({', '.join(CANONICAL_COLUMNS)}) or the train-only flags "
            f"({', '.join(TRAIN_ONLY_COLUMNS)})"
        )
    label = mapping.get("label", {})
    if not label and not set(LABEL_COLUMNS) & set(columns):
        raise CohortError(
            f"generic: {path} needs a label: a [label] table (column, positive) or 'cancer' in [columns]"
        )
    if set(label) - LABEL_KEYS:
        raise CohortError(f"generic: {path} [label] has unknown key(s) {sorted(set(label) - LABEL_KEYS)}")
    if label and ("column" not in label or "positive" not in label):
        raise CohortError(f"generic: {path} [label] needs 'column' and 'positive'")
    target = label.get("target", "cancer")
    if label and target not in LABEL_COLUMNS:
        raise CohortError(f"generic: {path} [label] target '{target}' must be one of {LABEL_COLUMNS}")
    if label and target in columns:
        raise CohortError(f"generic: {path} maps '{target}' both in [columns] and in [label]; keep one")
    bad_kinds = {c: k for c, k in mapping.get("factors", {}).items() if k not in FACTOR_KINDS}
    if bad_kinds:
        raise CohortError(
            f"generic: {path} [factors] kinds must be 'categorical' or 'continuous', got {bad_kinds}"
        )
    _check_annotation_keys(mapping.get("annotations"), path)
    if "image_path_format" in mapping and "image_path" in columns:
        raise CohortError(
            f"generic: {path} gives both 'image_path_format' and [columns] image_path; keep one"
        )
    named = [
        *columns.values(),
        *([label["column"]] if label else []),
        *mapping.get("factors", {}),
        *mapping.get("annotations", {}).values(),
        *format_fields(mapping.get("image_path_format"), path),
    ]
    absent = [c for c in dict.fromkeys(named) if c not in raw.columns]
    if absent:
        raise CohortError(
            f"generic: {path} names column(s) {absent} that {csv} lacks; the CSV has {list(raw.columns)}"
        )


def format_fields(template: str | None, path: Path) -> list[str]:
    """The source columns an ``image_path_format`` names ("images/{study_id}/{image_id}.dicom").

    Only plain {column} fields: a conversion, a format spec or an attribute/index lookup is refused,
    so a cell can only be pasted in, never evaluated."""
    if template is None:
        return []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise CohortError(f"generic: {path} 'image_path_format' {template!r} is malformed: {exc}") from exc
    fields = [field for _, field, spec, conversion in parts if field is not None]
    plain = all(
        field and not set(field) & set(".[]") and not spec and conversion is None
        for _, field, spec, conversion in parts
        if field is not None
    )
    if not fields or not plain:
        raise CohortError(
            f"generic: {path} 'image_path_format' {template!r} must name source columns as plain "
            "{column} fields, e.g. 'images/{study_id}/{image_id}.dicom'"
        )
    return fields


def _check_annotation_keys(spec: dict[str, str] | None, path: Path) -> None:
    """[annotations] names exactly one complete shape: x0, y0, x1, y1 (box) or x, y, radius (circle)."""
    if spec is None:
        return
    unknown = sorted(set(spec) - ANNOTATION_KEYS)
    if unknown:
        raise CohortError(
            f"generic: {path} [annotations] has unknown key(s) {unknown}; allowed: x0, y0, x1, y1 (a box), "
            "x, y, radius (a circle), abnormality"
        )
    complete = [shape for shape, keys in SHAPE_KEYS.items() if set(keys) <= set(spec)]
    coordinates = set(spec) - {"abnormality"}
    if len(complete) != 1 or coordinates != set(SHAPE_KEYS[complete[0]]):
        raise CohortError(
            f"generic: {path} [annotations] must name the columns of one shape: x0, y0, x1, y1 (a box) or "
            f"x, y, radius (a circle); it names {sorted(coordinates)}"
        )
