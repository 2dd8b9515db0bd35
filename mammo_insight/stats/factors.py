"""Which columns the study analyses, and how: the factor list and the tidy analysis frame.

A factor is a column seen as levels (categorical, or ordinal when its levels have an order) or as a
number (continuous). The canonical columns have fixed roles; a dataset's extra columns come from
``Cohort.factors`` (declared by the adapter or the TOML mapping) or, failing that, are guessed from
their values. Columns that cannot be analysed (empty, constant, identifier-like) are skipped with a
note that the report shows, so nothing disappears silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import polars as pl

from mammo_insight.cohort.schema import CANONICAL_COLUMNS, POST_OUTCOME_COLUMNS

AGE_BANDS = ["<40", "40-49", "50-59", "60-69", "70-79", "80+"]
AGE_EDGES = [-np.inf, 40, 50, 60, 70, 80, np.inf]
MISSING = "missing"
MAX_LEVELS = 30  # more distinct values than this looks like an identifier, not a factor
MIN_CONTINUOUS_VALUES = 12  # a numeric extra column with more distinct values is treated as continuous
UNIT_IDS = {"image": "image_id", "breast": "breast_id", "patient": "patient_id"}
# Canonical columns analysed as levels, in report order; birads is shown but flagged post-outcome.
CANONICAL_FACTORS = [
    "age_band",
    "density",
    "view",
    "laterality",
    "site_id",
    "machine_id",
    "implant",
    "birads",
]
ORDERED = {"age_band": AGE_BANDS, "density": ["A", "B", "C", "D"]}
YES_NO = {"0": "no", "1": "yes"}
NOT_FACTORS = {
    "patient_id",
    "image_id",
    "breast_id",
    "image_path",
    "study_id",
    "accession_id",
    "file",
    "cancer",
    "age",
    "biopsy",
    "invasive",
    "difficult_negative_case",
}


@dataclass(frozen=True)
class Factor:
    """One analysed column. ``levels`` is the display order (``missing`` last when present)."""

    name: str
    kind: str  # "categorical", "ordinal" or "continuous"
    levels: tuple[str, ...] = ()
    post_outcome: bool = False  # decided after the outcome, or flagged leaky by the audit
    binned_from: str = ""  # the continuous column these bands cut (age_band <- age): not a model term

    @property
    def ordered(self) -> bool:
        return self.kind == "ordinal"


def _as_levels(values: pd.Series) -> pd.Series:
    """Strings without a spurious '.0' (BIRADS 1.0 -> '1'), empty cells as ``missing``."""
    if pd.api.types.is_numeric_dtype(values):
        numeric = values.astype(float)
        present = numeric.dropna().unique()
        whole = bool((present == np.round(present)).all())
        text = numeric.map({v: (f"{v:.0f}" if whole else f"{v:g}") for v in present})
    else:
        text = values.astype("string").str.strip()
    return text.astype(object).where(text.notna(), MISSING).astype(str)


def age_bands(age: pd.Series) -> pd.Series:
    """<40, 40-49, ..., 80+; missing ages become ``missing``."""
    bands = pd.cut(pd.to_numeric(age, errors="coerce"), AGE_EDGES, right=False, labels=AGE_BANDS)
    return bands.astype("object").where(bands.notna(), MISSING).astype(str)


def quartiles(values: pd.Series) -> pd.Series:
    """Quartile bands labelled by the values they hold ('Q1 1-2', 'Q2 3'), so labels never overlap even
    when a tied value sits on a cut (qcut's edges would say 'Q1 1-3', 'Q2 3-4')."""
    codes = pd.qcut(values, 4, labels=False, duplicates="drop")
    span = values.groupby(codes).agg(["min", "max"])
    labels = {
        int(i): f"Q{int(i) + 1} {lo:.3g}" + ("" if lo == hi else f"-{hi:.3g}")
        for i, (lo, hi) in span.iterrows()
    }
    return codes.map(labels).astype(object).where(codes.notna(), MISSING).astype(str)


def _band_start(label: str) -> int:
    """Q1 < Q2 < ...: bands sort by their number."""
    return int(label.split()[0][1:])


def _sort_levels(levels: list[str], order: list[str] | None) -> tuple[str, ...]:
    present = [lv for lv in levels if lv != MISSING]
    if order:
        head = [lv for lv in order if lv in present]
        present = head + sorted(lv for lv in present if lv not in order)
    else:
        numeric = pd.to_numeric(pd.Series(present), errors="coerce")
        present = (
            [present[i] for i in np.argsort(numeric.to_numpy(), kind="stable")]
            if numeric.notna().all()
            else sorted(present)
        )
    return tuple(present + ([MISSING] if MISSING in levels else []))


def _guess_kind(values: pd.Series) -> str:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum() and numeric.nunique() > MIN_CONTINUOUS_VALUES:
        return "continuous"
    return "categorical"


@dataclass
class StudyFrame:
    """The rows with a known label (ids as integer codes), one column per factor, and the notes on what was skipped."""

    frame: pl.DataFrame
    factors: list[Factor]
    notes: list[str]
    n_unlabelled: int


@dataclass
class _FrameBuilder:
    """The analysis frame's columns, factors and notes as they are decided, column by column."""

    data: dict[str, pd.Series | np.ndarray]
    factors: list[Factor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, name: str, values: pd.Series, kind: str, post_outcome: bool = False, binned_from: str = ""
    ) -> None:
        """Keep ``name`` as a factor unless it is empty, single-valued or identifier-like (noted)."""
        if values.isna().all() if kind == "continuous" else (values == MISSING).all():
            self.notes.append(f"'{name}' is empty for every image: not analysed.")
            return
        if kind == "continuous":
            self.data[name] = pd.to_numeric(values, errors="coerce").astype(float)
            self.factors.append(Factor(name, kind, post_outcome=post_outcome))
            return
        distinct = values[values != MISSING].nunique()
        if distinct < 2:
            self.notes.append(f"'{name}' has a single recorded value: not analysed.")
            return
        if distinct > MAX_LEVELS:
            self.notes.append(f"'{name}' has {distinct} distinct values (identifier-like): not analysed.")
            return
        self.data[name] = values
        order = ORDERED.get(name) or (
            sorted(set(values) - {MISSING}, key=_band_start) if binned_from else None
        )
        self.factors.append(
            Factor(name, kind, _sort_levels(list(values.unique()), order), post_outcome, binned_from)
        )


def _canonical_factors(frame: _FrameBuilder, labelled: pd.DataFrame, flagged: Callable[[str], bool]) -> None:
    for name in CANONICAL_FACTORS:
        if name == "age_band":
            if labelled["age"].notna().any():
                frame.add(
                    "age_band", age_bands(labelled["age"]), "ordinal", flagged("age"), binned_from="age"
                )
                if flagged("age"):
                    frame.notes.append(
                        "'age' is flagged by the leakage audit: its bands are shown, never tested or modelled."
                    )
            else:
                frame.notes.append("'age' is empty for every image: no age bands and no age trend.")
            continue
        values = _as_levels(labelled[name])
        if name == "implant":
            values = values.replace(YES_NO)
        frame.add(name, values, "ordinal" if name in ORDERED else "categorical", post_outcome=flagged(name))


def _extra_factors(
    frame: _FrameBuilder,
    table: pd.DataFrame,
    labelled: pd.DataFrame,
    declared: dict[str, str],
    flagged: Callable[[str], bool],
) -> None:
    """The dataset's own columns: the declared ones, or all of them guessed from their values."""
    extras = [c for c in table.columns if c not in CANONICAL_COLUMNS and c not in NOT_FACTORS]
    undeclared = [c for c in extras if declared and c not in declared]
    if undeclared:
        frame.notes.append(
            f"Extra column(s) {', '.join(undeclared)} not declared as factors by the dataset: "
            "not analysed (they still appear in the leakage audit)."
        )
    for col in (c for c in extras if c not in undeclared):
        kind = declared.get(col) or _guess_kind(labelled[col])
        if kind not in ("categorical", "continuous"):
            frame.notes.append(
                f"'{col}' is declared as '{kind}', expected categorical or continuous: not analysed."
            )
            continue
        if kind == "continuous":
            numeric = pd.to_numeric(labelled[col], errors="coerce")
            frame.add(col, numeric, kind, post_outcome=flagged(col))
            if numeric.nunique() >= 4:
                frame.add(
                    f"{col}_quartile",
                    quartiles(numeric),
                    "ordinal",
                    post_outcome=flagged(col),
                    binned_from=col,
                )
        else:
            frame.add(col, _as_levels(labelled[col]), kind, post_outcome=flagged(col))
    for col in declared:
        if col not in table.columns:
            frame.notes.append(f"'{col}' is declared as a factor but is not a column of the table.")


def build_study_frame(
    table: pd.DataFrame,
    extra_factors: dict[str, str] | None = None,
    leaky: set[str] | frozenset[str] = frozenset(),
    post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS),
) -> StudyFrame:
    """Turn the canonical table into the analysis frame (polars) and decide the factor list.

    ``extra_factors`` (Cohort.factors) names the extra columns to analyse; when it is empty they are
    guessed from their values. Columns in ``post_outcome`` (Cohort.post_outcome, the adapter's declaration)
    or in ``leaky`` (the leakage audit's verdict) are shown but flagged: never tested, never a model term.
    """
    labelled = table[table["cancer"].notna()]
    n_unlabelled = len(table) - len(labelled)
    frame = _FrameBuilder(
        {
            "patient_id": _id_codes(labelled["patient_id"]),
            "breast_id": _id_codes(labelled["breast_id"]),
            "image_id": _id_codes(labelled["image_id"]),
            "cancer": labelled["cancer"].astype(float),
            "age": pd.to_numeric(labelled["age"], errors="coerce").astype(float),
        }
    )
    if n_unlabelled:
        frame.notes.append(
            f"{n_unlabelled} image(s) without a cancer label are left out of every rate and model."
        )

    def flagged(name: str) -> bool:
        return name in post_outcome or name in leaky

    _canonical_factors(frame, labelled, flagged)
    _extra_factors(frame, table, labelled, dict(extra_factors or {}), flagged)
    data = pl.from_pandas(pd.DataFrame(frame.data).reset_index(drop=True))
    return StudyFrame(data, frame.factors, frame.notes, n_unlabelled)


def _id_codes(ids: pd.Series) -> np.ndarray:
    """Integer codes in the ids' sorted order: polars groups a million integers far faster than strings,
    and sorted codes keep every grouping (and its order) as the ids gave it."""
    return pd.factorize(ids.astype(str), sort=True)[0].astype(np.int64)


def constant_within(frame: pl.DataFrame, columns: Sequence[str], unit: str) -> set[str]:
    """The ``columns`` that take one value per unit (breast, patient) in at least 99% of units.

    One group-by for all columns: at a million images each group-by costs a fraction of a second.
    """
    if unit == "image" or not columns:
        return set(columns)
    per_unit = frame.group_by(UNIT_IDS[unit]).agg(pl.col(c).n_unique() for c in columns)
    return {c for c in columns if float((per_unit[c] == 1).mean()) >= 0.99}
