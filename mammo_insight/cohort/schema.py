"""The canonical cohort table: one row per image, the same columns for every dataset.

Every adapter returns this table, so statistics, preprocessing and models never care where
the data came from. Columns a dataset lacks are present and empty (NaN / None).
Labels are 1.0 / 0.0 / NaN (unknown), as in torchxrayvision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.errors import CohortError

STRING_COLUMNS = [
    "patient_id",
    "image_id",
    "breast_id",
    "laterality",
    "view",
    "site_id",
    "machine_id",
    "density",
    "image_path",
]
NUMERIC_COLUMNS = ["age", "birads", "implant", "cancer", "biopsy", "invasive", "difficult_negative_case"]
CANONICAL_COLUMNS = [
    "patient_id",
    "image_id",
    "breast_id",
    "laterality",
    "view",
    "age",
    "site_id",
    "machine_id",
    "density",
    "birads",
    "implant",
    "cancer",
    "biopsy",
    "invasive",
    "difficult_negative_case",
    "image_path",
]
LABEL_COLUMNS = ["cancer", "biopsy", "invasive", "difficult_negative_case", "implant"]
# Decided after the screening outcome: never a model input unless the user insists. This is RSNA's
# declaration (RsnaAdapter.post_outcome); every other adapter declares its own list. The canonical columns
# it names are post-outcome in whichever dataset fills them, so it is also the list of a Cohort whose source
# declares none (a cohort .parquet file, a table built in code).
POST_OUTCOME_COLUMNS = ["birads", "biopsy", "invasive", "difficult_negative_case"]
UNITS = ("image", "breast", "patient")
COHORT_KINDS = ("screening", "diagnostic", "biopsied lesions")
REQUIRED_VALUES = ["patient_id", "image_id", "laterality"]
LATERALITIES = {"L", "R"}
DENSITIES = {"A", "B", "C", "D"}
MAX_ROWS_SHOWN = 5


@dataclass
class Cohort:
    """A validated canonical table plus what the label means and any lesion annotations.

    annotations: one row per lesion in original pixel coordinates (x to the right, y down): circles
    (image_id, x, y, radius; ``shape`` may be absent), boxes (shape "box", x0, y0, x1, y1) or masks
    (shape "mask", mask_path); imaging.annotations owns the columns. Empty when the dataset has none.
    factors: extra (non-canonical) table columns worth analysing, column -> "categorical" or
    "continuous"; adapters and generic mapping files declare them so eda need not guess.
    post_outcome: the columns decided after the outcome (the adapter's declaration): the leakage audit
    calls them leaky whatever their AUC, eda never tests them, fuse-train never uses them unless asked.
    exposure: factors measured or set at acquisition from the breast itself (kVp, mAs, dose and filter
    chosen by automatic exposure control from its thickness and density; the thickness and force of its
    compression): adjusting the screening factors for them would take away part of density's and size's
    own effect, so eda fits them in a model of their own beside the screening factors.
    image_root: the folder the images were found under (the dataset root, a generic mapping's image_root,
    predict's folder); preprocess refuses a file whose real path lies outside it.
    known_units: the units whose ids are real (image, breast, patient); when a source cannot identify
    women (or breasts), their ids are placeholders (each image its own) and eda reports no figures there.
    row_unit: what one row is, in the words reports use ("image"; "mass" for a table of read masses).
    kind: the cohort's kind, one of COHORT_KINDS: a screening population, diagnostic exams, or biopsied
    lesions (whose "cancer rate" is the share of lesions that proved malignant, not a screening rate).
    notes: what loading did to the source (rows skipped, codes out of range): shown in the eda report.
    reports: listings from loading, name -> table (the DICOM scan's files not used, the outcomes' match
    report): written beside the cohort file and into eda's tables/.
    """

    table: pd.DataFrame
    dataset: str
    label_meaning: str
    annotations: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["image_id", "x", "y", "radius"])
    )
    factors: dict[str, str] = field(default_factory=dict)
    post_outcome: list[str] = field(default_factory=lambda: list(POST_OUTCOME_COLUMNS))
    exposure: list[str] = field(default_factory=list)
    image_root: Path | None = None  # None: paths unchecked (a cohort read from a table file)
    known_units: tuple[str, ...] = UNITS
    notes: list[str] = field(default_factory=list)
    reports: dict[str, pd.DataFrame] = field(default_factory=dict)
    row_unit: str = "image"
    kind: str = "screening"


def file_lines(positions: Iterable[int], lines: Sequence[int] | None = None) -> str:
    """0-based table rows as the 1-based file lines a user sees in an editor (the header is line 1).

    Every message of cohort validation names rows this way. ``lines``: the file line of each table row when
    the table is not the file's rows in order; by default row i is line i + 2 (a CSV read in order, or a
    table as the ``cohort`` command would write it).
    """
    idx = [int(i) for i in positions]
    shown = ", ".join(str(lines[i] if lines is not None else i + 2) for i in idx[:MAX_ROWS_SHOWN])
    more = f" and {len(idx) - MAX_ROWS_SHOWN} more" if len(idx) > MAX_ROWS_SHOWN else ""
    return f"line(s) {shown}{more}"


def _clean_str(series: pd.Series) -> pd.Series:
    out = series.astype("string").str.strip()
    return out.mask(out.isin(["", "nan", "None", "NaN", "<NA>"]))


def _numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(the values as float64, True where a filled cell is not a number).

    Each distinct value is parsed once (a million-row column holds a few hundred ages), then spread back.
    """
    codes, distinct = pd.factorize(values)  # empty cells get -1
    distinct = pd.Series(distinct, dtype=object)
    parsed = pd.to_numeric(distinct.replace({"True": 1, "False": 0, True: 1, False: 0}), errors="coerce")
    not_number = parsed.isna() & _clean_str(distinct.astype("string")).notna()
    numbers = np.append(parsed.to_numpy(dtype="float64"), np.nan)[codes]  # -1 picks the appended NaN
    bad = np.append(not_number.to_numpy(dtype=bool), False)[codes]
    return pd.Series(numbers, index=values.index), pd.Series(bad, index=values.index)


# an id that would lead a file path out of its folder: a '..' part, absolute, or a drive letter
ESCAPES_FOLDER = r"(?:^|[/\\])\.\.(?:[/\\]|$)|^[/\\]|^[^\W\d_]:"


def _escapes_folder(values: pd.Series) -> pd.Series:
    """True where an id would lead a file path out of its folder (vectorised: a million ids in a second)."""
    return values.str.contains(ESCAPES_FOLDER, regex=True).fillna(False).astype(bool)


# ids name cache files (ID.png, PATIENT/): no control character (a NUL ends a C path), and short enough that
# the file name stays under the 255 bytes every common file system allows
MAX_ID_BYTES = 200
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"


def _bad_file_name(values: pd.Series) -> pd.Series:
    """True where an id cannot be a file name: a control character, or over MAX_ID_BYTES in UTF-8."""
    control = values.str.contains(CONTROL_CHARACTERS, regex=True).fillna(False).astype(bool)
    too_long = values.str.len().fillna(0) * 4 > MAX_ID_BYTES  # only the long ones are encoded to count
    if too_long.any():
        too_long[too_long] = values[too_long].map(lambda v: len(v.encode("utf-8")) > MAX_ID_BYTES)
    return control | too_long.astype(bool)


def validate_cohort(
    table: pd.DataFrame,
    source: str = "cohort table",
    lines: Sequence[int] | None = None,
    *,
    laterality_may_be_unknown: bool = False,
) -> pd.DataFrame:
    """Check the canonical contract and return a copy with canonical dtypes and column order.

    Raises CohortError naming the column and the first offending rows as file lines (header = line 1;
    see :func:`file_lines`, ``lines`` gives each row's line when the table is not the file's rows in order).
    ``laterality_may_be_unknown``: unlabelled studies to score (predict's folder mode) may lack it; each
    such image is then its own breast.
    """
    if table is None or len(table) == 0:
        raise CohortError(f"{source}: the table is empty (no rows)")
    missing = [c for c in CANONICAL_COLUMNS if c not in table.columns and c != "breast_id"]
    if missing:
        raise CohortError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"expected the canonical columns {', '.join(CANONICAL_COLUMNS)}"
        )
    out = _canonical_types(table, source, lines)
    _check_required(out, source, lines, laterality_may_be_unknown=laterality_may_be_unknown)
    _check_codes(out, source, lines, laterality_may_be_unknown=laterality_may_be_unknown)
    _check_file_ids(out, source, lines)
    expected_breast = out["patient_id"] + "_" + out["laterality"]
    if "breast_id" not in out.columns or out["breast_id"].isna().all():
        out["breast_id"] = expected_breast
    else:
        out["breast_id"] = out["breast_id"].fillna(expected_breast)
        _check_breast_ids(out, source, lines)
    extra = [c for c in out.columns if c not in CANONICAL_COLUMNS]
    return out[CANONICAL_COLUMNS + extra]


def _rows(mask: pd.Series, lines: Sequence[int] | None) -> str:
    """The rows where ``mask`` holds, as the file lines every validation message names."""
    return file_lines(np.flatnonzero(mask.to_numpy()), lines)


def _canonical_types(table: pd.DataFrame, source: str, lines: Sequence[int] | None) -> pd.DataFrame:
    """A copy with string columns stripped (blank-like cells missing) and numeric columns as float64;
    a filled numeric cell that is not a number stops the load."""
    out = table.reset_index(drop=True).copy()
    for col in STRING_COLUMNS:
        if col in out.columns:
            out[col] = _clean_str(out[col])
    for col in NUMERIC_COLUMNS:
        numeric, bad = _numbers(out[col])
        if bad.any():
            example = out.loc[bad, col].iloc[0]
            raise CohortError(
                f"{source}: column '{col}' must be numeric; {_rows(bad, lines)} hold non-numeric "
                f"values such as {example!r}"
            )
        out[col] = numeric
    return out


def _check_required(
    out: pd.DataFrame, source: str, lines: Sequence[int] | None, *, laterality_may_be_unknown: bool
) -> None:
    """The ids and the side are filled in every row (the side may be empty when it may be unknown)."""
    required = [c for c in REQUIRED_VALUES if not (laterality_may_be_unknown and c == "laterality")]
    for col in required:
        empty = out[col].isna()
        if empty.any():
            raise CohortError(f"{source}: column '{col}' must not be empty; {_rows(empty, lines)} are empty")


def _check_codes(
    out: pd.DataFrame, source: str, lines: Sequence[int] | None, *, laterality_may_be_unknown: bool
) -> None:
    """Laterality L/R and density A-D (upper-cased in place), 0/1 labels and an age of 0-120."""
    out["laterality"] = out["laterality"].str.upper()
    bad_lat = ~out["laterality"].isin(list(LATERALITIES))
    if laterality_may_be_unknown:
        bad_lat &= out["laterality"].notna()
    if bad_lat.any():
        values = sorted(set(out.loc[bad_lat, "laterality"].astype(str)))[:MAX_ROWS_SHOWN]
        raise CohortError(
            f"{source}: column 'laterality' has unknown value(s) {values} in {_rows(bad_lat, lines)}; "
            "expected L or R (map others with a generic mapping file)"
        )
    out["density"] = out["density"].str.upper()
    bad_density = out["density"].notna() & ~out["density"].isin(list(DENSITIES))
    if bad_density.any():
        values = sorted(set(out.loc[bad_density, "density"].astype(str)))[:MAX_ROWS_SHOWN]
        raise CohortError(
            f"{source}: column 'density' has unknown value(s) {values} in {_rows(bad_density, lines)}; "
            "expected A, B, C or D"
        )
    for col in LABEL_COLUMNS:
        bad_label = out[col].notna() & ~out[col].isin([0.0, 1.0])
        if bad_label.any():
            values = sorted(set(out.loc[bad_label, col]))[:MAX_ROWS_SHOWN]
            raise CohortError(
                f"{source}: column '{col}' is a 0/1 label but holds {values} in {_rows(bad_label, lines)}"
            )
    bad_age = out["age"].notna() & ((out["age"] < 0) | (out["age"] > 120))
    if bad_age.any():
        raise CohortError(f"{source}: column 'age' must lie in 0-120; {_rows(bad_age, lines)} do not")


def _check_file_ids(out: pd.DataFrame, source: str, lines: Sequence[int] | None) -> None:
    """Patient and image ids name cache files, so each must be a safe file name; image ids are unique."""
    for col in ("patient_id", "image_id"):  # both name files in the image cache
        unsafe = _escapes_folder(out[col])
        if unsafe.any():
            values = list(dict.fromkeys(out.loc[unsafe, col]))[:MAX_ROWS_SHOWN]
            raise CohortError(
                f"{source}: column '{col}' names cache files, so it may not hold '..' or an absolute "
                f"path; {values} in {_rows(unsafe, lines)}"
            )
        bad_name = _bad_file_name(out[col])
        if bad_name.any():
            values = [v[:40] + ("..." if len(v) > 40 else "") for v in dict.fromkeys(out.loc[bad_name, col])]
            raise CohortError(
                f"{source}: column '{col}' names cache files, so it may not hold a control character or "
                f"more than {MAX_ID_BYTES} bytes; {values[:MAX_ROWS_SHOWN]} in {_rows(bad_name, lines)}"
            )
    dup = out["image_id"].duplicated(keep=False)
    if dup.any():
        values = list(dict.fromkeys(out.loc[dup, "image_id"]))[:MAX_ROWS_SHOWN]
        raise CohortError(
            f"{source}: column 'image_id' must be unique; duplicated id(s) {values} in {_rows(dup, lines)}"
        )


def _check_breast_ids(out: pd.DataFrame, source: str, lines: Sequence[int] | None) -> None:
    """A given breast id (RSNA's prediction_id) must name exactly one woman's one side, and each side one id.

    Breast ids are derived, never trusted: an id shared by two sides or two women would merge their images
    into one breast (its label, its AUC), and one side under two ids would split it."""
    if (out["patient_id"] == out["image_id"]).all():  # placeholder women (a generic mapping without them)
        return
    known = out["laterality"].notna()  # an image of unknown side is its own breast
    frame = out.loc[known, ["breast_id", "patient_id", "laterality"]].astype(str)
    side = frame["patient_id"] + "\x00" + frame["laterality"]
    merged = side.groupby(frame["breast_id"]).transform("nunique") > 1
    split = frame["breast_id"].groupby(side).transform("nunique") > 1
    for bad, what in ((merged, "names more than one woman's breast (patient_id, laterality)"), (split, "")):
        if bad.any():
            rows = file_lines(np.flatnonzero(known.to_numpy())[bad.to_numpy()], lines)
            ids = list(dict.fromkeys(frame.loc[bad, "breast_id"]))[:MAX_ROWS_SHOWN]
            what = what or "differs between images of one breast (same patient_id and laterality)"
            raise CohortError(
                f"{source}: the breast id (prediction_id) {what}: {ids} in {rows}; "
                "drop the column to derive it as patient_id + '_' + laterality"
            )


def label_conflicts(table: pd.DataFrame, label: str = "cancer") -> pd.DataFrame:
    """The breasts whose images disagree on the label (some 0, some 1), one row each.

    The rule every stage applies: a breast's label is the maximum of its images' (positive if any image
    is), as RSNA labels breasts; such a breast is counted positive, and listed here so it can be checked."""
    labelled = table.loc[table[label].notna(), ["breast_id", "patient_id", "laterality", label]]
    counts = labelled.groupby("breast_id", sort=True).agg(
        patient_id=("patient_id", "first"),
        laterality=("laterality", "first"),
        n_images=(label, "size"),
        n_positive=(label, "sum"),
    )
    conflicts = counts[(counts["n_positive"] > 0) & (counts["n_positive"] < counts["n_images"])]
    conflicts = conflicts.assign(n_positive=conflicts["n_positive"].astype(int), label_used=1)
    return conflicts.reset_index()


def empty_canonical(n: int) -> pd.DataFrame:
    """A table of n rows with every canonical column present and empty; adapters fill what they know."""
    data = {c: pd.Series([None] * n, dtype="object") for c in STRING_COLUMNS}
    data.update({c: pd.Series(np.full(n, np.nan)) for c in NUMERIC_COLUMNS})
    return pd.DataFrame(data)[CANONICAL_COLUMNS]
