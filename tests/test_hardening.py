"""Hardening (issue 8, items 5-6): bad files, empty folders, junk CSVs, HTML escaping, safe checkpoint
loading, no identifying DICOM tags in any output, image paths kept inside their root, same seed same metrics.

CLI cases run `python -m mammo_insight.cli.app` in a subprocess, so the exit code and stderr are the
user's. kill -9 + rerun is tested where the stages live: tests/test_imaging_pipeline.py
(test_kill_mid_run_then_rerun_equals_uninterrupted) and tests/test_train_run.py
(test_killed_training_resumes_and_ends_where_an_uninterrupted_run_ends).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from phi import holds, output_texts
from pydicom.uid import UID

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "<script>alert(1)</script>"
IMG_TAG = "<img src=x onerror=alert(2)>"
# identifying tags no output may carry (their values are made distinctive below)
IDENTIFYING = {
    "PatientName": "ZQ^SECRETNAME",
    "PatientBirthDate": "19230517",
    "OtherPatientIDs": "ZQOTHERID77",
    "PatientAddress": "ZQ 42 HIDDEN LANE",
    "InstitutionName": "ZQ SECRET HOSPITAL",
    "ReferringPhysicianName": "ZQ^REFERRER",
    "AccessionNumber": "ZQACC9137",
    "InstitutionAddress": "ZQ 7 CLINIC ROAD",
    "PatientTelephoneNumbers": "ZQ555123987",
}


def cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh process (wide terminal so rich does not wrap messages)."""
    env = {**os.environ, "COLUMNS": "1000", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mammo_insight.cli.app", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def assert_clean_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, no traceback, and a message on stderr containing each word."""
    both = result.stdout + result.stderr
    assert result.returncode == 2, both
    assert "Traceback" not in both, both
    for word in words:
        assert word in result.stderr, (word, result.stderr)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("hard_synth")
    make_synthetic_cohort(root, n_patients=5, seed=11, size=(96, 64), prevalence=0.5)
    return root


def _copy(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


def _syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


# 1. corrupt, truncated, non-DICOM, unsupported transfer syntax, no pixel data ---------------------------


def _damage(root: Path) -> dict[str, str]:
    """Overwrite six of the cohort's DICOMs in place; image_id -> words its failure reason must hold."""
    from pydicom.encaps import encapsulate

    files = sorted((root / "train_images").rglob("*.dcm"))
    j2k = [f for f in files if _syntax(f) == "1.2.840.10008.1.2.4.90"]
    native = [f for f in files if _syntax(f) == "1.2.840.10008.1.2.1"]
    others = [f for f in files if f not in j2k[:2] and f not in native[:3]]
    assert len(j2k) >= 2 and len(native) >= 3 and others, (
        "the synthetic cohort lacks the syntaxes this test needs"
    )
    truncated, corrupt = j2k[:2]
    made_up, mpeg, no_pixels = native[:3]
    not_dicom = others[0]
    expect = {}

    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    expect[truncated.stem] = "truncated"
    data = bytearray(corrupt.read_bytes())
    start = bytes(data).index(b"\xff\x4f\xff\x51")  # the JPEG 2000 codestream: garble its header
    data[start : start + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(data))
    expect[corrupt.stem] = "could not be decoded"
    ds = pydicom.dcmread(made_up)
    ds.file_meta.TransferSyntaxUID = UID("1.2.826.0.1.3680043.99999.1.2.3")  # a syntax no decoder knows
    ds.save_as(made_up)
    expect[made_up.stem] = "1.2.826.0.1.3680043.99999.1.2.3"
    ds = pydicom.dcmread(mpeg)
    ds.PixelData = encapsulate([bytes(ds.PixelData[:256])])
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no installed decoder
    ds.save_as(mpeg)
    expect[mpeg.stem] = "MPEG2"
    ds = pydicom.dcmread(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels)
    expect[no_pixels.stem] = "no pixel data"
    not_dicom.write_text("this is a spreadsheet, not a mammogram\n1,2,3\n")
    expect[not_dicom.stem] = "not a DICOM"
    return expect


@pytest.mark.slow
def test_preprocess_cli_lists_every_bad_file_and_caches_the_rest(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path / "data")
    expect = _damage(root)
    out = tmp_path / "cache"
    result = cli(
        "preprocess",
        "--dataset",
        "rsna",
        "--root",
        root,
        "--out",
        out,
        "--size",
        "64x32",
        "--sheet-size",
        "2",
        "--max-failed-share",  # 6 of 20 fail here, over the default 10% that makes the exit status 2
        "1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{len(expect)} image(s) failed" in result.stdout
    failures = pd.read_csv(out / "failures.csv", dtype=str).set_index("image_id")
    assert set(failures.index) == set(expect)
    for image_id, words in expect.items():
        reason = failures.loc[image_id, "reason"]
        assert f"{image_id}.dcm" in reason and words in reason, (image_id, reason)
    index = pd.read_parquet(out / "index.parquet")
    ok = index[index["status"] == "ok"]
    assert len(index) == len(pd.read_csv(root / "train.csv")) and len(ok) == len(index) - len(expect)
    assert all((out / p).is_file() for p in ok["cache_path"])
    assert index.loc[index["status"] != "ok", "cache_path"].isna().all()


# 2. empty folders --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset", ["rsna", "mias", "cbis", pytest.param("cmmd", marks=pytest.mark.slow), "inbreast"]
)
def test_cohort_on_an_empty_folder_names_it(dataset, tmp_path):
    empty = tmp_path / "empty_dataset"
    empty.mkdir()
    assert_clean_error(
        cli("cohort", "--dataset", dataset, "--root", empty, "--out", tmp_path / "c.parquet"), "empty_dataset"
    )
    assert not (tmp_path / "c.parquet").exists()


@pytest.mark.parametrize("command", ["preprocess", pytest.param("eda", marks=pytest.mark.slow)])
def test_preprocess_and_eda_on_an_empty_folder_name_it(command, tmp_path):
    empty = tmp_path / "empty_dataset"
    empty.mkdir()
    assert_clean_error(
        cli(command, "--dataset", "rsna", "--root", empty, "--out", tmp_path / "out"), "empty_dataset"
    )


def test_preprocess_with_a_table_but_no_images_names_the_folder(synth_root, tmp_path):
    root = tmp_path / "no_images"
    root.mkdir()
    shutil.copy(synth_root / "train.csv", root / "train.csv")
    result = cli(
        "preprocess", "--dataset", "rsna", "--root", root, "--out", tmp_path / "cache", "--size", "64x32"
    )
    assert_clean_error(result, "no_images", "none of the")


# 3. CSVs with missing columns or junk values -----------------------------------------------------------

JUNK = {  # kind -> (change to train.csv, words the message must hold: rows as CSV lines, header = line 1)
    "age": (lambda t: t.loc.__setitem__((2, "age"), "abc"), ["'age'", "line(s) 4", "abc"]),
    "laterality": (lambda t: t.loc.__setitem__((3, "laterality"), "X"), ["'laterality'", "line(s) 5", "X"]),
    "cancer": (lambda t: t.loc.__setitem__((1, "cancer"), "2"), ["'cancer'", "line(s) 3", "2"]),
    "duplicate": (lambda t: t.loc.__setitem__((4, "image_id"), t.loc[0, "image_id"]), ["'image_id'", "2, 6"]),
    "missing": (lambda t: t.pop("laterality"), ["laterality", "lacks"]),
}


@pytest.mark.parametrize("command", ["cohort", pytest.param("eda", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", sorted(JUNK))
def test_junk_csv_gives_a_message_naming_column_and_rows(kind, command, synth_root, tmp_path):
    change, words = JUNK[kind]
    root = tmp_path / "junk"
    root.mkdir()
    table = pd.read_csv(synth_root / "train.csv", dtype=str, keep_default_na=False)
    change(table)
    table.to_csv(root / "train.csv", index=False)
    result = cli(command, "--dataset", "rsna", "--root", root, "--out", tmp_path / "out.parquet")
    assert_clean_error(result, "train.csv", *words)


def test_generic_mapping_with_a_missing_column_names_it(synth_root, tmp_path):
    (tmp_path / "map.toml").write_text(
        'csv = "train.csv"\n[columns]\npatient_id = "patient_id"\n'
        'image_id = "image_id"\nlaterality = "side"\ncancer = "cancer"\n'
    )
    result = cli(
        "cohort",
        "--dataset",
        "generic",
        "--root",
        synth_root,
        "--mapping",
        tmp_path / "map.toml",
        "--out",
        tmp_path / "c.parquet",
    )
    assert_clean_error(result, "'side'", "train.csv")


# 5. every string from the data is escaped in HTML ------------------------------------------------------


def _assert_escaped(html: str, *payloads: str, shown: bool = True) -> None:
    """No payload as markup; with shown=True each appears as escaped text (so the check is not vacuous)."""
    from markupsafe import escape

    for payload in payloads:
        assert payload not in html, payload
        assert not shown or str(escape(payload)) in html, f"{payload} is not shown at all"
    assert "alert(" not in html.replace("alert(1)&lt;", "").replace("alert(2)&gt;", "")


def _hostile_rsna(tmp_path: Path, n_patients: int = 60) -> Path:
    from mammo_insight.synth.table import RSNA_COLUMNS, make_synthetic_table

    table = make_synthetic_table(n_patients, 3, 0.3)[RSNA_COLUMNS].copy()
    table["site_id"] = np.where(table["patient_id"].astype(int) % 2 == 0, SCRIPT, "2")
    table["machine_id"] = np.where(table["patient_id"].astype(int) % 3 == 0, IMG_TAG, "49")
    root = tmp_path / "hostile"
    root.mkdir()
    table.to_csv(root / "train.csv", index=False)
    return root


@pytest.mark.slow
def test_eda_report_escapes_csv_cells(tmp_path):
    root = _hostile_rsna(tmp_path)
    out = tmp_path / "eda"
    result = cli("eda", "--dataset", "rsna", "--root", root, "--out", out)
    assert result.returncode == 0, result.stderr
    _assert_escaped((out / "index.html").read_text(), SCRIPT, IMG_TAG)


@pytest.mark.slow
def test_eda_report_escapes_a_generic_mapping_extra_column(synth_root, tmp_path):
    table = pd.read_csv(synth_root / "train.csv", dtype=str)
    table["scanner_note"] = [SCRIPT if i % 2 else "plain" for i in range(len(table))]
    table.to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "map.toml").write_text(
        'csv = "table.csv"\n[columns]\npatient_id = "patient_id"\nimage_id = "image_id"\nlaterality = "laterality"\n'
        'view = "view"\nage = "age"\n[label]\ncolumn = "cancer"\npositive = ["1"]\nnegative = ["0"]\n'
        '[factors]\nscanner_note = "categorical"\n'
    )
    out = tmp_path / "eda"
    result = cli(
        "eda", "--dataset", "generic", "--root", tmp_path, "--mapping", tmp_path / "map.toml", "--out", out
    )
    assert result.returncode == 0, result.stderr
    _assert_escaped((out / "index.html").read_text(), SCRIPT)


# 6 + 9 share one tiny training run ------------------------------------------------------------------


def _train_config():
    from mammo_insight.runs.config import load_config

    return load_config(
        None,
        model="test_resnet",
        folds=2,
        epochs=1,
        batch_size=8,
        lr=0.01,
        seed=3,
        augment={"rotate_degrees": 0},
        cpu_threads=1,
        device="cpu",
    )


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    from train_cache import write_cache

    cache = write_cache(
        tmp_path_factory.mktemp("hard_cache"), n_patients=12, seed=4, size=(64, 48), prevalence=0.4
    )
    index = pd.read_parquet(cache / "index.parquet")
    hostile = index["patient_id"].str[-1].astype(int) % 2 == 0
    index["site_id"] = index["site_id"].where(~hostile, SCRIPT)
    index["machine_id"] = index["machine_id"].where(index["machine_id"] != "0", IMG_TAG)
    index.to_parquet(cache / "index.parquet")
    return cache


@pytest.fixture(scope="module")
def two_runs(tiny_cache, tmp_path_factory) -> tuple[Path, Path]:
    from mammo_insight.stages.train import train_run

    base = tmp_path_factory.mktemp("hard_runs")
    return train_run(tiny_cache, base / "a", _train_config()), train_run(
        tiny_cache, base / "b", _train_config()
    )


@pytest.mark.slow
def test_same_seed_gives_identical_training_metrics(two_runs):
    a, b = two_runs
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    pd.testing.assert_frame_equal(
        pd.read_csv(a / "oof_predictions.csv"), pd.read_csv(b / "oof_predictions.csv")
    )


@pytest.mark.slow
def test_same_seed_gives_identical_fusion_metrics(tmp_path):
    root = _hostile_rsna(tmp_path, n_patients=150)
    outs = [tmp_path / "fuse_a", tmp_path / "fuse_b"]
    for out in outs:
        result = cli(
            "fuse-train",
            "--dataset",
            "rsna",
            "--root",
            root,
            "--out",
            out,
            "--folds",
            "3",
            "--seed",
            "5",
            "--n-boot",
            "30",
            "--shap-rows",
            "40",
            "--workers",
            "1",
        )
        assert result.returncode == 0, result.stderr
    metrics = [json.loads((out / "metrics.json").read_text()) for out in outs]
    assert metrics[0] == metrics[1]
    pd.testing.assert_frame_equal(*(pd.read_csv(out / "oof_predictions.csv") for out in outs))
    _assert_escaped((outs[0] / "index.html").read_text(), SCRIPT, shown=False)  # sites appear only in figures


@pytest.mark.slow
def test_training_report_escapes_site_and_machine_ids(two_runs):
    _assert_escaped((two_runs[0] / "index.html").read_text(), SCRIPT, IMG_TAG)


class _Payload:
    """Unpickling this creates a marker file: proof that arbitrary code would have run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_every_torch_load_in_the_package_passes_weights_only_true():
    calls = []
    for path in (REPO / "mammo_insight").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                calls.append(
                    (
                        f"{path.relative_to(REPO)}:{node.lineno}",
                        isinstance(flag, ast.Constant) and flag.value is True,
                    )
                )
    assert calls, "no torch.load call found: the scan is broken"
    assert [where for where, safe in calls if not safe] == []


@pytest.mark.slow
def test_a_malicious_checkpoint_is_refused(two_runs, tmp_path):
    import torch

    from mammo_insight.nets.factory import build_classifier
    from mammo_insight.runs.open import open_run
    from mammo_insight.runs.run_io import fold_model_path

    # the payload is real: a plain unpickle runs it
    probe = tmp_path / "probe.pt"
    torch.save(_Payload(tmp_path / "probe_ran"), probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe_ran").exists()

    run = shutil.copytree(two_runs[0], tmp_path / "run")
    marker = tmp_path / "payload_ran"
    torch.save({"state": _Payload(marker)}, fold_model_path(run, 0))
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        open_run(run).model(0)
    assert not marker.exists()
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        build_classifier("test_resnet", "single", weights=fold_model_path(run, 0))
    assert not marker.exists()


@pytest.mark.slow
def test_a_malicious_resume_checkpoint_is_refused(two_runs, tiny_cache, tmp_path):
    import torch

    from mammo_insight.stages.train import train_run

    run = shutil.copytree(two_runs[0], tmp_path / "run")
    (run / "folds" / "fold_0" / "oof.csv").unlink()  # fold 0 is redone, resuming from its last.ckpt
    (run / "oof_predictions.csv").unlink(missing_ok=True)
    marker = tmp_path / "payload_ran"
    (run / "checkpoints" / "fold_0").mkdir(parents=True, exist_ok=True)  # a done fold's checkpoints are gone
    torch.save({"state_dict": _Payload(marker)}, run / "checkpoints" / "fold_0" / "last.ckpt")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        train_run(tiny_cache, run, _train_config())
    assert not marker.exists()


# 7. no identifying DICOM tag reaches any output --------------------------------------------------------


@pytest.mark.slow
def test_no_identifying_tag_is_written_to_any_output(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path / "data")
    files = sorted((root / "train_images").rglob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in IDENTIFYING.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    assert all(str(pydicom.dcmread(f).PatientAddress) == IDENTIFYING["PatientAddress"] for f in files[:2])
    assert all(
        v.encode() in files[0].read_bytes() for v in IDENTIFYING.values()
    )  # the byte scan can see them
    outs = {"cache": tmp_path / "cache", "eda": tmp_path / "eda", "cohort": tmp_path / "cohort" / "c.parquet"}
    runs = [
        cli(
            "preprocess",
            "--dataset",
            "rsna",
            "--root",
            root,
            "--out",
            outs["cache"],
            "--size",
            "64x32",
            "--sheet-size",
            "4",
        ),
        cli("eda", "--dataset", "rsna", "--root", root, "--out", outs["eda"]),
        cli("cohort", "--dataset", "rsna", "--root", root, "--out", outs["cohort"]),
    ]
    secrets = [*IDENTIFYING.values(), *(v.split("^")[-1] for v in IDENTIFYING.values())]
    for result in runs:
        assert result.returncode == 0, result.stderr
        for secret in secrets:
            assert not holds(result.stdout + result.stderr, secret)
    written = [
        p
        for out in (tmp_path / "cache", tmp_path / "eda", tmp_path / "cohort")
        for p in out.rglob("*")
        if p.is_file()
    ]
    assert any(p.suffix == ".png" for p in written) and any(p.suffix == ".parquet" for p in written)
    for path in written:
        texts = output_texts(path)
        for secret in secrets:
            assert not any(holds(t, secret) for t in texts), (path, secret)


# 8. image paths from a CSV stay inside the image root ---------------------------------------------------


@pytest.mark.slow
def test_generic_paths_escaping_the_image_root_are_rejected(synth_root, tmp_path):
    table = pd.read_csv(synth_root / "train.csv", dtype=str)
    table["path"] = [
        f"train_images/{p}/{i}.dcm" for p, i in zip(table["patient_id"], table["image_id"], strict=True)
    ]
    table.loc[3, "path"] = "../../etc/passwd"
    table.loc[5, "path"] = "/etc/passwd"
    table.to_csv(tmp_path / "table.csv", index=False)
    shutil.copytree(synth_root / "train_images", tmp_path / "train_images")
    (tmp_path / "map.toml").write_text(
        'csv = "table.csv"\n[columns]\npatient_id = "patient_id"\n'
        'image_id = "image_id"\nlaterality = "laterality"\nimage_path = "path"\ncancer = "cancer"\n'
    )
    for command in ("cohort", "preprocess"):
        result = cli(
            command,
            "--dataset",
            "generic",
            "--root",
            tmp_path,
            "--mapping",
            tmp_path / "map.toml",
            "--out",
            tmp_path / "out",
        )
        assert_clean_error(
            result, "outside the image root", "line(s) 5, 7", "../../etc/passwd", "/etc/passwd"
        )
    assert not (tmp_path / "out").exists()


def test_rsna_ids_cannot_point_outside_the_image_folder(synth_root, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    table = pd.read_csv(synth_root / "train.csv", dtype=str, keep_default_na=False)
    table.loc[2, "image_id"] = "../../../../etc/passwd"
    table.to_csv(root / "train.csv", index=False)
    result = cli("cohort", "--dataset", "rsna", "--root", root, "--out", tmp_path / "c.parquet")
    assert_clean_error(result, "'image_id'", "line(s) 4", "../../../../etc/passwd")


def test_cache_files_cannot_be_written_outside_the_cache(synth_root, tmp_path):
    """patient_id names a cache folder: a '..' in it would write PNGs outside --out."""
    table = pd.read_csv(synth_root / "train.csv", dtype=str)
    table["path"] = [
        f"train_images/{p}/{i}.dcm" for p, i in zip(table["patient_id"], table["image_id"], strict=True)
    ]
    table.loc[1, "patient_id"] = "../../../escaped"
    table.to_csv(tmp_path / "table.csv", index=False)
    shutil.copytree(synth_root / "train_images", tmp_path / "train_images")
    (tmp_path / "map.toml").write_text(
        'csv = "table.csv"\n[columns]\npatient_id = "patient_id"\n'
        'image_id = "image_id"\nlaterality = "laterality"\nimage_path = "path"\ncancer = "cancer"\n'
    )
    result = cli(
        "preprocess",
        "--dataset",
        "generic",
        "--root",
        tmp_path,
        "--mapping",
        tmp_path / "map.toml",
        "--out",
        tmp_path / "a" / "b" / "cache",
        "--size",
        "64x32",
    )
    assert_clean_error(result, "'patient_id'", "line(s) 3", "../../../escaped")
    assert not list(tmp_path.rglob("escaped*"))


def test_cbis_csv_paths_cannot_leave_the_dataset_root(tmp_path):
    from mammo_insight.cohort.adapters.cbis import resolve_image
    from mammo_insight.errors import CohortError

    (tmp_path / "root").mkdir()
    (tmp_path / "secret.dcm").write_bytes(b"x")
    with pytest.raises(CohortError, match="outside"):
        resolve_image(tmp_path / "root", "../secret.dcm")
    with pytest.raises(CohortError, match="outside"):
        resolve_image(tmp_path / "root", str(tmp_path / "secret.dcm"))


def test_error_messages_are_printed_verbatim_square_brackets_included(synth_root, tmp_path):
    from mammo_insight.cohort.adapters import load_cohort

    table = load_cohort("rsna", synth_root).table.assign(cancer=float("nan"))
    table.to_parquet(tmp_path / "unlabelled.parquet")
    result = cli("eda", "--cohort", tmp_path / "unlabelled.parquet", "--out", tmp_path / "eda")
    assert_clean_error(
        result, "'cancer' is empty", "e.g. in the TOML [label])"
    )  # rich markup would drop [label]
