"""Adapters declare their post-outcome columns; the cohort carries them; eda and fuse-train read the cohort's."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from mammo_insight.cohort.adapters import ADAPTER_MODULES, get_adapter, load_cohort
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS, Cohort, validate_cohort
from mammo_insight.errors import CohortError
from mammo_insight.stats.leakage import audit_leakage

EXPECTED = {
    "rsna": set(POST_OUTCOME_COLUMNS),
    "cbis": {"pathology", "birads"},
    "cmmd": {"classification", "subtype"},
    "inbreast": {
        "birads",
        "birads_category",
        "finding_mass",
        "finding_micros",
        "finding_distortion",
        "finding_asymmetry",
        "finding_notes",
    },
    "mias": {"abnormality", "severity", "malignant"},
    "generic": set(),
    "dicom": set(),  # images_in_study is declared per cohort, when the tree holds work-up views
}


@pytest.mark.parametrize("name", list(ADAPTER_MODULES))
def test_every_adapter_declares_its_post_outcome_columns(name) -> None:
    adapter = get_adapter(name)
    assert set(adapter.post_outcome) == EXPECTED[name]
    assert importlib.import_module(ADAPTER_MODULES[name]).ADAPTER is adapter


def test_mias_cohort_carries_its_declaration(tmp_path) -> None:
    (tmp_path / "Info.txt").write_text(
        "mdb001 G CIRC B 10 20 5\nmdb002 F NORM\nmdb003 D CALC M 1 2 3\nmdb004 D NORM\n"
    )
    cohort = load_cohort("mias", tmp_path)
    assert cohort.post_outcome == ["abnormality", "severity", "malignant"]
    assert {"abnormality", "severity", "malignant"} <= set(cohort.table.columns)


def _table(n_women: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cancer = (rng.random(n_women) < 0.25).astype(float)
    return validate_cohort(
        pd.DataFrame(
            {
                "patient_id": [f"P{i}" for i in range(n_women)],
                "image_id": [f"I{i}" for i in range(n_women)],
                "laterality": "L",
                "view": "CC",
                "age": rng.integers(40, 80, n_women).astype(float),
                "site_id": "1",
                "machine_id": "9",
                "density": None,
                "birads": np.nan,
                "implant": 0.0,
                "cancer": cancer,
                "biopsy": np.nan,
                "invasive": np.nan,
                "difficult_negative_case": np.nan,
                "image_path": None,
                "workup": rng.choice(["a", "b", "c"], n_women),
            }
        )
    )  # noise, but decided after the outcome


def test_leakage_audit_reads_the_declared_list() -> None:
    table = _table()
    default = audit_leakage(table).set_index("column")
    assert default.loc["workup", "verdict"] == "ok" and default.loc["birads", "verdict"] == "leaky"
    declared = audit_leakage(table, post_outcome=["workup"]).set_index("column")
    assert (
        declared.loc["workup", "verdict"] == "leaky" and not declared.loc["workup", "available_at_screening"]
    )
    assert declared.loc["birads", "verdict"] == "ok"  # not declared by this cohort, empty, no AUC


def test_eda_flags_the_cohorts_post_outcome_factor() -> None:
    from mammo_insight.stats.study import run_study

    cohort = Cohort(
        _table(), dataset="x", label_meaning="", factors={"workup": "categorical"}, post_outcome=["workup"]
    )
    result = run_study(cohort)
    factor = next(f for f in result.factors if f.name == "workup")
    assert factor.post_outcome
    assert result.leakage.set_index("column").loc["workup", "verdict"] == "leaky"


def test_fusion_leaves_the_cohorts_post_outcome_columns_out() -> None:
    from mammo_insight.fusion.features import leaky_columns_of

    assert "workup" in leaky_columns_of(_table(), post_outcome=["workup"])
    assert "workup" not in leaky_columns_of(_table())


GENERIC_CSV = "pid,side,outcome,work\na,L,yes,x\nb,R,no,y\nc,L,no,x\n"
GENERIC_TOML = """csv = "t.csv"
{post}
[columns]
patient_id = "pid"
image_id = "pid"
laterality = "side"

[label]
column = "outcome"
positive = ["yes"]

[factors]
work = "categorical"
"""


@pytest.mark.parametrize(
    ("post", "expected"),
    [("", POST_OUTCOME_COLUMNS), ('post_outcome = ["work"]', [*POST_OUTCOME_COLUMNS, "work"])],
)
def test_generic_mapping_declares_post_outcome_columns(tmp_path, post, expected) -> None:
    (tmp_path / "t.csv").write_text(GENERIC_CSV)
    (tmp_path / "m.toml").write_text(GENERIC_TOML.format(post=post))
    assert load_cohort("generic", tmp_path, tmp_path / "m.toml").post_outcome == expected


def test_generic_post_outcome_naming_an_absent_column_is_clear(tmp_path) -> None:
    (tmp_path / "t.csv").write_text(GENERIC_CSV)
    (tmp_path / "m.toml").write_text(GENERIC_TOML.format(post='post_outcome = ["nope"]'))
    with pytest.raises(CohortError, match="post_outcome.*nope"):
        load_cohort("generic", tmp_path, tmp_path / "m.toml")


def test_a_lesion_s_radiological_type_follows_one_rule_in_both_biopsied_lesion_sets() -> None:
    """CBIS's abnormality_type and CMMD's abnormality are both what a reader sees on the film before the
    biopsy: a factor of the analysis in both, post-outcome in neither (mini-MIAS's 'abnormality' is the
    label's own source there, so it stays post-outcome)."""
    lesion_type = {"cbis": "abnormality_type", "cmmd": "abnormality"}
    for name, column in lesion_type.items():
        assert column not in get_adapter(name).post_outcome, name
    assert "abnormality" in get_adapter("mias").post_outcome
