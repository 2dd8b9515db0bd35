"""--dataset dicom: the header scan (failures listed, resumable, salted ids), the outcomes join and its report,
the synthetic tree's planted headers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.adapters.dicom import project_salt, read_options
from mammo_insight.cohort.dicom_record import age_of, header_record
from mammo_insight.cohort.dicom_scan import JOURNAL, ScanConfig, scan_tree
from mammo_insight.cohort.outcomes import CONFLICT, NO_IMAGES, NO_OUTCOME, OutcomesSpec
from mammo_insight.errors import CohortError, MammoInsightError
from mammo_insight.synth.headers import PROCESSING_MACHINE, phi_tags


@pytest.fixture(autouse=True)
def scan_home(tmp_path, monkeypatch) -> Path:
    """Each test's journals and salt in its own folder (never the user's ~/.cache)."""
    home = tmp_path / "scan_home"
    monkeypatch.setenv("MAMMO_INSIGHT_SCAN_HOME", str(home))
    monkeypatch.delenv("MAMMO_INSIGHT_SALT", raising=False)
    return home


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("dicom_tree")
    make_synthetic_cohort(root, n_patients=24, seed=4, size=(64, 48), prevalence=0.5)
    return root


def _copy(tree: Path, dest: Path) -> Path:
    shutil.copytree(tree, dest)
    return dest


def _sr_file(path: Path) -> None:
    """A structured report: a DICOM that is not a mammogram."""
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = (
        "1.2.840.10008.5.1.4.1.1.88.22",
        "1.2.3.4",
        "SR",
        "X",
    )
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.slow
def test_the_tree_becomes_one_row_per_mammogram_and_every_other_file_is_listed(tree, tmp_path):
    root = _copy(tree, tmp_path / "t")
    _sr_file(root / "train_images" / "report.dcm")
    good = next((root / "train_images").rglob("*.dcm"))
    (root / "train_images" / "torn.dcm").write_bytes(good.read_bytes()[:300])
    cohort = load_cohort("dicom", root)
    n_dicoms = len([p for p in root.rglob("*.dcm") if p.name not in ("report.dcm", "torn.dcm")])
    assert len(cohort.table) == n_dicoms > len(pd.read_csv(root / "train.csv"))
    failures = cohort.reports["scan_failures"].set_index("file")
    assert failures.loc["train_images/report.dcm", "kind"] == "not a mammogram"
    assert "Modality SR" in failures.loc["train_images/report.dcm", "reason"]
    assert failures.loc["train_images/torn.dcm", "kind"] in ("unreadable", "not DICOM", "no image")
    assert failures.loc["train.csv", "kind"] == "not DICOM"
    assert cohort.table["cancer"].isna().all()  # no outcomes: no labels
    assert any("not used" in n for n in cohort.notes)


def test_headers_give_the_canonical_and_acquisition_columns(tree):
    cohort = load_cohort("dicom", tree)
    table = cohort.table
    train = pd.read_csv(tree / "train.csv", dtype=str)
    assert table["laterality"].isin(["L", "R"]).all() and set(table["view"]) <= {
        "CC",
        "MLO",
        "ML",
        "LM",
        "AT",
    }
    assert table["patient_id"].nunique() == train["patient_id"].nunique()
    # age: PatientAge at site 1, birth and study dates at site 2: both give the synthetic age
    screening = table[table["file"].str.startswith("train_images/")].copy()
    screening["raw_id"] = screening["file"].str.split("/").str[-1].str.removesuffix(".dcm")
    ages = screening.set_index("raw_id")["age"]
    truth = pd.to_numeric(train.set_index("image_id")["age"])
    known = truth.notna()
    assert np.allclose(ages[truth.index[known]], truth[known])
    for col in ("kvp", "exposure_mas", "thickness_mm", "compression_force_n", "organ_dose_mgy"):
        assert table[col].notna().all(), col
    assert table["manufacturer"].nunique() > 1 and table["target_filter"].notna().all()
    # exposure follows thickness (automatic exposure control), as synth.headers plants it
    assert np.corrcoef(table["thickness_mm"], table["exposure_mas"])[0, 1] > 0.3
    assert set(cohort.factors) >= {"kvp", "manufacturer", "workup_view"}


def test_work_up_views_and_for_processing_copies_are_marked(tree):
    table = load_cohort("dicom", tree, outcomes=OutcomesSpec(tree / "outcomes.csv")).table
    workup = table[table["workup_view"].notna()]
    assert len(workup) and (workup["cancer"] == 1).all()
    assert set(workup["workup_view"]) <= {"spot compression", "magnification"}
    assert workup["view_modifier_codes"].str.contains("R-102D").all()
    processing = table[table["for_processing"] == "yes"]
    assert len(processing) and (processing["presentation_intent"] == "FOR PROCESSING").all()
    train = pd.read_csv(tree / "train.csv", dtype=str)
    machine_women = set(train.loc[train["machine_id"] == PROCESSING_MACHINE, "patient_id"])
    assert processing["file"].str.split("/").str[1].isin(machine_women).all()
    assert "images_in_study" in load_cohort("dicom", tree).post_outcome


def test_outcomes_by_study_give_each_breast_its_label(tree):
    table = load_cohort("dicom", tree, outcomes=OutcomesSpec(tree / "outcomes.csv", on="study")).table
    train = pd.read_csv(tree / "train.csv", dtype=str)
    screening = table[table["file"].str.startswith("train_images/")]
    raw = screening["file"].str.split("/").str[-1].str.removesuffix(".dcm")
    truth = pd.to_numeric(train.set_index("image_id").loc[raw, "cancer"]).to_numpy()
    assert np.array_equal(screening["cancer"].to_numpy(), truth)
    density = train.set_index("image_id").loc[raw, "density"].fillna("").replace("", "-")
    assert list(screening["density"].fillna("-")) == list(density)


def test_the_match_report_lists_what_did_not_match(tree, tmp_path):
    outcomes = pd.read_csv(tree / "outcomes.csv", dtype=str)
    dropped_study = outcomes["StudyInstanceUID"].iloc[0]
    edited = outcomes[outcomes["StudyInstanceUID"] != dropped_study]
    conflict = edited.iloc[[0]].assign(cancer=str(1 - int(edited["cancer"].iloc[0])))
    stranger = edited.iloc[[0]].assign(StudyInstanceUID="1.2.3.999")
    edited = pd.concat([edited, conflict, stranger], ignore_index=True)
    path = tmp_path / "outcomes.csv"
    edited.to_csv(path, index=False)
    cohort = load_cohort("dicom", tree, outcomes=OutcomesSpec(path, on="study"))
    report = cohort.reports["outcome_match"]
    assert set(report["problem"]) == {NO_OUTCOME, NO_IMAGES, CONFLICT}
    assert report.loc[report["problem"] == NO_IMAGES, "outcome_lines"].tolist() == [str(len(edited) + 1)]
    conflicted = report.loc[report["problem"] == CONFLICT, "key"].iloc[0]
    assert cohort.table.loc[cohort.table["study_id"] == conflicted, "cancer"].isna().any()
    no_outcome = report.loc[report["problem"] == NO_OUTCOME]
    assert int(no_outcome["n_images"].sum()) == int(cohort.table["cancer"].isna().sum()) - int(
        report.loc[report["problem"] == CONFLICT, "n_images"].sum()
    )
    # raw identifiers never appear in the report: keys are hashed
    assert dropped_study not in report.to_csv() and "1.2.3.999" not in report.to_csv()


def test_outcomes_by_patient_and_accession(tree, tmp_path):
    train = pd.read_csv(tree / "train.csv", dtype=str)
    women = train.groupby("patient_id")["cancer"].max().reset_index()
    by_patient = pd.DataFrame(
        {
            "PatientID": [phi_tags(p, "1", "0")["PatientID"] for p in women["patient_id"]],
            "label": women["cancer"],
        }
    )
    by_patient.to_csv(tmp_path / "p.csv", index=False)
    table = load_cohort(
        "dicom", tree, outcomes=OutcomesSpec(tmp_path / "p.csv", on="patient", label="label")
    ).table
    assert table["cancer"].notna().all()
    by_acc = pd.DataFrame(
        {"AccessionNumber": [f"ACC{p}" for p in women["patient_id"]], "cancer": women["cancer"]}
    )
    by_acc.to_csv(tmp_path / "a.csv", index=False)
    table_acc = load_cohort("dicom", tree, outcomes=OutcomesSpec(tmp_path / "a.csv", on="accession")).table
    assert np.array_equal(table["cancer"].to_numpy(), table_acc["cancer"].to_numpy())


def test_bad_outcomes_are_one_line_errors(tree, tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"StudyInstanceUID": ["1.2", "1.3"], "cancer": ["1", "maybe"]}).to_csv(path, index=False)
    with pytest.raises(CohortError, match=r"bad.csv.*'cancer'.*line\(s\) 3"):
        load_cohort("dicom", tree, outcomes=OutcomesSpec(path))
    with pytest.raises(CohortError, match="no label column 'outcome'"):
        load_cohort("dicom", tree, outcomes=OutcomesSpec(path, label="outcome"))
    with pytest.raises(CohortError, match="no accession key column"):
        load_cohort("dicom", tree, outcomes=OutcomesSpec(path, on="accession"))
    with pytest.raises(MammoInsightError, match="--dataset dicom"):
        load_cohort("rsna", tree, outcomes=OutcomesSpec(path))


def test_the_salt_is_private_from_its_first_byte(tmp_path, monkeypatch):
    """Outputs are made 0666 & ~umask (files.atomic_write); the salt file is made 0600 before it is written."""
    modes = []
    write_text = Path.write_text

    def spying(self, *args, **kwargs):
        modes.append(self.stat().st_mode & 0o777)
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", spying)
    old = os.umask(0o022)
    try:
        salt = project_salt(tmp_path)
    finally:
        os.umask(old)
    assert modes == [0o600] and (tmp_path / "salt").stat().st_mode & 0o777 == 0o600 and len(salt) == 64


@pytest.mark.slow
def test_ids_are_salted_hashes_stable_within_a_project(tree, tmp_path, monkeypatch):
    first = load_cohort("dicom", tree).table
    again = load_cohort("dicom", tree).table
    assert first["patient_id"].equals(again["patient_id"])  # the salt kept beside the journal
    monkeypatch.setenv("MAMMO_INSIGHT_SALT", "another project")
    other = load_cohort("dicom", tree).table
    assert set(other["patient_id"]).isdisjoint(first["patient_id"])
    text = first.to_csv()
    for path in sorted(tree.rglob("*.dcm"))[:10]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in (
            "PatientID",
            "StudyInstanceUID",
            "AccessionNumber",
            "InstitutionName",
            "SOPInstanceUID",
            "StationName",
            "DeviceSerialNumber",
            "PatientBirthDate",
            "PatientName",
        ):
            assert str(ds.get(keyword)) not in text, keyword


@pytest.mark.slow
def test_a_killed_scan_resumes_and_gives_the_same_table(tree, tmp_path):
    home = tmp_path / "journal"
    salt = b"fixed"
    whole = scan_tree(ScanConfig(tree, salt, home, chunk_files=16))
    lines = (home / JOURNAL).read_text().splitlines(keepends=True)
    half = len(lines) // 2
    (home / JOURNAL).write_text("".join(lines[:half]) + lines[half][: len(lines[half]) // 2])  # torn line
    resumed = scan_tree(ScanConfig(tree, salt, home, chunk_files=16, workers=2))
    assert resumed.resumed == half
    pd.testing.assert_frame_equal(resumed.images, whole.images)
    pd.testing.assert_frame_equal(resumed.failures, whole.failures)
    # a changed file is read again; another salt starts afresh
    target = next(tree.rglob("*.dcm"))
    copy = _copy(tree, tmp_path / "t2")
    scan_tree(ScanConfig(copy, salt, tmp_path / "j2"))
    (copy / target.relative_to(tree)).write_bytes(target.read_bytes() + b"\0\0")
    assert scan_tree(ScanConfig(copy, salt, tmp_path / "j2")).resumed == whole.n_files - 1
    assert scan_tree(ScanConfig(copy, b"other", tmp_path / "j2")).resumed == 0
    records = [json.loads(x) for x in (tmp_path / "j2" / JOURNAL).read_text().splitlines()]
    assert len(records) == whole.n_files


def test_a_mapping_adds_tags_and_sets_workers(tree, tmp_path):
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[dicom]\nworkers = 2\n[dicom.tags]\nsex = "PatientSex"\nsyntax_note = "LossyImageCompression"\n'
    )
    assert read_options(mapping).workers == 2
    cohort = load_cohort("dicom", tree, mapping)
    assert set(cohort.table["sex"]) == {"F"} and cohort.factors["sex"] == "categorical"
    mapping.write_text('[dicom.tags]\nx = "NoSuchKeyword"\n')
    with pytest.raises(CohortError, match="NoSuchKeyword"):
        load_cohort("dicom", tree, mapping)
    mapping.write_text('[dicom.tags]\nage = "PatientAge"\n')
    with pytest.raises(CohortError, match="canonical"):
        load_cohort("dicom", tree, mapping)


@given(
    years=st.integers(0, 110),
    born=st.dates(min_value=pd.Timestamp("1900-01-01").date(), max_value=pd.Timestamp("2020-12-31").date()),
    seen=st.dates(min_value=pd.Timestamp("1900-01-01").date(), max_value=pd.Timestamp("2030-12-31").date()),
)
def test_age_from_patient_age_else_from_the_dates(years, born, seen):
    ds = Dataset()
    ds.PatientAge = f"{years:03d}Y"
    ds.PatientBirthDate, ds.StudyDate = born.strftime("%Y%m%d"), seen.strftime("%Y%m%d")
    assert age_of(ds) == years
    del ds.PatientAge
    expected = (
        None if seen < born else seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    )
    assert age_of(ds) == expected
    assert "PatientBirthDate" not in header_record(ds, b"s") and born.strftime("%Y%m%d") not in str(
        header_record(ds, b"s")
    )


def test_the_real_dicoms_scan_and_say_what_they_lack(data_dir):
    """RSNA's stripped headers and CBIS-DDSM's secondary captures scan without error; what each lacks shows."""
    rsna = load_cohort("dicom", data_dir / "rsna").table
    assert len(rsna) == 12 and rsna["laterality"].notna().all()
    assert rsna["view"].isna().all() and rsna["age"].isna().all() and rsna["kvp"].isna().all()  # stripped
    cbis = load_cohort("dicom", data_dir / "cbis_ddsm")
    assert len(cbis.table) == 4 and (cbis.table["secondary_capture"] == "yes").all()
    assert set(cbis.reports["scan_failures"]["file"]) == {"manifest.csv"}


@pytest.mark.slow
def test_the_dask_backend_gives_the_same_table(tree, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setenv("MAMMO_INSIGHT_SALT", "one project")
    local = load_cohort("dicom", tree).table
    mapping = tmp_path / "m.toml"
    mapping.write_text('[dicom]\nbackend = "dask"\nworkers = 1\n')
    shutil.rmtree(tmp_path / "scan_home")  # no journal to resume from: Dask reads every file (same salt)
    on_dask = load_cohort("dicom", tree, mapping)
    assert not any("from the journal" in n for n in on_dask.notes)
    pd.testing.assert_frame_equal(on_dask.table, local)


@given(
    n=st.integers(1, 60),
    size=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    resumed=st.booleans(),
)
def test_rows_come_out_in_file_order_however_the_chunks_arrive(n, size, seed, resumed):
    """Chunks of a fresh scan arrive in any order (their rows each in order); a resumed scan's rows can be
    in any order at all: the table is in file order either way, with every row once."""
    import random

    from mammo_insight.cohort.dicom_scan import _chunk, _tables

    files = [f"{i:03d}/x.dcm" for i in range(n)]
    records = [
        {"file": f, "status": "ok", "row": {"value": i, "kind": "ab"[i % 2]}} for i, f in enumerate(files)
    ]
    rng = random.Random(seed)
    if resumed:
        rng.shuffle(records)
    chunks = [_chunk(records[i : i + size]) for i in range(0, n, size)]
    rng.shuffle(chunks)
    images, failures = _tables(iter(chunks))
    assert images["file"].tolist() == files
    assert images["value"].tolist() == list(range(n))
    assert failures.empty


@pytest.mark.slow
def test_eda_on_a_tree_recovers_the_planted_age_and_density_effects(tmp_path):
    """A hospital-style tree with strong planted effects: eda from the headers and outcomes.csv finds age
    (its interval covers the planted odds ratio) and density (rising with the level, intervals above 1) in
    the screening model; the exposure factors, which the synthetic machines set from density, sit in a model
    of their own, where they take much of density's effect: the reason they are kept out of the first."""
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app
    from mammo_insight.stats.design import AGE_TERM
    from mammo_insight.stats.regression import WITH_EXPOSURE
    from mammo_insight.synth.cohort import make_synthetic_cohort
    from mammo_insight.synth.table import effects_for

    root = tmp_path / "tree"
    make_synthetic_cohort(root, n_patients=1000, seed=7, size=(16, 12), prevalence=0.2, strong_effects=True)
    args = ["eda", "--dataset", "dicom", "--root", root, "--outcomes", root / "outcomes.csv", "--on", "study"]
    result = CliRunner().invoke(app, [*map(str, args), "--out", str(tmp_path / "eda")])
    assert result.exit_code == 0, result.output
    odds = pd.read_csv(tmp_path / "eda" / "tables" / "odds_ratios.csv")
    screening = odds[odds["model"] == "all breasts"].set_index("term")
    age = screening.loc[AGE_TERM]
    assert age["ci_low"] <= effects_for(strong=True).age_or_per_10y <= age["ci_high"] and age["ci_low"] > 1
    density = screening[screening.index.str.startswith("density=") & ~screening.index.str.contains("missing")]
    assert len(density) >= 2 and (density["ci_low"] > 1).all()
    assert density["odds_ratio"].is_monotonic_increasing  # C below D, as planted
    assert not screening.index.str.startswith(("kvp", "exposure_mas", "organ_dose_mgy")).any()
    exposure = odds[odds["model"] == WITH_EXPOSURE].set_index("term")
    assert exposure.index.str.startswith("kvp").any()
    assert exposure.loc[density.index, "odds_ratio"].max() < density["odds_ratio"].max()
    models = pd.read_csv(tmp_path / "eda" / "tables" / "models.csv").set_index("model")
    assert f"fitted in the model '{WITH_EXPOSURE}'" in models.loc["all breasts", "notes"]  # the page says why
