"""The canonical table contract: each bad-table case stops with a message naming column and rows."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mammo_insight.cohort.schema import CANONICAL_COLUMNS, empty_canonical, validate_cohort
from mammo_insight.errors import CohortError


def good_table(n: int = 4) -> pd.DataFrame:
    t = empty_canonical(n)
    t["patient_id"] = ["p1", "p1", "p2", "p2"][:n]
    t["image_id"] = [f"i{i}" for i in range(n)]
    t["laterality"] = ["L", "R", "L", "R"][:n]
    t["view"] = "CC"
    t["age"] = [50, 50, 61, 61][:n]
    t["cancer"] = [0, 1, 0, 0][:n]
    return t


def test_valid_table_gets_breast_id_and_canonical_order():
    out = validate_cohort(good_table())
    assert list(out.columns) == CANONICAL_COLUMNS
    assert out["breast_id"].tolist() == ["p1_L", "p1_R", "p2_L", "p2_R"]
    assert out["cancer"].dtype == np.float64


def test_empty_table():
    with pytest.raises(CohortError, match="empty"):
        validate_cohort(good_table().iloc[:0])


def test_missing_column_is_named():
    with pytest.raises(CohortError, match=r"missing column\(s\) view"):
        validate_cohort(good_table().drop(columns=["view"]))


def test_wrong_type_names_column_and_row():
    t = good_table()
    t["age"] = t["age"].astype(object)
    t.loc[2, "age"] = "sixty"
    with pytest.raises(CohortError, match=r"'age' must be numeric; line\(s\) 4 .*'sixty'"):
        validate_cohort(t)


def test_unknown_laterality():
    t = good_table()
    t.loc[3, "laterality"] = "X"
    with pytest.raises(CohortError, match=re.escape("'laterality' has unknown value(s) ['X'] in line(s) 5")):
        validate_cohort(t)


def test_duplicate_image_id():
    t = good_table()
    t.loc[3, "image_id"] = "i1"
    with pytest.raises(
        CohortError, match=r"'image_id' must be unique; duplicated id\(s\) \['i1'\] in line\(s\) 3, 5"
    ):
        validate_cohort(t)


def test_label_outside_zero_one():
    t = good_table()
    t.loc[0, "cancer"] = 2
    with pytest.raises(CohortError, match=r"'cancer' is a 0/1 label but holds \[2.0\] in line\(s\) 2"):
        validate_cohort(t)


def test_unknown_label_stays_nan():
    t = good_table()
    t["cancer"] = [0, np.nan, 1, 0]
    assert validate_cohort(t)["cancer"].isna().sum() == 1


def test_messages_name_the_csv_line_an_editor_shows(tmp_path):
    """Rows are named as 1-based file lines (header = line 1): the named line holds the junk."""
    from mammo_insight.cohort.adapters import load_cohort

    rows = ["patient_id,image_id,laterality,view,age,cancer"] + [f"p{i},i{i},L,CC,50,0" for i in range(6)]
    rows[4] = "p3,i3,L,CC,fifty,0"
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(CohortError, match=r"line\(s\) (\d+) ") as info:
        load_cohort("rsna", tmp_path)
    line = int(re.search(r"line\(s\) (\d+) ", str(info.value)).group(1))
    assert "fifty" in (tmp_path / "train.csv").read_text().splitlines()[line - 1]


def test_rows_not_in_file_order_are_named_by_their_given_lines():
    t = good_table()
    t.loc[1, "laterality"] = "X"
    with pytest.raises(CohortError, match=re.escape("in line(s) 40")):
        validate_cohort(t, lines=[10 * (i + 3) for i in range(len(t))])


def test_unknown_laterality_is_allowed_only_when_asked_and_bad_values_still_fail():
    table = pd.DataFrame({c: [None, None] for c in CANONICAL_COLUMNS})
    table["patient_id"], table["image_id"] = ["p1", "p1"], ["a", "b"]
    table["laterality"], table["breast_id"] = ["L", None], ["p1_L", "p1_b"]
    with pytest.raises(CohortError, match="'laterality' must not be empty; line"):
        validate_cohort(table)
    out = validate_cohort(table, laterality_may_be_unknown=True)
    assert list(out["breast_id"]) == ["p1_L", "p1_b"] and out["laterality"].isna().sum() == 1
    table.loc[1, "laterality"] = "X"
    with pytest.raises(CohortError, match="unknown value"):
        validate_cohort(table, laterality_may_be_unknown=True)
