"""Property-based tests (hypothesis) of the table validators and the generic mapping (issue 17).

Random tables (columns, cell types, quoting, ragged rows, text encodings) and random TOML mappings (keys,
value types, nesting) go through the same entry points as the CLI. The property: every outcome is either
a valid cohort (one that validate_cohort accepts again unchanged, with its required values present) or a
MammoInsightError, never another exception. A failure prints the smallest input hypothesis found.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.schema import CANONICAL_COLUMNS, REQUIRED_VALUES, Cohort, validate_cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging import annotations

pytestmark = pytest.mark.slow  # a few hundred examples each: tens of seconds on a busy machine

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RSNA_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "machine_id"]
PLAUSIBLE = [
    "",
    "L",
    "R",
    "CC",
    "MLO",
    "0",
    "1",
    "1.0",
    "0.0",
    "2",
    "-1",
    "55",
    "NA",
    "A",
    "D",
    " 1 ",
    "nan",
    "inf",
]
CELL = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.integers(-3, 120).map(str),
    st.text(max_size=6),  # commas, quotes, newlines, any unicode
    st.floats().map(repr),
)
COLUMN = st.one_of(
    st.sampled_from([*CANONICAL_COLUMNS, *RSNA_COLUMNS, "Cancer", "prediction_id", "BIRADS", ""]),
    st.text(min_size=1, max_size=5),
)
ENCODING = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"])


def _row(cells: list[str]) -> str:
    return ",".join(cells)


PLAUSIBLE_BY_COLUMN = {
    "site_id": st.sampled_from(["1", "2"]),
    "patient_id": st.sampled_from(["10", "11", "12"]),
    "laterality": st.sampled_from(["L", "R"]),
    "view": st.sampled_from(["CC", "MLO"]),
    "age": st.one_of(st.integers(30, 90).map(str), st.just("")),
    "cancer": st.sampled_from(["0", "1"]),
    "machine_id": st.sampled_from(["49", "21"]),
}


@st.composite
def csv_bytes(
    draw, modes: tuple[str, ...] = ("plausible", "spoiled", "anything"), repeat_images: bool = False
) -> bytes:
    """RSNA's layout with plausible cells, the same with a few cells, columns or bytes spoiled, or anything.

    ``repeat_images``: now and then a row repeated, as in a table with one row per finding."""
    mode = draw(st.sampled_from(modes))
    n_rows = draw(st.integers(1 if mode == "plausible" else 0, 6))
    if mode == "anything":
        columns = draw(st.lists(COLUMN, max_size=8))
        rows = [[draw(CELL) for _ in columns] for _ in range(n_rows)]
    else:
        columns = list(RSNA_COLUMNS)
        rows = [
            [str(1000 + i) if c == "image_id" else draw(PLAUSIBLE_BY_COLUMN[c]) for c in columns]
            for i in range(n_rows)
        ]
        if repeat_images and n_rows and draw(st.integers(0, 3)) == 0:
            rows += [list(rows[draw(st.integers(0, n_rows - 1))]) for _ in range(draw(st.integers(1, 2)))]
    if mode == "spoiled":
        for _ in range(draw(st.integers(1, 3))):
            what = draw(st.sampled_from(["cell", "cell", "column", "ragged"]))
            if what == "column":
                columns[draw(st.integers(0, len(columns) - 1))] = draw(COLUMN)
            elif rows and what == "cell":
                row = rows[draw(st.integers(0, len(rows) - 1))]  # a ragged row may be shorter than the header
                if row:
                    row[draw(st.integers(0, len(row) - 1))] = draw(CELL)
            elif rows:
                row = rows[draw(st.integers(0, len(rows) - 1))]
                row.extend(draw(st.lists(CELL, min_size=1, max_size=2))) if draw(st.booleans()) else row.pop()
    lines = ([_row(columns)] if columns or draw(st.booleans()) else []) + [_row(r) for r in rows]
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n", "\n\n"]))
    encoding = "utf-8" if mode == "plausible" else draw(ENCODING)
    return text.encode(encoding, errors="replace")


def _assert_valid(cohort: Cohort) -> None:
    assert isinstance(cohort, Cohort)
    table = cohort.table
    again = validate_cohort(table, source="round trip")
    pd.testing.assert_frame_equal(again, table)
    for column in REQUIRED_VALUES:
        assert table[column].notna().all(), column
    labels = table["cancer"].dropna()
    assert labels.isin([0.0, 1.0]).all()


def _outcome(load) -> None:
    """The property: a valid cohort or a MammoInsightError (anything else fails the test, with its input)."""
    try:
        cohort = load()
    except MammoInsightError as exc:
        assert str(exc).strip(), "an empty message"
        event("refused with a message")
        return
    _assert_valid(cohort)
    event("a valid cohort")  # --hypothesis-show-statistics: both outcomes occur, so the test is not vacuous


@PROPERTY
@given(body=csv_bytes())
def test_any_rsna_table_gives_a_valid_cohort_or_a_message(body: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train.csv").write_bytes(body)
        _outcome(lambda: load_cohort("rsna", root))


def _toml(value) -> str:
    """A TOML value (inline tables for dicts); JSON string escapes are valid TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, float):
        return (
            repr(value)
            if math.isfinite(value)
            else ("nan" if math.isnan(value) else f"{'-' if value < 0 else ''}inf")
        )
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"


SCALAR = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.floats(allow_nan=False))
ANY_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
SOURCE_COLUMN = st.sampled_from(RSNA_COLUMNS)
NAME_OR_JUNK = st.one_of(SOURCE_COLUMN, SOURCE_COLUMN, SOURCE_COLUMN, ANY_VALUE)


@st.composite
def mappings(draw) -> dict:
    """Sensible mappings over RSNA_COLUMNS, or ones with any key, value type or nesting now and then."""
    columns = {"patient_id": "patient_id", "image_id": "image_id", "laterality": "laterality"}
    if draw(st.integers(0, 2)):
        for canonical in draw(
            st.lists(st.sampled_from(["view", "age", "site_id", "machine_id"]), max_size=4)
        ):
            columns[canonical] = canonical
        mapping = {"csv": "t.csv", "columns": columns, "missing_values": ["NA"]}
        if draw(st.booleans()):
            mapping["label"] = {"column": "cancer", "positive": draw(st.sampled_from(["1", ["1", "1.0"], 1]))}
        if draw(st.booleans()):
            mapping["factors"] = {"machine_id": "categorical"}
        if draw(st.integers(0, 3)):
            valid = draw(
                st.sampled_from(
                    [("site_id", "cancer", "machine_id", "machine_id"), ("machine_id", "site_id", "site_id")]
                )
            )
            numeric = st.sampled_from(["site_id", "age", "machine_id", "cancer"])
            chosen = valid if draw(st.integers(0, 3)) else [draw(numeric) for _ in valid]
            mapping["annotations"] = dict(
                zip(
                    ("x0", "y0", "x1", "y1") if len(valid) == 4 else ("x", "y", "radius"), chosen, strict=True
                )
            )
        if draw(st.booleans()):
            mapping["image_path_format"] = draw(st.sampled_from(["{site_id}/{image_id}.png", "{age}.dcm"]))
        return mapping
    for canonical in draw(st.lists(st.sampled_from([*CANONICAL_COLUMNS, "junk"]), max_size=4)):
        columns[canonical] = draw(NAME_OR_JUNK)
    if draw(st.booleans()):
        del columns[draw(st.sampled_from(sorted(columns)))]
    mapping: dict = {
        "csv": draw(st.one_of(st.just("t.csv"), st.just("t.csv"), ANY_VALUE)),
        "columns": columns,
    }
    if draw(st.booleans()):
        label = {
            "column": draw(NAME_OR_JUNK),
            "positive": draw(st.one_of(st.sampled_from(["1", "0", "yes", "1.0"]), ANY_VALUE)),
        }
        if draw(st.booleans()):
            label["negative"] = draw(st.one_of(st.sampled_from(["0", "1"]), ANY_VALUE))
        if draw(st.booleans()):
            label["target"] = draw(st.one_of(st.sampled_from(["cancer", "biopsy", "age"]), ANY_VALUE))
        mapping["label"] = label
    optional = {
        "sep": st.one_of(st.sampled_from([",", ";"]), ANY_VALUE),
        "missing_values": st.one_of(st.lists(st.sampled_from(["NA", "?", ""])), ANY_VALUE),
        "factors": st.dictionaries(
            SOURCE_COLUMN, st.one_of(st.sampled_from(["categorical", "continuous"]), ANY_VALUE), max_size=3
        ),
        "values": st.dictionaries(
            st.one_of(SOURCE_COLUMN, st.sampled_from(["laterality", "view"])),
            st.one_of(st.dictionaries(st.sampled_from(["L", "R", "CC", "1"]), SCALAR, max_size=2), ANY_VALUE),
            max_size=2,
        ),
        "post_outcome": st.one_of(
            st.lists(st.sampled_from(["birads", "age", "site_id"]), max_size=2), ANY_VALUE
        ),
        "annotations": st.one_of(
            st.dictionaries(
                st.sampled_from(["x0", "y0", "x1", "y1", "x", "y", "radius", "abnormality", "z"]),
                NAME_OR_JUNK,
                max_size=5,
            ),
            ANY_VALUE,
        ),
        "image_path_format": st.one_of(
            st.sampled_from(["{image_id}.png", "{view!r}", "{age:>3}", "{a.b}", "{", "x", "{}", "{nope}"]),
            ANY_VALUE,
        ),
        "label_meaning": ANY_VALUE,
        "image_root": ANY_VALUE,
        draw(st.text(min_size=1, max_size=4)): ANY_VALUE,
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            mapping[key] = draw(strategy)
    return mapping


@PROPERTY
@given(
    mapping=mappings(),
    body=csv_bytes(modes=("plausible", "plausible", "spoiled", "anything"), repeat_images=True),
)
def test_any_generic_mapping_gives_a_valid_cohort_or_a_message(mapping: dict, body: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "t.csv").write_bytes(body)
        path = root / "map.toml"
        path.write_text("\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in mapping.items()) + "\n")
        _outcome(lambda: _with_lesions(load_cohort("generic", root, path)))


def _with_lesions(cohort: Cohort) -> Cohort:
    """The cohort, once its lesions are a valid annotations table on its own images."""
    lesions = annotations.normalise(cohort.annotations) if len(cohort.annotations) else cohort.annotations
    assert set(lesions["image_id"].astype(str)) <= set(cohort.table["image_id"])
    if len(lesions):
        event("a cohort with lesions")
    return cohort


CANONICAL_CELL = st.one_of(
    st.none(),
    st.sampled_from(["L", "R", "CC", "MLO", "A", "p1", "p2", "", " "]),
    st.integers(-2, 3),
    st.floats(),
    st.booleans(),
    st.text(max_size=4),
)


CANONICAL_PLAUSIBLE = {
    "patient_id": st.sampled_from(["p1", "p2", 3]),
    "breast_id": st.sampled_from(["p1_L", None]),
    "laterality": st.sampled_from(["L", "R"]),
    "view": st.sampled_from(["CC", "MLO", None]),
    "age": st.one_of(st.integers(30, 90), st.none()),
    "density": st.sampled_from(["A", "D", None]),
    "cancer": st.sampled_from([0, 1, 0.0, None]),
}


@PROPERTY
@given(
    all_columns=st.booleans(),
    subset=st.lists(st.sampled_from([*CANONICAL_COLUMNS, "extra"]), unique=True, max_size=17),
    n_rows=st.integers(0, 5),
    data=st.data(),
)
def test_validate_cohort_accepts_a_valid_table_or_names_the_problem(all_columns, subset, n_rows, data):
    columns = [*CANONICAL_COLUMNS, *subset[:1]] if all_columns else subset

    def cell(column: str, row: int):
        if data.draw(st.integers(0, 5)) == 0:  # now and then anything
            return data.draw(CANONICAL_CELL)
        if column == "image_id":
            return f"i{row}"
        return data.draw(CANONICAL_PLAUSIBLE.get(column, st.none()))

    table = pd.DataFrame(
        {c: [cell(c, r) for r in range(n_rows)] for c in columns}, index=pd.RangeIndex(n_rows)
    )
    try:
        valid = validate_cohort(table, source="drawn table")
    except MammoInsightError:
        event("refused with a message")
        return
    event("a valid cohort")
    again = validate_cohort(valid, source="round trip")
    pd.testing.assert_frame_equal(again, valid)
    assert valid[REQUIRED_VALUES].notna().all().all()
    assert valid["cancer"].dropna().isin([0.0, 1.0]).all() and valid["age"].dropna().map(np.isfinite).all()


# issue 31: every numeric training option has a documented range (runs.config.option_ranges), enforced by
# load_config before any work: any value outside it (NaN, inf, negative seeds, huge image sizes) is refused
# with a message naming the key and the range, and any value inside it is taken.
def _range_values(between) -> st.SearchStrategy:
    lo, hi = between.lo, between.hi
    inside = st.floats(lo, hi, exclude_min=between.lo_open, exclude_max=between.hi_open)
    outside = st.one_of(
        st.floats(allow_nan=True).filter(lambda v: v not in between),
        st.sampled_from([math.nan, math.inf, -math.inf, lo - 1, hi + 1, -(2**40), 2**40]),
    )
    return st.tuples(st.booleans(), st.one_of(inside, outside))


@st.composite
def option_value(draw) -> tuple[str, object, bool]:
    """(TOML key, value, whether it lies in the documented range), typed as the option wants."""
    from mammo_insight.runs.config import AugmentConfig, TrainConfig, option_ranges

    key, between = draw(st.sampled_from(sorted(option_ranges().items(), key=lambda kv: kv[0])))
    cls, name = (AugmentConfig, key.split(".")[1]) if "." in key else (TrainConfig, key)
    wants_int = dataclasses.fields(cls)[[f.name for f in dataclasses.fields(cls)].index(name)].type
    _, value = draw(_range_values(between))
    integer = "int" in str(wants_int) and "float" not in str(wants_int)
    if integer:
        if not math.isfinite(value):
            value = draw(st.sampled_from([-1, -(2**40), 2**40, int(between.hi) + 1]))
        value = int(value)
    ok = value in between
    if "tuple" in str(wants_int):  # image_size, erase_scale: a pair
        value = [value, value]
    return key, value, ok


@PROPERTY
@given(drawn=option_value())
def test_every_numeric_training_option_is_held_to_its_documented_range(drawn):
    from mammo_insight.runs.config import load_config

    key, value, ok = drawn
    table, _, name = key.rpartition(".")
    body = (f"[{table}]\n" if table else "") + f"{name} = {_toml(value)}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.toml"
        path.write_text(body)
        if ok:
            event("in range: taken")
            config = load_config(path)
            got = getattr(config.augment, name) if table else getattr(config, name)
            assert got == (tuple(value) if isinstance(value, list) else value)
        else:
            event("out of range: refused")
            with pytest.raises(MammoInsightError, match=rf"{key}=.*expected"):
                load_config(path)


def test_the_option_ranges_are_documented_in_train_help():
    from mammo_insight.runs.config import option_ranges, options_epilog

    help_text = options_epilog()
    assert {"seed", "image_size", "focal_gamma", "lr", "augment.zoom"} <= set(option_ranges())
    for key, between in option_ranges().items():
        assert f"{key} = " in help_text and f"[{between}]" in help_text, key


@pytest.mark.parametrize(
    "body, words",
    [
        ("seed = -1", ["seed=-1", "0 <= x <= 4294967295"]),
        ("image_size = [100000, 100000]", ["image_size", "<= 4096"]),
        ('loss = "focal"\nfocal_gamma = inf', ["focal_gamma=inf"]),
        ("x = " + "[" * 50_000 + "]" * 50_000, ["too deeply"]),
    ],
)
def test_listed_hostile_train_tomls_are_refused(tmp_path, body, words):
    from mammo_insight.runs.config import load_config

    path = tmp_path / "train.toml"
    path.write_text(body + "\n")
    with pytest.raises(MammoInsightError) as refused:
        load_config(path)
    for word in words:
        assert word in str(refused.value)


def test_a_deeply_nested_generic_mapping_is_refused_with_a_message(tmp_path):
    (tmp_path / "m.toml").write_text('csv = "t.csv"\nx = ' + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(MammoInsightError, match="too deeply"):
        load_cohort("generic", tmp_path, tmp_path / "m.toml")
