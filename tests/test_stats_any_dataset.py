"""The study on tables that are not RSNA-shaped: each case of issue 14 on a small table made for it."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.schema import Cohort, empty_canonical, validate_cohort
from mammo_insight.stats.design import AGE_TERM
from mammo_insight.stats.factors import quartiles
from mammo_insight.stats.leakage import audit_leakage
from mammo_insight.stats.study import run_study


def _cohort(columns: dict, *, factors: dict | None = None, post_outcome=(), **kwargs) -> Cohort:
    """A canonical cohort of one image per woman (left breast) from the given columns."""
    n = len(columns["cancer"])
    table = empty_canonical(n)
    table["patient_id"] = [f"w{i}" for i in range(n)]
    table["image_id"] = [f"i{i}" for i in range(n)]
    table["laterality"] = "L"
    for name, values in columns.items():
        table[name] = values
    return Cohort(
        validate_cohort(table),
        dataset="made",
        label_meaning="",
        factors=factors or {},
        post_outcome=list(post_outcome),
        **kwargs,
    )


def _leak(result_or_audit, column: str, audited: str = "values") -> pd.Series:
    audit = getattr(result_or_audit, "leakage", result_or_audit)
    return audit[(audit["column"] == column) & (audit["audited"] == audited)].iloc[0]


def test_a_column_recorded_only_for_cancers_is_flagged_and_left_out():
    """CMMD's subtype, undeclared: present for every malignant breast, for no benign one."""
    rng = np.random.default_rng(0)
    cancer = (rng.random(300) < 0.4).astype(float)
    subtype = np.where(cancer == 1, rng.choice(["Luminal A", "Luminal B", "HER2"], 300), None)
    cohort = _cohort(
        {"cancer": cancer, "age": rng.integers(35, 80, 300).astype(float), "subtype": subtype},
        factors={"subtype": "categorical"},
    )
    result = run_study(cohort)
    row = _leak(result, "subtype")
    assert row["verdict"] == "leaky" and row["available_at_screening"]  # found by the data, not declared
    assert "recorded only for cancers" in row["reason"] and "never occur among non-cancers" in row["reason"]
    assert _leak(result, "subtype", "missingness")["verdict"] == "leaky"
    assert next(f for f in result.factors if f.name == "subtype").post_outcome
    assert not result.odds_ratios["term"].str.startswith("subtype").any()
    assert any("subtype" in f and "recorded only for cancers" in f for f in result.findings)


def test_a_column_missing_only_for_normals_is_flagged_with_that_reason():
    """A per-image table where age is missing for every normal breast: age must not pass as 'ok'."""
    rng = np.random.default_rng(1)
    cancer = (rng.random(400) < 0.3).astype(float)
    age = np.where(cancer == 1, rng.integers(40, 80, 400), np.nan)
    result = run_study(_cohort({"cancer": cancer, "age": age, "site_id": rng.choice(["1", "2"], 400)}))
    missing_row, value_row = _leak(result, "age", "missingness"), _leak(result, "age")
    assert missing_row["verdict"] == "leaky" and "recorded only for cancers" in missing_row["reason"]
    assert value_row["verdict"] == "leaky" and "its missingness encodes the label" in value_row["reason"]
    assert not (result.odds_ratios["term"] == AGE_TERM).any() and result.age_fit.empty
    assert not any("Each 10 years" in f or "age band" in f for f in result.findings)


@pytest.mark.slow
def test_uninformative_columns_are_not_below_chance_and_say_how():
    rng = np.random.default_rng(2)
    n = 600
    cancer = (rng.random(n) < 0.2).astype(float)
    cohort = _cohort(
        {
            "cancer": cancer,
            "view": rng.choice(["CC", "MLO"], n),
            "coin": rng.choice(["h", "t"], n),
            "code": [f"c{i % 150}" for i in range(n)],  # many levels: out-of-fold
        },
        factors={"coin": "categorical"},
    )
    audit = audit_leakage(cohort.table, post_outcome=[])
    for column in ("view", "coin", "code"):
        row = _leak(audit, column)
        assert row["null_low"] - 0.02 <= row["auc_alone"] <= row["null_high"] + 0.02
        assert row["verdict"] == "ok" and row["auc_method"].startswith("out-of-fold")


def _age_table(positives_per_band: list[int], n_per_band: int = 150, seed: int = 0) -> Cohort:
    """One image per woman; band b (40-49, 50-59, ...) holds n_per_band women, the first k positive."""
    rng = np.random.default_rng(seed)
    ages, cancer = [], []
    for band, k in enumerate(positives_per_band):
        ages += list(40 + 10 * band + rng.integers(0, 10, n_per_band))
        cancer += [1.0] * k + [0.0] * (n_per_band - k)
    n = len(ages)
    return _cohort(
        {
            "cancer": np.array(cancer),
            "age": np.array(ages, dtype=float),
            "scanner": rng.choice(["a", "b"], n),
        },
        factors={"scanner": "categorical"},
    )


def test_a_non_monotone_age_pattern_is_described_not_called_a_rise():
    """40-49 23%, 50-59 12%, 60-69 18%, 70-79 24%: the lowest and highest bands do not make a rise."""
    result = run_study(_age_table([35, 18, 27, 36]))
    text = " ".join(result.findings)
    assert "rises" not in text and "falls" not in text
    assert "By age band the breast-level cancer rate is 40-49 23.3% (35/150); 50-59 12.0% (18/150)" in text


@pytest.mark.slow
def test_a_steady_significant_rise_is_called_a_rise():
    result = run_study(_age_table([8, 20, 35, 55]))
    assert any(f.startswith("The breast-level cancer rate rises from 5.3%") for f in result.findings)


def test_an_age_effect_whose_interval_includes_one_is_not_claimed():
    result = run_study(_age_table([30, 30, 30, 30]))
    row = result.odds_ratios.set_index(["model", "term"]).loc[("all breasts", AGE_TERM)]
    assert row["ci_low"] < 1 < row["ci_high"]
    text = " ".join(result.findings)
    assert "age shows no clear effect" in text and "multiplies" not in text
    assert "besides age" not in text


@pytest.mark.slow
def test_a_level_that_is_a_site_and_a_level_never_recorded_at_a_site_are_named():
    """RSNA's shape: density missing exactly at site 2; implant never 'yes' at site 2."""
    rng = np.random.default_rng(3)
    n = 1200
    site = np.repeat(["1", "2"], n // 2)
    density = np.where(site == "1", rng.choice(list("ABCD"), n), None)
    implant = np.where(site == "1", (rng.random(n) < 0.1).astype(float), 0.0)
    cohort = _cohort(
        {
            "cancer": (rng.random(n) < 0.1).astype(float),
            "site_id": site,
            "density": density,
            "implant": implant,
        }
    )
    text = " ".join(run_study(cohort).findings)
    assert "density=missing is exactly the images of site 2" in text
    assert "implant=yes never occurs at site 2 (0 of 600 images" in text


def test_inbreast_totals_row_skipped_and_no_women_invented(tmp_path):
    """The official table ends in a totals row; without the DICOMs no woman can be identified."""
    rows = [("1", "L", "CC", "1", "1"), ("2", "L", "MLO", "1", "1"), ("3", "R", "CC", "2", "5")]
    rows += [(str(i), "R", "MLO", "3", "2" if i % 3 else "6") for i in range(4, 40)]
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads;Mass"]
    lines += [
        f"removed;removed;{lat};{view};201001;{name};{acr};{birads};" for name, lat, view, acr, birads in rows
    ]
    lines.append(";;;;;;;49;107")  # the totals row: counts, no File Name
    (tmp_path / "INbreast.csv").write_text("\n".join(lines) + "\n")
    cohort = load_cohort("inbreast", tmp_path)
    assert len(cohort.table) == len(rows) and cohort.known_units == ("image",)
    assert any("totals/footer" in n and f"line(s) {len(rows) + 2}" in n for n in cohort.notes)
    assert "finding_mass" in cohort.post_outcome
    from mammo_insight.cohort.source import read_cohort_file, write_cohort_file

    kept = read_cohort_file(write_cohort_file(cohort, tmp_path / "c.parquet"))
    assert kept.known_units == ("image",) and kept.notes == cohort.notes  # the cohort file keeps both
    result = run_study(cohort)
    s = result.summary
    assert s["n_patients"] is None and s["n_breasts"] is None and s["n_cancer_breasts"] is None
    positives, labelled = s["n_cancer_images"], s["n_labelled_images"]
    assert (
        f"{positives} of {labelled} labelled images ({100 * positives / labelled:.1f}%)" in result.findings[0]
    )
    assert "woman- and breast-level figures are unavailable" in result.findings[0]
    assert set(result.rates["unit"]) == {"image"} and set(result.tests["unit"]) <= {"image"}


MASSES = "BI-RADS,Age,Shape,Margin,Density,Severity\n"


@pytest.mark.slow
def test_lesion_table_with_no_ids_loads_with_the_example_mapping(tmp_path):
    rng = np.random.default_rng(4)
    rows = [
        f"{rng.choice([2, 3, 4, 5])},{rng.integers(30, 85)},{rng.integers(1, 5)},{rng.integers(1, 6)},"
        f"{rng.integers(1, 5)},{int(rng.random() < 0.4)}"
        for _ in range(120)
    ]
    rows[6] = "55,61,4,5,3,1"  # the out-of-range code the UCI table holds
    rows[9] = "4,?,2,1,3,0"
    (tmp_path / "mammographic_masses.data").write_text(MASSES + "\n".join(rows) + "\n")
    cohort = load_cohort("generic", tmp_path, "examples/mammographic_masses.toml")
    t = cohort.table
    assert len(t) == 120 and t["image_id"].is_unique and cohort.known_units == ("image",)
    assert np.isnan(t.loc[6, "birads"]) and np.isnan(t.loc[9, "age"])
    assert any("['55'] in line(s) 8" in n for n in cohort.notes)
    assert any("each row is its own unit" in n for n in cohort.notes)
    result = run_study(cohort)
    assert "55" not in set(result.rates.loc[result.rates["factor"] == "birads", "level"])
    assert result.summary["n_patients"] is None and any("each row is its own unit" in n for n in result.notes)


def test_quartile_labels_never_overlap():
    labels = quartiles(pd.Series([1, 1, 2, 3, 3, 3, 3, 4, 4, 5, 5, 5]))
    ranges = [lab.split()[1].split("-") for lab in dict.fromkeys(labels)]
    spans = [(float(r[0]), float(r[-1])) for r in ranges]
    assert len(spans) >= 3 and all(hi < next_lo for (_, hi), (next_lo, _) in pairwise(spans))


@pytest.mark.slow
def test_breast_level_values_follow_the_documented_rule_and_mixed_breasts_are_noted():
    """Two films of one breast with subtlety 2 and 5: the model uses 5 (max) and the notes say so."""
    rng = np.random.default_rng(5)
    n = 200
    table = empty_canonical(2 * n)
    table["patient_id"] = np.repeat([f"w{i}" for i in range(n)], 2)
    table["image_id"] = [f"i{i}" for i in range(2 * n)]
    table["laterality"] = "L"
    table["view"] = ["CC", "MLO"] * n
    table["cancer"] = np.repeat((rng.random(n) < 0.3).astype(float), 2)
    subtlety = np.repeat(rng.integers(1, 6, n), 2).astype(float)
    subtlety[1] = 5.0
    subtlety[0] = 2.0
    table["subtlety"] = subtlety
    table["machine_id"] = np.repeat(rng.choice(["m1", "m2"], n), 2)
    table.loc[1, "machine_id"] = "m2" if table.loc[0, "machine_id"] == "m1" else "m1"
    cohort = Cohort(validate_cohort(table), "made", "", factors={"subtlety": "continuous"})
    from mammo_insight.stats.breasts import breast_table
    from mammo_insight.stats.factors import build_study_frame

    study = build_study_frame(cohort.table, cohort.factors)
    breasts = breast_table(study.frame, [f for f in study.factors if f.name == "subtlety"])
    w0_left = sorted(cohort.table["breast_id"].unique()).index("w0_L")  # the frame's ids: sorted-order codes
    assert breasts.set_index("breast_id").loc[w0_left, "subtlety"] == 5.0
    notes = run_study(cohort).notes
    assert any(n.startswith("subtlety: 1 breast(s)") and "highest value" in n for n in notes)
    assert any(n.startswith("machine_id: 1 breast(s)") and "most of the breast's images" in n for n in notes)


@pytest.mark.slow
def test_cmmd_clinical_table_leaves_its_post_outcome_columns_out_of_the_model(tmp_path):
    rng = np.random.default_rng(6)
    lines = ["ID1,LeftRight,Age,number,abnormality,classification,subtype"]
    for i in range(160):
        malignant = rng.random() < 0.5
        subtype = rng.choice(["Luminal A", "Luminal B", "HER2-enriched"]) if malignant else ""
        abnormality = rng.choice(
            ["mass", "calcification", "both"], p=[0.5, 0.2, 0.3] if malignant else [0.3, 0.6, 0.1]
        )
        lines.append(
            f"D1-{i:04d},{rng.choice(['L', 'R'])},{rng.integers(30, 80)},2,{abnormality},"
            f"{'Malignant' if malignant else 'Benign'},{subtype}"
        )
    (tmp_path / "CMMD_clinicaldata_revision.csv").write_text("\n".join(lines) + "\n")
    result = run_study(load_cohort("cmmd", tmp_path))
    for column in ("subtype", "classification"):
        assert _leak(result, column)["verdict"] == "leaky", column
    assert not result.odds_ratios["term"].str.contains("subtype|classification").any()
    # the lesion's type is read off the film before the biopsy: a factor (CBIS's rule), audited by the data
    assert _leak(result, "abnormality")["verdict"] == "ok"
    assert result.odds_ratios["term"].str.contains("abnormality=mass").any()


def test_an_image_level_test_is_asked_again_clustered_by_woman():
    """Eight films per breast, all but one at the breast's level: the films repeat the breast 8 times,
    so the chi-square over images is far surer than the data allow; the clustered p says so."""
    rng = np.random.default_rng(7)
    n, films = 150, 8
    level = rng.choice(["a", "b"], n)
    cancer = (rng.random(n) < np.where(level == "a", 0.2, 0.32)).astype(float)
    table = empty_canonical(n * films)
    table["patient_id"] = np.repeat([f"w{i}" for i in range(n)], films)
    table["image_id"] = [f"i{i}" for i in range(n * films)]
    table["laterality"] = "L"
    table["cancer"] = np.repeat(cancer, films)
    per_film = np.repeat(level, films).astype(object)
    per_film[::films] = np.where(level == "a", "b", "a")  # one film per breast differs: an image-level factor
    table["acquisition"] = per_film
    result = run_study(Cohort(validate_cohort(table), "made", "", factors={"acquisition": "categorical"}))
    tests = result.tests.set_index("factor")
    row = tests.loc["acquisition"]
    assert row["unit"] == "image" and "assumes independent images" in row["note"]
    assert row["p_clustered"] > 5 * row["p_value"]
    assert tests["p_clustered"].drop("acquisition").isna().all()
