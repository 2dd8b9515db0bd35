"""Dataset adapters: real-data counts through the CLI, and fabricated layouts for every adapter and bad input."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.adapters import tables as tables_module
from mammo_insight.errors import CohortError

EXAMPLE_MAPPING = Path(__file__).resolve().parents[1] / "examples" / "cbis_ddsm_manifest.toml"


def run_cohort(*args: str) -> dict[str, int]:
    """`mammo-insight cohort ...` in process; the printed counts as a dict."""
    result = CliRunner().invoke(app, ["cohort", *args])
    assert result.exit_code == 0, result.output
    return {k: int(v) for k, v in re.findall(r"^(n_\w+): (\d+)$", result.output, flags=re.MULTILINE)}


# --- real data --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rsna_real_counts(data_dir, tmp_path):
    counts = run_cohort(
        "--dataset", "rsna", "--root", str(data_dir / "rsna"), "--out", str(tmp_path / "r.parquet")
    )
    assert counts["n_images"] == 54706
    assert counts["n_patients"] == 11913
    assert counts["n_breasts"] == 23826
    assert counts["n_positive_images"] == 1158


def test_mias_real_counts_and_annotations(data_dir, tmp_path):
    out = tmp_path / "mias.parquet"
    counts = run_cohort("--dataset", "mias", "--root", str(data_dir / "mias"), "--out", str(out))
    assert (counts["n_images"], counts["n_patients"], counts["n_positive_images"]) == (322, 161, 115)
    table = pd.read_parquet(out)
    first = table.set_index("image_id").loc[["mdb001", "mdb002"]]
    assert first["patient_id"].tolist() == ["mias_001", "mias_001"]
    assert first["laterality"].tolist() == ["R", "L"]  # Info.txt: odd numbers right, even left
    assert table["image_path"].map(lambda p: Path(p).exists()).all()
    assert table.loc[table["image_id"] == "mdb144", "malignant"].item() == 1.0  # one B and one M lesion
    assert table["malignant"].sum() < table["cancer"].sum()  # abnormal is not malignant
    ann = pd.read_parquet(tmp_path / "mias_annotations.parquet")
    mdb001 = ann[ann["image_id"] == "mdb001"]
    assert mdb001[["x", "y", "radius"]].to_numpy().tolist() == [[535.0, 1024.0 - 425.0, 197.0]]
    assert (ann["image_id"] == "mdb005").sum() == 2  # two lesions, one table row
    assert "mdb216" not in set(ann["image_id"])  # NOTE 3: abnormal, no centre


def test_cbis_real_manifest_through_example_mapping(data_dir, tmp_path):
    out = tmp_path / "cbis.parquet"
    counts = run_cohort(
        "--dataset",
        "generic",
        "--root",
        str(data_dir / "cbis_ddsm"),
        "--mapping",
        str(EXAMPLE_MAPPING),
        "--out",
        str(out),
    )
    assert counts["n_images"] == 4 and counts["n_patients"] == 1 and counts["n_breasts"] == 2
    table = pd.read_parquet(out)
    by_side = table.groupby("laterality")["cancer"].agg(["min", "max"])
    assert by_side.loc["L"].tolist() == [1.0, 1.0]
    assert by_side.loc["R"].tolist() == [0.0, 0.0]
    assert set(table["density"]) == {"C"}
    assert table["image_path"].map(lambda p: Path(p).is_file()).all()


RSNA_AS_GENERIC = """csv = "train.csv"
[columns]
patient_id = "patient_id"
image_id = "image_id"
laterality = "laterality"
view = "view"
age = "age"
site_id = "site_id"
machine_id = "machine_id"
density = "density"
birads = "BIRADS"
implant = "implant"
biopsy = "biopsy"
invasive = "invasive"
difficult_negative_case = "difficult_negative_case"
[label]
column = "cancer"
positive = [1]
negative = [0]
"""


@pytest.mark.slow
def test_generic_mapping_reproduces_the_rsna_adapter(data_dir, tmp_path):
    (tmp_path / "rsna.toml").write_text(RSNA_AS_GENERIC)
    generic = load_cohort("generic", data_dir / "rsna", tmp_path / "rsna.toml").table
    rsna = load_cohort("rsna", data_dir / "rsna").table
    columns = [c for c in rsna.columns if c != "image_path"]  # RSNA's CSV has no path column
    pd.testing.assert_frame_equal(generic[columns], rsna[columns])


# --- CLI errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, root, message",
    [
        ("nosuch", None, "unknown dataset 'nosuch'"),
        ("mias", "does/not/exist", "does not exist"),
    ],
)
def test_cohort_cli_clear_errors(tmp_path, dataset, root, message):
    root_arg = str(tmp_path / root) if root else str(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mammo_insight.cli.app",
            "cohort",
            "--dataset",
            dataset,
            "--root",
            root_arg,
            "--out",
            str(tmp_path / "o.parquet"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert message in " ".join(proc.stderr.split())  # rich wraps long lines
    assert "Traceback" not in proc.stderr + proc.stdout


# --- mini-MIAS, fabricated --------------------------------------------------------------------------


def test_mias_fabricated_pgm_and_height(tmp_path):
    info = (
        "header text\n\nmdb001 G CIRC B 10 20 5 \nmdb002 F NORM \nmdb003 D CALC M *NOTE 3*\nmdb004 D NORM\n"
    )
    (tmp_path / "Info.txt").write_text(info)
    from PIL import Image

    Image.fromarray(np.zeros((100, 80), np.uint8)).save(tmp_path / "mdb001.pgm")
    cohort = load_cohort("mias", tmp_path)
    assert cohort.table["patient_id"].tolist() == ["mias_001", "mias_001", "mias_003", "mias_003"]
    assert cohort.table["cancer"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert cohort.table["image_path"].notna().tolist() == [True, False, False, False]
    assert cohort.annotations[["x", "y"]].to_numpy().tolist() == [[10.0, 80.0]]  # height 100 from the file
    assert cohort.table["density"].isna().all() and cohort.factors == {"tissue": "categorical"}


def test_mias_missing_info(tmp_path):
    with pytest.raises(CohortError, match="Info.txt not found"):
        load_cohort("mias", tmp_path)


# --- CBIS-DDSM, fabricated --------------------------------------------------------------------------

MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
    "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
    "ROI mask file path\n"
)
CALC_HEADER = MASS_HEADER.replace("breast_density", "breast density").replace(
    "mass shape,mass margins", "calc type,calc distribution"
)


def _mass_row(pid, side, view, n, pathology, assessment, density=2, split="Training"):
    case = f"Mass-{split}_{pid}_{side}_{view}"
    return (
        f"{pid},{density},{side},{view},{n},mass,OVAL,CIRCUMSCRIBED,{assessment},{pathology},3,"
        f"{case}/1.2.3/1.2.4/000000.dcm,{case}_{n}/1.2.5/1.2.6/000000.dcm,{case}_{n}/1.2.5/1.2.7/000001.dcm\n"
    )


def _cbis_root(tmp_path: Path) -> Path:
    root = tmp_path / "cbis"
    root.mkdir()
    (root / "mass_case_description_train_set.csv").write_text(
        MASS_HEADER
        + _mass_row("P_00001", "LEFT", "CC", 1, "BENIGN", 3)
        + _mass_row("P_00001", "LEFT", "CC", 2, "MALIGNANT", 5)
        + _mass_row("P_00001", "LEFT", "MLO", 1, "BENIGN_WITHOUT_CALLBACK", 2, density=4)
    )
    (root / "csv").mkdir()
    (root / "csv" / "calc_case_description_test_set.csv").write_text(
        CALC_HEADER
        + _mass_row("P_00002", "RIGHT", "CC", 1, "BENIGN", 4, density=1, split="Test").replace(
            ",mass,", ",calcification,"
        )
    )
    # TCIA's downloader renames the folders below the case folder and the file itself.
    dcm = (
        root
        / "CBIS-DDSM"
        / "Mass-Training_P_00001_LEFT_CC"
        / "07-20-2016-DDSM-1"
        / "1.000-full-2"
        / "1-1.dcm"
    )
    dcm.parent.mkdir(parents=True)
    dcm.write_bytes(b"")
    return root


def test_cbis_fabricated(tmp_path):
    root = _cbis_root(tmp_path)
    cohort = load_cohort("cbis", root)
    t = cohort.table.set_index("image_id")
    assert list(t.index) == ["P_00001_LEFT_CC", "P_00001_LEFT_MLO", "P_00002_RIGHT_CC"]
    assert t["cancer"].tolist() == [1.0, 0.0, 0.0]  # malignant if any abnormality is; BWC is 0
    assert t["n_abnormalities"].tolist() == [2.0, 1.0, 1.0]
    assert t["birads"].tolist() == [5.0, 2.0, 4.0]
    assert t["density"].tolist() == ["B", "D", "A"]  # both column spellings read
    assert t["laterality"].tolist() == ["L", "L", "R"]
    assert t.loc["P_00001_LEFT_CC", "image_path"].endswith("1-1.dcm")
    assert t.loc[["P_00001_LEFT_MLO", "P_00002_RIGHT_CC"], "image_path"].isna().all()
    assert t.loc["P_00001_LEFT_CC", "roi_mask_path"].count(";") == 1
    assert t["split"].tolist() == ["train", "train", "test"]
    assert t.loc["P_00002_RIGHT_CC", "abnormality_type"] == "calcification"


def test_cbis_no_csv(tmp_path):
    with pytest.raises(CohortError, match="no CBIS-DDSM description CSV"):
        load_cohort("cbis", tmp_path)


def test_cbis_missing_column_named(tmp_path):
    (tmp_path / "mass_case_description_train_set.csv").write_text(
        MASS_HEADER.replace("pathology", "path") + _mass_row("P_1", "LEFT", "CC", 1, "BENIGN", 3)
    )
    with pytest.raises(
        CohortError, match=r"mass_case_description_train_set.csv lacks column\(s\) 'pathology'"
    ):
        load_cohort("cbis", tmp_path)


def test_cbis_bad_side_names_line(tmp_path):
    (tmp_path / "mass_case_description_train_set.csv").write_text(
        MASS_HEADER
        + _mass_row("P_1", "LEFT", "CC", 1, "BENIGN", 3)
        + _mass_row("P_2", "BOTH", "CC", 1, "BENIGN", 3)
    )
    with pytest.raises(
        CohortError, match=r"'left or right breast' has unknown value\(s\) \['BOTH'\] in line\(s\) 3"
    ):
        load_cohort("cbis", tmp_path)


def test_cbis_unknown_pathology_warns_and_leaves_label_empty(tmp_path, caplog):
    (tmp_path / "mass_case_description_train_set.csv").write_text(
        MASS_HEADER
        + _mass_row("P_1", "LEFT", "CC", 1, "BENIGN", 3)
        + _mass_row("P_2", "LEFT", "CC", 1, "UNSURE", 3)
    )
    with caplog.at_level(logging.WARNING):
        cohort = load_cohort("cbis", tmp_path)
    assert cohort.table["cancer"].isna().tolist() == [False, True]
    assert "'UNSURE'" in caplog.text and "line(s) 3" in caplog.text


# --- CMMD, fabricated -------------------------------------------------------------------------------


def write_dicom(path: Path, **tags) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    for key, value in tags.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _view_code(value: str, meaning: str) -> list[Dataset]:
    item = Dataset()
    item.CodeValue, item.CodeMeaning = value, meaning
    return [item]


CMMD_ROWS = [
    ("D1-0001", "L", 44, 2, "mass", "Malignant", "Luminal A"),
    ("D1-0002", "R", 61, 2, "calcification", "Benign", ""),
    ("D1-0004", "L", 50, 2, "both", "Benign", ""),
]


def _cmmd_root(tmp_path: Path, clinical: str = "csv") -> Path:
    root = tmp_path / "cmmd"
    frame = pd.DataFrame(
        CMMD_ROWS, columns=["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"]
    )
    root.mkdir()
    if clinical == "csv":
        frame.to_csv(root / "CMMD_clinicaldata_revision.csv", sep=";", index=False)
    else:
        frame.to_excel(root / "CMMD_clinicaldata_revision.xlsx", index=False)
    series = "CMMD/D1-0001/07-18-2010-NA-1/1.000000-NA-1"
    write_dicom(root / series / "1-1.dcm", PatientID="D1-0001", ImageLaterality="L", ViewPosition="CC")
    write_dicom(
        root / series / "1-2.dcm",
        PatientID="D1-0001",
        ImageLaterality="L",
        ViewCodeSequence=_view_code("399368009", "medio-lateral oblique"),
    )
    write_dicom(root / series / "1-3.dcm", PatientID="D1-0001", ImageLaterality="R", ViewPosition="MLO")
    write_dicom(
        root / "CMMD/D1-0002/s/se/1-1.dcm",
        PatientID="D1-0002",
        ViewCodeSequence=_view_code("399162004", "cranio-caudal"),
    )  # no laterality: table has R only
    write_dicom(
        root / "CMMD/D1-0003/s/se/1-1.dcm", PatientID="D1-0003", ImageLaterality="R", ViewPosition="CC"
    )
    (root / "CMMD/D1-0003/s/se/broken.dcm").write_bytes(b"not a dicom")
    return root


def test_cmmd_fabricated(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        cohort = load_cohort("cmmd", _cmmd_root(tmp_path))
    t = cohort.table.sort_values("image_id").reset_index(drop=True)
    assert t["patient_id"].tolist() == ["D1-0001"] * 3 + ["D1-0002", "D1-0003"]
    assert t["laterality"].tolist() == ["L", "L", "R", "R", "R"]
    assert t["view"].tolist() == ["CC", "MLO", "MLO", "CC", "CC"]
    np.testing.assert_array_equal(t["cancer"], [1.0, 1.0, np.nan, 0.0, np.nan])  # R of D1-0001 not in table
    assert t.loc[0, "age"] == 44 and t.loc[0, "subtype"] == "Luminal A"
    assert cohort.factors == {"abnormality": "categorical"} and "abnormality" not in cohort.post_outcome
    assert t["image_path"].map(lambda p: Path(p).is_file()).all()
    assert "broken.dcm" in caplog.text and "D1-0003" in caplog.text


def test_cmmd_xlsx_matches_csv(tmp_path):
    pytest.importorskip("openpyxl")
    from_xlsx = load_cohort("cmmd", _cmmd_root(tmp_path, clinical="xlsx")).table
    assert from_xlsx["cancer"].notna().sum() == 3 and from_xlsx["age"].notna().sum() == 4


def test_cmmd_xlsx_without_openpyxl_is_clear(tmp_path, monkeypatch):
    root = tmp_path / "cmmd"
    root.mkdir()
    (root / "CMMD_clinicaldata_revision.xlsx").write_bytes(b"PK")
    real = tables_module.importlib.util.find_spec
    monkeypatch.setattr(
        tables_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openpyxl" else real(name, *a),
    )
    with pytest.raises(CohortError, match=r"needs the optional package 'openpyxl'.*mammo-insight\[excel\]"):
        load_cohort("cmmd", root)


def test_cmmd_without_dicoms_gives_breast_rows(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    pd.DataFrame(
        CMMD_ROWS, columns=["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"]
    ).to_csv(root / "CMMD_clinicaldata_revision.csv", index=False)
    t = load_cohort("cmmd", root).table
    assert t["image_id"].tolist() == ["D1-0001_L", "D1-0002_R", "D1-0004_L"]
    assert t["cancer"].tolist() == [1.0, 0.0, 0.0] and t["image_path"].isna().all()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.drop(columns=["classification"]), r"lacks column\(s\) 'classification'"),
        (
            lambda f: f.assign(LeftRight=["L", "B", "R"]),
            r"'LeftRight' has unknown value\(s\) \['B'\] in line\(s\) 3",
        ),
    ],
)
def test_cmmd_bad_clinical_table(tmp_path, edit, message):
    frame = pd.DataFrame(
        CMMD_ROWS, columns=["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"]
    )
    edit(frame).to_csv(tmp_path / "CMMD_clinicaldata_revision.csv", index=False)
    with pytest.raises(CohortError, match=message):
        load_cohort("cmmd", tmp_path)


def test_cmmd_no_clinical_table(tmp_path):
    with pytest.raises(CohortError, match="no clinical table"):
        load_cohort("cmmd", tmp_path)


# --- INbreast, fabricated ---------------------------------------------------------------------------

INBREAST_ROWS = [  # file name, patient hash, laterality, view, ACR, Bi-Rads
    ("20586908", "6c613a14b80a8591", "R", "CC", "2", "1"),
    ("20586934", "6c613a14b80a8591", "R", "MLO", "2", "3"),
    ("22614074", "f4b2d377f43ba0bd", "L", "CC", "4", "4a"),
    ("22614097", "f4b2d377f43ba0bd", "L", "MLO", "4", "4c"),
    ("24065530", "e2a2b3b5c5d6e7f8", "R", "CC", " ", "5"),
    ("24065557", None, "R", "MLO", "3", "6"),  # no DICOM on disk
]


def _inbreast_root(tmp_path: Path, birads_override: str | None = None) -> Path:
    root = tmp_path / "INbreast Release 1.0"
    (root / "AllDICOMs").mkdir(parents=True)
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    for name, patient, side, view, acr, birads in INBREAST_ROWS:
        lines.append(f"removed;removed;{side};{view};201001;{name};{acr};{birads_override or birads}")
        if patient:
            (root / "AllDICOMs" / f"{name}_{patient}_MG_{side}_{view}_ANON.dcm").write_bytes(b"")
    lines += [";;;;;;;", ";;;;;;;"]  # trailing blank spreadsheet rows, as exports often have
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    return root


def test_inbreast_fabricated(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        cohort = load_cohort("inbreast", _inbreast_root(tmp_path))
    t = cohort.table
    np.testing.assert_array_equal(t["cancer"], [0.0, 0.0, np.nan, 1.0, 1.0, 1.0])
    assert t["birads"].tolist() == [1.0, 3.0, 4.0, 4.0, 5.0, 6.0]
    assert t["birads_category"].tolist() == ["1", "3", "4a", "4c", "5", "6"]
    assert t["patient_id"].tolist()[:5] == ["6c613a14b80a8591"] * 2 + ["f4b2d377f43ba0bd"] * 2 + [
        "e2a2b3b5c5d6e7f8"
    ]
    assert t.loc[5, "patient_id"] == "24065557" and pd.isna(t.loc[5, "image_path"])
    assert t["density"].tolist()[:4] == ["B", "B", "D", "D"] and pd.isna(t.loc[4, "density"])  # blank ACR
    assert t["age"].isna().all()  # "removed" in the release
    assert "no DICOM" in caplog.text and "line(s) 7" in caplog.text
    assert "4c, 5 or 6" in cohort.label_meaning


def test_inbreast_unknown_birads_names_line(tmp_path):
    with pytest.raises(CohortError, match=r"'Bi-Rads' has unknown value\(s\) \['7'\] in line\(s\) 2, 3"):
        load_cohort("inbreast", _inbreast_root(tmp_path, birads_override="7"))


def test_inbreast_xls_without_xlrd_is_clear(tmp_path, monkeypatch):
    (tmp_path / "INbreast.xls").write_bytes(b"\xd0\xcf")
    real = tables_module.importlib.util.find_spec
    monkeypatch.setattr(
        tables_module.importlib.util, "find_spec", lambda name, *a: None if name == "xlrd" else real(name, *a)
    )
    with pytest.raises(CohortError, match="needs the optional package 'xlrd'"):
        load_cohort("inbreast", tmp_path)


def test_inbreast_no_table(tmp_path):
    with pytest.raises(CohortError, match="no INbreast.csv"):
        load_cohort("inbreast", tmp_path)


# --- generic, fabricated ----------------------------------------------------------------------------

GENERIC_CSV = """pid,side,proj,age_years,dens,outcome,img,scanner,bmi
a,LEFT,CC,51,1,yes,a/l_cc.png,X,22.5
a,LEFT,MLO,51,1,yes,a/l_mlo.png,X,22.5
a,RIGHT,CC,51,1,no,a/r_cc.png,Y,?
b,RIGHT,CC,?,4,maybe,b/r_cc.png,?,30
"""

GENERIC_TOML = """csv = "table.csv"
image_root = "images"
missing_values = ["?"]
label_meaning = "cancer = 1 when outcome is yes"

[columns]
patient_id = "pid"
laterality = "side"
view = "proj"
age = "age_years"
density = "dens"
image_path = "img"

[label]
column = "outcome"
positive = ["yes"]
negative = ["no"]

[values.laterality]
LEFT = "L"
RIGHT = "R"

[values.density]
1 = "A"
4 = "D"

[factors]
scanner = "categorical"
bmi = "continuous"
"""


def _generic(tmp_path: Path, csv: str = GENERIC_CSV, toml: str = GENERIC_TOML) -> tuple[Path, Path]:
    (tmp_path / "table.csv").write_text(csv)
    (tmp_path / "m.toml").write_text(toml)
    return tmp_path, tmp_path / "m.toml"


def test_generic_fabricated(tmp_path):
    root, mapping = _generic(tmp_path)
    cohort = load_cohort("generic", root, mapping)
    t = cohort.table
    assert t["laterality"].tolist() == ["L", "L", "R", "R"]
    assert t["breast_id"].tolist() == ["a_L", "a_L", "a_R", "b_R"]
    np.testing.assert_array_equal(t["cancer"], [1.0, 1.0, 0.0, np.nan])  # "maybe" is neither list
    np.testing.assert_array_equal(t["age"], [51, 51, 51, np.nan])  # "?" is missing
    assert t["density"].tolist() == ["A", "A", "A", "D"]
    assert t["image_id"].tolist() == ["a/l_cc.png", "a/l_mlo.png", "a/r_cc.png", "b/r_cc.png"]
    assert t["image_path"].iloc[0] == str((tmp_path / "images" / "a" / "l_cc.png").absolute())
    assert cohort.factors == {"scanner": "categorical", "bmi": "continuous"}
    assert t["bmi"].dtype == np.float64 and pd.isna(t.loc[2, "bmi"]) and pd.isna(t.loc[3, "scanner"])
    assert cohort.label_meaning == "cancer = 1 when outcome is yes"


def test_generic_without_negative_values_calls_the_rest_zero(tmp_path):
    root, mapping = _generic(tmp_path, toml=GENERIC_TOML.replace('negative = ["no"]\n', ""))
    np.testing.assert_array_equal(load_cohort("generic", root, mapping).table["cancer"], [1.0, 1.0, 0.0, 0.0])


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/etc/passwd", "a/../../outside.png"])
def test_generic_rejects_paths_outside_image_root(tmp_path, bad_path):
    root, mapping = _generic(tmp_path, csv=GENERIC_CSV.replace("b/r_cc.png", bad_path))
    with pytest.raises(
        CohortError, match=r"column 'img' points outside the image root .* line\(s\) 5"
    ) as err:
        load_cohort("generic", root, mapping)
    assert bad_path in str(err.value) and "m.toml" in str(err.value)


def test_generic_mapping_names_absent_column(tmp_path):
    root, mapping = _generic(tmp_path, toml=GENERIC_TOML.replace('view = "proj"', 'view = "projection"'))
    with pytest.raises(
        CohortError, match=r"m.toml names column\(s\) \['projection'\] that .*table.csv lacks"
    ):
        load_cohort("generic", root, mapping)


def test_generic_junk_in_numeric_column_names_column_and_row(tmp_path):
    root, mapping = _generic(tmp_path, csv=GENERIC_CSV.replace(",51,", ",fifty,", 1))
    with pytest.raises(
        CohortError, match=r"column 'age' must be numeric; line\(s\) 2 hold non-numeric .*'fifty'"
    ):
        load_cohort("generic", root, mapping)


def test_generic_junk_in_continuous_factor_names_column_and_line(tmp_path):
    root, mapping = _generic(tmp_path, csv=GENERIC_CSV.replace(",30\n", ",heavy\n"))
    with pytest.raises(CohortError, match=r"continuous factor 'bmi' .*\['heavy'\] in line\(s\) 5"):
        load_cohort("generic", root, mapping)


def test_generic_unmapped_laterality_is_named(tmp_path):
    root, mapping = _generic(tmp_path, toml=GENERIC_TOML.replace('RIGHT = "R"\n', ""))
    with pytest.raises(
        CohortError, match=r"'laterality' has unknown value\(s\) \['RIGHT'\] in line\(s\) 4, 5"
    ):
        load_cohort("generic", root, mapping)


@pytest.mark.parametrize(
    "toml, message",
    [
        (None, r"mapping file is required"),
        ("csv = [unclosed", r"is not valid TOML"),
        ("colour = 1\n" + GENERIC_TOML, r"unknown key\(s\) \['colour'\]"),
        (
            GENERIC_TOML.replace("[columns]", '[columns]\nmammo_view = "proj"'),
            r"non-canonical column\(s\) \['mammo_view'\]",
        ),
        (
            GENERIC_TOML.replace('[label]\ncolumn = "outcome"\npositive = ["yes"]\nnegative = ["no"]\n', ""),
            r"needs a label",
        ),
        (GENERIC_TOML.replace('bmi = "continuous"', 'bmi = "ordinal"'), r"'categorical' or 'continuous'"),
        (
            GENERIC_TOML.replace('csv = "table.csv"', 'csv = "nope.csv"'),
            r"nope.csv \(key 'csv' in .*m.toml\) does not exist",
        ),
    ],
)
def test_generic_bad_mapping(tmp_path, toml, message):
    root, mapping = _generic(tmp_path, toml=toml or GENERIC_TOML)
    with pytest.raises(CohortError, match=message):
        load_cohort("generic", root, None if toml is None else mapping)
