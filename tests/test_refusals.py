"""Refusals: each hostile case (issue 31) ends in a one-line error, a failures row, or the
right result; never a traceback, never a silently wrong result.

The CLI runs in-process through the real entry point (cli_run.run_cli).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_run import RSNA_HEADER, RSNA_ROWS, assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.errors import MammoInsightError

REPO = Path(__file__).resolve().parent.parent


def rsna_root(tmp_path: Path, body: str = RSNA_HEADER + RSNA_ROWS) -> Path:
    root = tmp_path / "rsna"
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_text(body, encoding="utf-8")
    return root


@pytest.mark.parametrize("command", ["synth", "train", "preprocess", "eda", "compare", "explain"])
def test_a_negative_seed_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, command, "--out", tmp_path / "o", "--seed", "-1")
    assert code == 2 and "Traceback" not in out + err and "--seed" in err, err
    assert not (tmp_path / "o").exists()


def test_synth_stage_refuses_a_negative_seed(tmp_path):
    from mammo_insight.stages.synth import SynthConfig, run_synth

    with pytest.raises(MammoInsightError, match="seed must be an integer"):
        run_synth(SynthConfig(out=tmp_path / "s", patients=2, seed=-1))


def test_preprocess_size_beyond_the_bound_is_one_line(tmp_path, capsys, monkeypatch):
    root = rsna_root(tmp_path)
    result = run_cli(
        capsys, monkeypatch, "preprocess", "--dataset", "rsna", "--root", root, "--out", tmp_path / "c",
        "--size", "60000x60000",
    )  # fmt: skip
    assert_one_line_error(result, "too large", "8192")


@pytest.mark.parametrize(
    "image_id, words",
    [("12\x0034", ["control character", "line(s) 2"]), ("x" * 300, ["200 bytes", "line(s) 2"])],
)
def test_an_image_id_that_cannot_name_a_file_is_refused(image_id, words, tmp_path, capsys, monkeypatch):
    rows = RSNA_ROWS.splitlines(keepends=True)
    first = rows[0].split(",")
    first[2] = image_id
    root = rsna_root(tmp_path, RSNA_HEADER + ",".join(first) + "".join(rows[1:]))
    result = run_cli(
        capsys, monkeypatch, "preprocess", "--dataset", "rsna", "--root", root, "--out", tmp_path / "c"
    )
    assert_one_line_error(result, "image_id", *words)


def test_a_truncated_run_config_is_one_line(tmp_path):
    from test_trained_run import make_run

    from mammo_insight.runs.run_io import load_run_config

    make_run(tmp_path / "run", "single", folds=(0,))
    config = tmp_path / "run" / "config.json"
    config.write_text(config.read_text()[:25])
    with pytest.raises(MammoInsightError, match="config.json: not a readable run config"):
        load_run_config(tmp_path / "run")
    config.write_text(json.dumps([1, 2]))
    with pytest.raises(MammoInsightError, match="JSON object"):
        load_run_config(tmp_path / "run")


def test_predict_on_a_run_with_a_truncated_config_is_one_line(tmp_path, capsys, monkeypatch):
    from test_trained_run import make_run

    make_run(tmp_path / "run", "single", folds=(0,))
    config = tmp_path / "run" / "config.json"
    config.write_text(config.read_text()[:25])
    images = tmp_path / "images"
    images.mkdir()
    result = run_cli(
        capsys, monkeypatch, "predict", "--run", tmp_path / "run", "--images", images,
        "--out", tmp_path / "p.csv",
    )  # fmt: skip
    assert_one_line_error(result, "config.json")


def test_load_cohort_on_a_valid_table_still_works(tmp_path):
    cohort = load_cohort("rsna", rsna_root(tmp_path))
    assert len(cohort.table) == 12 and isinstance(cohort.table, pd.DataFrame)
    assert Path(cohort.table["image_path"].iloc[0]).name.endswith(".dcm")


@pytest.mark.slow
def test_train_onto_a_full_disk_is_one_line_naming_the_checkpoint(tmp_path):
    """A file-size limit (RLIMIT_FSIZE: EFBIG, the same path as ENOSPC) stops the first checkpoint write."""
    from train_cache import write_cache

    cache = write_cache(tmp_path / "cache", n_patients=8, seed=0)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from mammo_insight.cli.app import main\n"
        f"sys.argv = ['mammo-insight', 'train', '--cache', {str(cache)!r}, '--out', {str(tmp_path / 'run')!r},"
        " '--model', 'small_cnn', '--folds', '2', '--epochs', '1', '--threads', '1']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "1000"},
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and ".ckpt: File too large" in errors[0], errors


# the display check (issue 31): stored values vary, the header's transform shows one grey ---------------

DISPLAY_EDITS = {
    "slope -1 under a linear window": {"RescaleSlope": -1, "RescaleIntercept": 0, "VOILUTFunction": "LINEAR"},
    "window width 1e30": {"WindowWidth": 1e30, "WindowCenter": 100},
    "sigmoid of width 1": {"VOILUTFunction": "SIGMOID", "WindowWidth": 1, "WindowCenter": -5000},
}


@pytest.mark.slow
def test_a_header_that_displays_a_constant_image_is_a_failure_row(tmp_path):
    import pydicom

    from mammo_insight.stages.preprocess import PreprocessStageConfig, run_preprocess
    from mammo_insight.synth.cohort import make_synthetic_cohort

    make_synthetic_cohort(tmp_path / "ds", n_patients=3, seed=1, size=(64, 48))
    files = sorted((tmp_path / "ds" / "train_images").rglob("*.dcm"))
    edited = {}
    for path, (case, edits) in zip(files, DISPLAY_EDITS.items(), strict=False):
        ds = pydicom.dcmread(path)
        for key, value in edits.items():
            setattr(ds, key, value)
        ds.save_as(path)
        edited[path.stem] = case
    config = PreprocessStageConfig("rsna", tmp_path / "ds", tmp_path / "cache", size=(64, 48), sheet_size=0)
    result = run_preprocess(config)
    failures = pd.read_csv(tmp_path / "cache" / "failures.csv", dtype=str)
    assert set(failures["image_id"]) == set(edited), failures
    assert failures["reason"].str.contains("displayed image .after the modality and VOI LUT.").all()
    assert result.summary["ok"] == len(files) - len(edited)


# links the user made are followed; a run that caches (almost) nothing is not a success ------------------


@pytest.mark.slow
def test_a_linked_image_folder_is_followed_and_deeper_links_stay_refused(tmp_path, capsys, monkeypatch):
    from mammo_insight.synth.cohort import make_synthetic_cohort

    make_synthetic_cohort(tmp_path / "mount", n_patients=2, seed=3, size=(64, 48))
    root = tmp_path / "project"
    root.mkdir()
    (root / "train.csv").write_bytes((tmp_path / "mount" / "train.csv").read_bytes())
    (root / "train_images").symlink_to(tmp_path / "mount" / "train_images", target_is_directory=True)
    outside = tmp_path / "elsewhere.dcm"
    one = next((tmp_path / "mount" / "train_images").rglob("*.dcm"))
    outside.write_bytes(one.read_bytes())
    one.unlink()
    one.symlink_to(outside)  # a link inside the linked folder, to a file out of it: still refused
    code, _, err = run_cli(
        capsys, monkeypatch, "preprocess", "--dataset", "rsna", "--root", root, "--out", tmp_path / "c",
        "--size", "64x48", "--sheet-size", "0", "--max-failed-share", "0.5",
    )  # fmt: skip
    assert code == 0, err
    failures = pd.read_csv(tmp_path / "c" / "failures.csv", dtype=str)
    assert list(failures["image_id"]) == [one.stem] and "outside the image root" in failures["reason"][0]
    index = pd.read_parquet(tmp_path / "c" / "index.parquet")
    assert (index["status"] == "ok").sum() == len(index) - 1


@pytest.mark.slow
def test_a_run_that_fails_too_many_images_exits_non_zero_with_the_count(tmp_path, capsys, monkeypatch):
    from mammo_insight.synth.cohort import make_synthetic_cohort

    make_synthetic_cohort(tmp_path / "ds", n_patients=2, seed=3, size=(64, 48))
    files = sorted((tmp_path / "ds" / "train_images").rglob("*.dcm"))
    files[0].write_bytes(b"not a dicom")
    args = [
        "preprocess",
        "--dataset",
        "rsna",
        "--root",
        tmp_path / "ds",
        "--size",
        "64x48",
        "--sheet-size",
        "0",
    ]
    result = run_cli(capsys, monkeypatch, *args, "--out", tmp_path / "c1")
    assert_one_line_error(result, f"1 of {len(files)} images failed", "--max-failed-share", "failures.csv")
    assert (tmp_path / "c1" / "index.parquet").is_file()  # the cache is still written
    code, _, err = run_cli(capsys, monkeypatch, *args, "--out", tmp_path / "c2", "--max-failed-share", "0.2")
    assert code == 0, err
    for path in files:
        path.write_bytes(b"not a dicom")
    result = run_cli(capsys, monkeypatch, *args, "--out", tmp_path / "c3", "--max-failed-share", "1")
    assert_one_line_error(result, f"cached none of the {len(files)} images")


@pytest.mark.parametrize("shape", [(1, 20000), (7, 300), (300, 7, 3)])
def test_a_tiny_png_is_refused_like_a_dicom(shape, tmp_path):
    import cv2
    import numpy as np

    from mammo_insight.errors import DicomError
    from mammo_insight.imaging.decode import read_image

    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    with pytest.raises(DicomError, match=r"tiny.png: a \d+x\d+ image is too small"):
        read_image(path, "auto")
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (8, 300), dtype=np.uint8))
    assert read_image(path, "auto").pixels.shape == (8, 300)


# breast and woman ids are derived, never trusted ---------------------------------------------------------


def _rsna_with(tmp_path: Path, edit) -> Path:
    rows = [line.split(",") for line in RSNA_ROWS.splitlines()]
    header = RSNA_HEADER.strip().split(",")
    header, rows = edit(header, rows)
    return rsna_root(tmp_path, "\n".join(",".join(r) for r in [header, *rows]) + "\n")


def test_a_prediction_id_merging_two_sides_is_refused_naming_the_rows(tmp_path):
    def edit(header, rows):  # patient 10's right breast is given the left one's id
        return [*header, "prediction_id"], [[*r, f"{r[1]}_{'L' if r[1] == '10' else r[3]}"] for r in rows]

    with pytest.raises(MammoInsightError, match=r"names more than one woman's breast.*'10_L'.*line\(s\) 2"):
        load_cohort("rsna", _rsna_with(tmp_path, edit))


def test_a_prediction_id_shared_by_two_women_is_refused(tmp_path):
    def edit(header, rows):
        return [*header, "prediction_id"], [[*r, f"{'10' if r[1] == '11' else r[1]}_{r[3]}"] for r in rows]

    with pytest.raises(MammoInsightError, match="names more than one woman's breast"):
        load_cohort("rsna", _rsna_with(tmp_path, edit))


def test_a_breast_split_over_two_prediction_ids_is_refused(tmp_path):
    def edit(header, rows):
        return [*header, "prediction_id"], [[*r, f"{r[1]}_{r[3]}_{r[2]}"] for r in rows]

    with pytest.raises(MammoInsightError, match="differs between images of one breast"):
        load_cohort("rsna", _rsna_with(tmp_path, edit))


def test_a_consistent_prediction_id_is_taken(tmp_path):
    def edit(header, rows):
        return [*header, "prediction_id"], [[*r, f"{r[1]}-{r[3]}"] for r in rows]

    cohort = load_cohort("rsna", _rsna_with(tmp_path, edit))
    assert cohort.table["breast_id"].nunique() == 6 and cohort.table["breast_id"].iloc[0] == "10-L"


def test_two_label_columns_of_one_name_are_refused(tmp_path):
    def edit(header, rows):  # the second 'cancer' says every image is positive
        return [*header, "cancer"], [[*r, "1"] for r in rows]

    with pytest.raises(MammoInsightError, match=r"'cancer' appear more than once in the header"):
        load_cohort("rsna", _rsna_with(tmp_path, edit))


@pytest.mark.slow
def test_a_breast_whose_images_disagree_is_listed_and_counted_positive(tmp_path, caplog):
    from mammo_insight.stages.eda import EdaConfig, run_eda, write_eda

    def edit(header, rows):  # patient 11's left CC image says cancer, its MLO image does not
        return header, [[*r[:6], "1" if r[2] == "110" else r[6], r[7]] for r in rows]

    root = _rsna_with(tmp_path, edit)
    result = run_eda(EdaConfig(dataset="rsna", root=root))
    assert "1 breast(s) have images labelled both 0 and 1" in caplog.text
    write_eda(result, tmp_path / "eda")
    listed = pd.read_csv(tmp_path / "eda" / "tables" / "label_conflicts.csv", dtype={"patient_id": str})
    assert listed[["breast_id", "n_images", "n_positive", "label_used"]].values.tolist() == [
        ["11_L", 2, 1, 1]
    ]
    assert any("labelled both 0 and 1" in note for note in result.study.notes)
    assert result.study.summary["n_cancer_breasts"] == 2  # 10_L and the conflicting 11_L


# fuse-train: embeddings of another cohort ----------------------------------------------------------------


@pytest.mark.slow
def test_fuse_train_refuses_embeddings_covering_few_breasts_unless_allowed(tmp_path):
    from test_fusion import FAST, simulated_embeddings, synthetic_table

    from mammo_insight.fusion.config import FusionConfig
    from mammo_insight.fusion.pipeline import run_fusion

    table = synthetic_table(tmp_path, 200)
    emb = simulated_embeddings(table)
    patients = table["patient_id"].drop_duplicates()
    few = emb[emb["patient_id"].isin(set(patients.iloc[: len(patients) // 3]))]  # a third of the women
    cfg = FusionConfig(n_boot=20, shap_rows=50, interaction_rows=20, params=FAST)
    with pytest.raises(
        MammoInsightError, match=r"cover \d+ of the cohort's \d+ labelled breasts .*under the 90%"
    ):
        run_fusion(table, few, cfg)
    partial = run_fusion(table, few, FusionConfig(**{**cfg.__dict__, "allow_partial": True}))
    assert any(w.startswith("WARNING: Embeddings cover") for w in partial.warnings)
    full = run_fusion(table, emb, cfg)
    assert any(w.startswith("Embeddings cover 400 of the cohort's 400") for w in full.warnings), full.warnings


# the terminal: data never drives it ----------------------------------------------------------------------

ESCAPE = "\x1b[2J\x1b[31mPWN\x1b[0m"


def test_control_characters_of_data_are_escaped_in_log_lines():
    import io
    import logging

    from rich.console import Console
    from rich.logging import RichHandler

    from mammo_insight.cli.terminal import EscapeControl, safe

    stream = io.StringIO()
    handler = RichHandler(console=Console(file=stream, force_terminal=False, width=200), show_path=False)
    handler.addFilter(EscapeControl())
    logger = logging.getLogger("test_terminal_escape")
    logger.addHandler(handler)
    try:
        logger.warning("site %s has few images", ESCAPE)
        logger.warning(f"an f-string with {ESCAPE} and \x9b5m")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "\x1b" not in text and "\x9b" not in text and r"\x1b[2J\x1b[31mPWN\x1b[0m" in text
    assert safe("line\tone\nline two") == "line\tone\nline two"


def test_an_error_naming_data_with_escapes_is_escaped(tmp_path, capsys, monkeypatch):
    result = run_cli(
        capsys,
        monkeypatch,
        "cohort",
        "--dataset",
        "rsna",
        "--root",
        tmp_path / ESCAPE,
        "--out",
        tmp_path / "c.parquet",
    )
    assert_one_line_error(result, r"\x1b[2J")
    assert "\x1b" not in result[1] + result[2]


@pytest.mark.slow
def test_eda_output_on_a_table_with_escapes_is_escaped(tmp_path, capsys, monkeypatch):
    def edit(header, rows):
        return header, [[ESCAPE if i == 0 else c for i, c in enumerate(r)] for r in rows]

    root = _rsna_with(tmp_path, edit)
    code, out, err = run_cli(
        capsys, monkeypatch, "eda", "--dataset", "rsna", "--root", root, "--out", tmp_path / "eda"
    )
    assert code == 0, err
    assert "\x1b" not in out + err


# CSV tables opened in spreadsheets -----------------------------------------------------------------------


# what a CSV round trip keeps: no line breaks, and no lone surrogates (no decoded file holds one, and UTF-8
# cannot write one)
TEXT = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=8)


@given(
    cells=st.lists(
        st.one_of(TEXT, st.sampled_from(["=1+1", "-1.5", "+3", "@A1", "-x", "\tA", "1e5"])),
        min_size=1,
        max_size=8,
    )
)
@settings(max_examples=150, deadline=None)
def test_the_csv_writer_defuses_formulas_and_keeps_numbers(tmp_path_factory, cells):
    from mammo_insight.files import write_csv_atomic

    path = tmp_path_factory.mktemp("csv") / "t.csv"
    write_csv_atomic(path, pd.DataFrame({"text": cells, "n": range(len(cells))}))
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    for written, original in zip(back["text"], cells, strict=True):
        if original.startswith(("=", "+", "-", "@", "\t")) and not _number(original):
            assert written == "'" + original, (written, original)
        else:
            assert written == original, (written, original)
    assert back["n"].tolist() == [str(i) for i in range(len(cells))]


def test_a_carriage_return_first_is_defused_too():
    from mammo_insight.files import defuse_cell

    assert defuse_cell("\r=1") == "'\r=1" and defuse_cell(-3) == -3 and defuse_cell("-3") == "-3"


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_failures_csv_defuses_a_formula_image_id(tmp_path, capsys, monkeypatch):
    def edit(header, rows):
        return header, [[*r[:2], "@SUM(1+1)" if r[2] == "100" else r[2], *r[3:]] for r in rows]

    root = _rsna_with(tmp_path, edit)
    (root / "train_images" / "11").mkdir(parents=True)
    (root / "train_images" / "11" / "110.dcm").write_bytes(b"not a dicom")
    args = [
        "preprocess",
        "--dataset",
        "rsna",
        "--root",
        root,
        "--out",
        tmp_path / "c",
        "--max-failed-share",
        "1",
    ]
    assert_one_line_error(run_cli(capsys, monkeypatch, *args), "cached none")  # no image files here
    text = (tmp_path / "c" / "failures.csv").read_text()
    assert "'@SUM(1+1)" in text and "\n@SUM" not in text


@pytest.mark.parametrize("csv", ["/etc/passwd", "../outside.csv", "sub/../../outside.csv", "link.csv"])
def test_a_mapping_table_out_of_the_root_is_refused(csv, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.csv").write_text("patient_id,image_id,laterality\n1,a,L\n")
    (root / "link.csv").symlink_to(tmp_path / "outside.csv")
    (root / "m.toml").write_text(f'csv = "{csv}"\n[columns]\npatient_id = "patient_id"\n')
    with pytest.raises(MammoInsightError, match="leads out of the dataset root"):
        load_cohort("generic", root, root / "m.toml")


def test_a_mapping_table_in_a_linked_folder_of_the_root_is_read(tmp_path):
    (tmp_path / "mount").mkdir()
    (tmp_path / "mount" / "t.csv").write_text("patient_id,image_id,laterality,cancer\n1,a,L,0\n1,b,R,1\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "tables").symlink_to(tmp_path / "mount", target_is_directory=True)
    (root / "m.toml").write_text(
        'csv = "tables/t.csv"\n[columns]\npatient_id = "patient_id"\nimage_id = "image_id"\n'
        'laterality = "laterality"\ncancer = "cancer"\n'
    )
    assert len(load_cohort("generic", root, root / "m.toml").table) == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "patch-train"])
def test_a_missing_gpu_is_refused_before_a_lock_or_config_is_written(command, tmp_path, capsys, monkeypatch):
    import torch
    from train_cache import write_cache

    cache = write_cache(tmp_path / "cache", n_patients=4, seed=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = run_cli(
        capsys, monkeypatch, command, "--cache", cache, "--out", tmp_path / "run", "--device", "cuda"
    )
    assert_one_line_error(result, "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_demo_stage_log_grows_from_its_first_line_with_a_line_per_epoch(tmp_path, caplog):
    import threading
    import time

    from train_cache import write_cache

    from mammo_insight.stages.demo import _run_stage

    cache = write_cache(tmp_path / "cache", n_patients=8, seed=0)
    log_path = tmp_path / "logs" / "train.log"
    args = ["train", "--cache", str(cache), "--out", str(tmp_path / "run"), "--model", "small_cnn"]
    args += ["--folds", "2", "--epochs", "3", "--threads", "1"]
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_run_stage(args, log_path, "[1/1] train")))
    caplog.set_level("INFO")
    worker.start()
    seen_while_running = False
    while worker.is_alive():
        if log_path.is_file() and "epoch 1/3" in log_path.read_text(errors="replace"):
            seen_while_running = worker.is_alive()
            break
        time.sleep(0.2)
    worker.join()
    assert seen_while_running, log_path.read_text() if log_path.is_file() else "no log"
    code, last = outcome[0]
    assert code == 0 and last.startswith("report:"), (code, last)
    text = log_path.read_text()
    assert text.count("epoch 3/3") == 2 and "[1/1] train | " in caplog.text


@pytest.mark.slow
def test_the_hostile_corpus_has_no_traceback_silent_wrong_result_or_hole():
    """benchmarks/hostile_corpus.py: over 200 cases beyond the listed ones, by kind (exit 1 on any bad one)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "hostile_corpus.py")], check=False, capture_output=True,
        text=True, timeout=1200, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    totals = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert totals["traceback"] == totals["silent wrong"] == totals["hole"] == 0
    assert sum(totals.values()) >= 200 and totals["correct"] >= 25 and totals["clear error"] >= 150
