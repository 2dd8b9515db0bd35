"""Reading the metadata tables that datasets ship (CSV, xlsx, xls) with messages that name the file.

Every value is read as stripped text so that adapters decide types themselves and validate_cohort
can name the rows holding junk. Excel readers are optional dependencies (extra ``excel``).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from mammo_insight.cohort.schema import file_lines
from mammo_insight.errors import CohortError

__all__ = [
    "check_column_case",
    "drop_trailing_blank_rows",
    "file_lines",
    "first_present",
    "read_table",
    "require_columns",
]

EXCEL_READERS = {".xlsx": "openpyxl", ".xlsm": "openpyxl", ".xls": "xlrd"}


def read_table(path: Path, sep: str | None = ",") -> pd.DataFrame:
    """A CSV or Excel sheet as a DataFrame of stripped strings ('' for empty); headers stripped too.

    sep=None sniffs the CSV delimiter (INbreast.csv uses ';').
    """
    suffix = path.suffix.lower()
    try:
        if suffix in EXCEL_READERS:
            package = EXCEL_READERS[suffix]
            if importlib.util.find_spec(package) is None:
                raise CohortError(
                    f"reading {path} needs the optional package '{package}': "
                    f"pip install 'mammo-insight[excel]' (or export the sheet as CSV)"
                )
            read = functools.partial(pd.read_excel, path, dtype=str, keep_default_na=False, engine=package)
        else:
            engine = "python" if sep is None else "c"
            read = functools.partial(
                pd.read_csv, path, dtype=str, keep_default_na=False, sep=sep, engine=engine
            )
        raw = read()
        _refuse_repeated_columns(read(header=None, nrows=1), path)
    except CohortError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CohortError(f"cannot read {path}: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.empty:
        return raw
    raw = raw.apply(lambda col: col.astype(str).str.strip())
    return drop_trailing_blank_rows(raw)


def _refuse_repeated_columns(header: pd.DataFrame, path: Path) -> None:
    """Two columns of one name (two 'cancer' columns that disagree): pandas would keep both as 'cancer' and
    'cancer.1' and every reader would take the first in silence, so the table is refused instead."""
    if header.empty:
        return
    names = [str(v).strip() for v in header.iloc[0].tolist() if isinstance(v, str) and v.strip()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CohortError(
            f"{path}: column(s) {', '.join(repr(n) for n in repeated)} appear more than once in the header "
            "(line 1); keep one of each (which one holds the truth is not guessed)"
        )


def drop_trailing_blank_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """Spreadsheets often end in empty rows; only trailing ones go, so file line numbers stay right."""
    filled = (raw != "").any(axis=1).to_numpy()
    last = filled.nonzero()[0]
    return raw.iloc[: last[-1] + 1 if len(last) else 0]


def require_columns(raw: pd.DataFrame, columns: Iterable[str], path: Path, dataset: str) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise CohortError(
            f"{dataset}: {path} lacks column(s) {', '.join(repr(c) for c in missing)}; "
            f"it has {', '.join(repr(c) for c in raw.columns)}"
        )


def first_present(raw: pd.DataFrame, names: Iterable[str]) -> str | None:
    """The first of several spellings of one column that the table uses (CBIS: 'breast density'/'breast_density')."""
    return next((n for n in names if n in raw.columns), None)


def check_column_case(raw: pd.DataFrame, columns: Iterable[str], path: Path, dataset: str) -> None:
    """A column the layout defines but spelled in other case ('Cancer') is named, not silently ignored."""
    lower = {str(c).lower(): c for c in raw.columns}
    wrong = [(lower[c.lower()], c) for c in columns if c not in raw.columns and c.lower() in lower]
    if wrong:
        raise CohortError(
            f"{dataset}: {path} has column(s) {', '.join(f'{w!r} (expected {c!r})' for w, c in wrong)}; "
            "column names are case-sensitive"
        )
