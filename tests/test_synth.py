"""The synthetic cohort: RSNA layout, decodable DICOM variety, determinism and recoverable planted effects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import statsmodels.formula.api as smf
from libjpeg import decode as libjpeg_decode
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1, RLELossless

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.imaging.jpeg_lossless import encode_jpeg_lossless
from mammo_insight.synth.cohort import TRUE_EFFECTS, breast_level, make_synthetic_cohort, make_synthetic_table
from mammo_insight.synth.table import RSNA_COLUMNS

SIZE = (80, 60)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    summary = make_synthetic_cohort(out, n_patients=8, seed=3, size=SIZE, prevalence=0.4)
    return out, summary


def _files(root: Path) -> list[Path]:
    return sorted((root / "train_images").rglob("*.dcm"))


def _display(ds: pydicom.Dataset) -> np.ndarray:
    """Correct display: modality LUT, VOI LUT, then invert MONOCHROME1 (bright = dense)."""
    modality = apply_modality_lut(ds.pixel_array, ds)
    if np.array_equal(modality, np.round(modality)):
        modality = modality.astype(np.int64)  # a VOI LUT Sequence indexes integers
    arr = apply_voi_lut(modality, ds, prefer_lut=True).astype(np.float64)
    return arr.max() + arr.min() - arr if ds.PhotometricInterpretation == "MONOCHROME1" else arr


def test_cohort_loads_validates_and_counts(cohort_dir):
    out, summary = cohort_dir
    raw = pd.read_csv(out / "train.csv", dtype=str, keep_default_na=False)
    assert list(raw.columns) == RSNA_COLUMNS
    cohort = load_cohort("rsna", out)
    t = cohort.table
    assert len(t) == summary["n_images"] == len(_files(out))
    assert t["patient_id"].nunique() == summary["n_patients"] == 8
    assert t["breast_id"].nunique() == summary["n_breasts"] == 16
    assert int(t["cancer"].sum()) == summary["n_positive_images"]
    for _, views in t.groupby("breast_id")["view"]:
        assert {"CC", "MLO"} <= set(views)
    assert all(Path(p).exists() for p in t["image_path"])
    # the label is per breast: all images of a breast agree
    assert (t.groupby("breast_id")["cancer"].nunique() == 1).all()
    assert set(raw["difficult_negative_case"]) <= {"True", "False"}


def test_annotations_cover_exactly_the_positive_images(cohort_dir):
    out, summary = cohort_dir
    cohort = load_cohort("rsna", out)
    ann = cohort.annotations
    assert list(ann.columns) == ["image_id", "x", "y", "radius"]
    assert ann["image_id"].map(type).eq(str).all() and ann["x"].dtype == np.float64
    positives = set(cohort.table.loc[cohort.table["cancer"] == 1, "image_id"])
    assert len(positives) > 0
    assert set(ann["image_id"]) == positives and len(ann) == len(positives) == summary["n_lesions"]


def test_lesions_lie_inside_the_breast_box_and_are_brighter(cohort_dir):
    out, _ = cohort_dir
    cohort = load_cohort("rsna", out)
    boxes = pd.read_csv(out / "breast_boxes.csv", dtype={"image_id": str}).set_index("image_id")
    paths = cohort.table.set_index("image_id")["image_path"]
    for _, les in cohort.annotations.iterrows():
        b = boxes.loc[les["image_id"]]
        assert b["x0"] <= les["x"] < b["x1"] and b["y0"] <= les["y"] < b["y1"]
        ds = pydicom.dcmread(paths[les["image_id"]])
        assert 0.03 * ds.Rows <= les["radius"] <= 0.08 * ds.Rows
        img = _display(ds)
        yy, xx = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
        d2 = (xx - les["x"]) ** 2 + (yy - les["y"]) ** 2
        core = img[d2 <= (0.5 * les["radius"]) ** 2].mean()
        ring = img[(d2 >= (1.5 * les["radius"]) ** 2) & (d2 <= (2.5 * les["radius"]) ** 2)].mean()
        assert core > ring, f"lesion in {les['image_id']} is not brighter than its surroundings"


def test_every_dicom_decodes_with_correct_display(cohort_dir):
    out, _ = cohort_dir
    boxes = pd.read_csv(out / "breast_boxes.csv", dtype={"image_id": str}).set_index("image_id")
    seen: dict[str, set] = {
        "syntax": set(),
        "photometric": set(),
        "bits": set(),
        "voi": set(),
        "shape": set(),
    }
    for path in _files(out):
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        assert arr.shape == (ds.Rows, ds.Columns)
        assert int(arr.max()) < 2**ds.BitsStored
        assert str(ds.PatientName).startswith("SYNTH^") and ds.PatientBirthDate and ds.InstitutionName
        seen["syntax"].add(ds.file_meta.TransferSyntaxUID)
        seen["photometric"].add(ds.PhotometricInterpretation)
        seen["bits"].add(int(ds.BitsStored))
        seen["voi"].add("LUT" if "VOILUTSequence" in ds else ds.VOILUTFunction)
        seen["shape"].add(arr.shape)
        img = _display(ds)
        b = boxes.loc[path.stem]
        inside = np.zeros(img.shape, dtype=bool)
        inside[b["y0"] : b["y1"], b["x0"] : b["x1"]] = True
        assert img[inside].mean() > img[~inside].mean() + 0.1 * (img.max() - img.min()), path.name
        # MONOCHROME1 really stores inverted values: a reader that ignores it sees dark tissue
        raw_brighter = arr[inside].mean() > arr[~inside].mean()
        assert raw_brighter == (ds.PhotometricInterpretation == "MONOCHROME2"), path.name
        if "PixelPaddingValue" in ds:
            seen["padded"] = seen.get("padded", 0) + 1
            strip = (arr == ds.PixelPaddingValue).all(axis=0)
            assert strip.sum() >= 0.05 * ds.Columns and not strip[b["x0"] : b["x1"]].any(), path.name
    assert seen["syntax"] == {JPEG2000Lossless, JPEGLosslessSV1, RLELossless, ExplicitVRLittleEndian}
    assert seen["photometric"] == {"MONOCHROME1", "MONOCHROME2"}
    assert seen["bits"] == {12, 16}
    assert seen["voi"] == {"LINEAR", "SIGMOID", "LUT"}
    assert len(seen["shape"]) >= 2
    assert seen.get("padded", 0) >= 1


@pytest.mark.parametrize("precision", [8, 12, 16])
def test_jpeg_lossless_sv1_encoder_roundtrips_bit_exactly(precision):
    rng = np.random.default_rng(precision)
    img = rng.integers(0, 2**precision, size=(37, 29)).astype(np.uint16)
    img[:5] = 0
    img[5:8] = 2**precision - 1  # large jumps exercise the modulo-2**16 differences
    img[10:20, :15] = img[10, 0]
    decoded = libjpeg_decode(encode_jpeg_lossless(img, precision))
    np.testing.assert_array_equal(decoded, img)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    a = make_synthetic_cohort(tmp_path / "a", n_patients=3, seed=11, size=(48, 36))
    b = make_synthetic_cohort(tmp_path / "b", n_patients=3, seed=11, size=(48, 36))
    make_synthetic_cohort(tmp_path / "c", n_patients=3, seed=12, size=(48, 36))
    assert {k: v for k, v in a.items() if k != "out"} == {k: v for k, v in b.items() if k != "out"}
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_a_write_that_fails_mid_file_leaves_no_torn_dicom(tmp_path, monkeypatch):
    """synth writes each DICOM (and each table) through files.atomic_write: a save that dies half-way
    (a kill, a full disk) leaves no file that looks complete, so a rerun never reads a torn film."""
    real_save = pydicom.Dataset.save_as
    calls = []

    def dies_on_the_third(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"DICM half a file")
            raise OSError(28, "No space left on device")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", dies_on_the_third)
    with pytest.raises(OSError, match="No space"):
        make_synthetic_cohort(tmp_path / "c", n_patients=3, seed=11, size=(48, 36))
    written = sorted((tmp_path / "c").rglob("*.dcm"))
    assert len(written) == 2 and not list((tmp_path / "c").rglob("*.tmp"))
    for path in written:
        assert pydicom.dcmread(path).pixel_array.shape == (48, 36)


def _fit(n_patients: int, seed: int):
    breasts = breast_level(make_synthetic_table(n_patients, seed=seed))
    breasts["age10"] = (breasts["age_true"] - TRUE_EFFECTS.age_center) / 10.0
    return smf.logit("cancer ~ age10 + C(density_true)", breasts).fit(disp=0)


def _true_log_or() -> dict[str, float]:
    ors = TRUE_EFFECTS.odds_ratios()
    truth = {"age10": np.log(ors["age_per_10y"])}
    for level in "BCD":
        truth[f"C(density_true)[T.{level}]"] = np.log(ors[f"density_{level}_vs_A"])
    return truth


def test_planted_effects_are_recovered_by_logistic_regression():
    fit = _fit(20_000, seed=0)  # 40,000 breasts: every true log-OR within 3.3 standard errors
    for name, value in _true_log_or().items():
        z = (fit.params[name] - value) / fit.bse[name]
        assert abs(z) < 3.3, f"{name}: estimate {fit.params[name]:.3f} vs planted {value:.3f} (z={z:.1f})"


@pytest.mark.slow
def test_95ci_from_2000_women_covers_the_planted_odds_ratios():
    """At the scale of a small study the 95% CIs hold the planted ORs about 95% of the time."""
    truth = _true_log_or()
    hits = []
    for seed in range(30):
        ci = _fit(2_000, seed=seed).conf_int()
        hits.append([ci.loc[name, 0] < value < ci.loc[name, 1] for name, value in truth.items()])
    coverage = np.asarray(hits).mean(axis=0)
    assert (coverage >= 0.8).all(), dict(zip(truth, coverage, strict=True))
    assert coverage.mean() >= 0.88, dict(zip(truth, coverage, strict=True))


def test_site_machine_and_implant_have_no_planted_effect():
    breasts = make_synthetic_table(20_000, seed=2)
    breasts = breasts.drop_duplicates(["patient_id", "laterality"]).copy()
    breasts["age10"] = (breasts["age_true"] - TRUE_EFFECTS.age_center) / 10.0
    fit = smf.logit("cancer ~ age10 + C(density_true) + C(site_id) + implant", breasts).fit(disp=0)
    for name in ("C(site_id)[T.2]", "implant"):
        assert abs(fit.params[name] / fit.bse[name]) < 3.3, name
    assert TRUE_EFFECTS.odds_ratios()["site_2_vs_1"] == 1.0


def test_prevalence_flag_sets_the_fraction_of_positive_breasts():
    for prevalence in (0.02, 0.2):
        breasts = breast_level(make_synthetic_table(5_000, seed=1, prevalence=prevalence))
        se = np.sqrt(prevalence * (1 - prevalence) / len(breasts))
        assert abs(breasts["cancer"].mean() - prevalence) < 4 * se


def test_table_mimics_rsna_structure():
    t = make_synthetic_table(3_000, seed=5)
    site1 = t["site_id"] == "1"
    assert (t.loc[~site1, "density"] == "").all() and (t.loc[site1, "density"] != "").mean() > 0.99
    machines = t.groupby("machine_id")["site_id"].nunique()
    assert (machines == 1).all() and t["machine_id"].nunique() >= 8
    cancer = t["cancer"] == 1
    assert (t.loc[cancer, "biopsy"] == 1).all()
    assert 0.0 < t.loc[~cancer, "biopsy"].mean() < 0.1
    assert (t.loc[~cancer, "invasive"] == 0).all() and 0.5 < t.loc[cancer, "invasive"].mean() < 0.9
    assert not t.loc[cancer, "difficult_negative_case"].any()
    assert (t.loc[t["difficult_negative_case"], "biopsy"] == 1).any()
    assert (t.loc[cancer & site1, "BIRADS"] == "0").all() and (t.loc[cancer & ~site1, "BIRADS"] == "").all()
    assert (t.loc[~site1, "BIRADS"] == "").mean() > 0.8
    assert set(t.loc[site1 & ~cancer, "BIRADS"]) == {"", "0", "1", "2"}
    assert 0.01 < t.groupby("patient_id")["implant"].first().mean() < 0.05
    assert {"ML", "LM", "AT"} & set(t["view"])
    age = t.drop_duplicates("patient_id")["age"].dropna()
    assert 55 < age.mean() < 62 and 8 < age.std() < 12 and age.min() >= 35 and age.max() <= 90


def test_synth_cli_writes_the_cohort(tmp_path):
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app

    result = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path / "c"), "--patients", "2", "--seed", "1", "--size", "48x36"]
    )
    assert result.exit_code == 0, result.output
    assert "n_images:" in result.output
    assert load_cohort("rsna", tmp_path / "c").table["patient_id"].nunique() == 2
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["stage"] == "synth" and manifest["headline"]["women"] == "2"
