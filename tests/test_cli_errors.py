"""Issue 17, the CLI half: every hostile table, option, output path or fault below ends in one line
(exit 2, no traceback) before any work is lost, and nothing half-written is left looking complete.

The CLI runs in-process through `main()` (the real entry point: MammoInsightError and disk errors become
`error: ...` and exit 2), so each case costs no interpreter start; the lock tests use a second process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import RSNA_HEADER, RSNA_ROWS, assert_one_line_error, run_cli

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import claim_output

REPO = Path(__file__).resolve().parent.parent


def rsna_root(tmp_path: Path, body: bytes | str = RSNA_HEADER + RSNA_ROWS) -> Path:
    root = tmp_path / "rsna"
    root.mkdir(parents=True, exist_ok=True)
    data = body.encode() if isinstance(body, str) else body
    (root / "train.csv").write_bytes(data)
    return root


# 1. tables ---------------------------------------------------------------------------------------------

BAD_TABLES = {
    "latin-1 bytes": (RSNA_HEADER + RSNA_ROWS).encode() + "1,13,13\xe9,L,CC,55,0,49\n".encode("latin-1"),
    "0-byte file": b"",
    "a row with extra fields": (RSNA_HEADER + RSNA_ROWS + "1,13,131,L,CC,55,0,49,extra,more\n").encode(),
}


@pytest.mark.parametrize("kind", sorted(BAD_TABLES))
def test_a_broken_rsna_table_is_one_line_naming_the_file(kind, tmp_path, capsys, monkeypatch):
    root = rsna_root(tmp_path, BAD_TABLES[kind])
    result = run_cli(
        capsys, monkeypatch, "cohort", "--dataset", "rsna", "--root", root, "--out", tmp_path / "c.parquet"
    )
    assert_one_line_error(result, str(root / "train.csv"))
    assert not (tmp_path / "c.parquet").exists()


def test_a_label_column_in_other_case_is_named(tmp_path, capsys, monkeypatch):
    root = rsna_root(tmp_path, RSNA_HEADER.replace("cancer", "Cancer") + RSNA_ROWS)
    result = run_cli(
        capsys, monkeypatch, "cohort", "--dataset", "rsna", "--root", root, "--out", tmp_path / "c.parquet"
    )
    assert_one_line_error(result, "'Cancer' (expected 'cancer')", "case-sensitive")


def test_a_table_without_labels_says_they_are_missing_not_zero_positives(tmp_path, capsys, monkeypatch):
    header = RSNA_HEADER.replace(",cancer", "")
    rows = "".join(",".join(r.split(",")[:6] + r.split(",")[7:]) for r in RSNA_ROWS.splitlines(keepends=True))
    root = rsna_root(tmp_path, header + rows)
    code, out, err = run_cli(
        capsys, monkeypatch, "cohort", "--dataset", "rsna", "--root", root, "--out", tmp_path / "c.parquet"
    )
    assert code == 0, err
    assert "labels: missing" in out and "n_positive_images" not in out and "n_labelled_images: 0" in out
    labelled = run_cli(
        capsys,
        monkeypatch,
        "cohort",
        "--dataset",
        "rsna",
        "--root",
        rsna_root(tmp_path / "l"),
        "--out",
        tmp_path / "l.parquet",
    )
    assert "n_positive_images: 2" in labelled[1] and "labels: missing" not in labelled[1]


def _generic(tmp_path: Path, mapping: str) -> tuple[Path, Path]:
    root = rsna_root(tmp_path)
    path = tmp_path / "map.toml"
    path.write_text(mapping)
    return root, path


GOOD_MAPPING = (
    'csv = "train.csv"\n[columns]\npatient_id = "patient_id"\nimage_id = "image_id"\n'
    'laterality = "laterality"\nview = "view"\n[label]\ncolumn = "cancer"\npositive = ["1"]\n'
)
BAD_MAPPINGS = {
    "positive matching nothing": (
        GOOD_MAPPING.replace('positive = ["1"]', 'positive = ["yes"]'),
        "matches no value",
    ),
    "positive a table": (GOOD_MAPPING.replace('positive = ["1"]', "positive = {a = 1}"), "[label] positive"),
    "column a list": (
        GOOD_MAPPING.replace('patient_id = "patient_id"', 'patient_id = ["patient_id"]'),
        "[columns] patient_id",
    ),
    "column an int": (GOOD_MAPPING.replace('view = "view"', "view = 3"), "[columns] view"),
    "label column an int": (GOOD_MAPPING.replace('column = "cancer"', "column = 7"), "[label] column"),
    "csv a list": (GOOD_MAPPING.replace('csv = "train.csv"', 'csv = ["train.csv"]'), "'csv'"),
    "recode a list": (GOOD_MAPPING + '[values.view]\nCC = ["a", "b"]\n', "[values.view] CC"),
}


def _cohort_of(root, path, tmp_path, capsys, monkeypatch):
    """`cohort --dataset generic` on a mapping: (exit code, stdout, stderr)."""
    return run_cli(
        capsys,
        monkeypatch,
        "cohort",
        "--dataset",
        "generic",
        "--root",
        root,
        "--mapping",
        path,
        "--out",
        tmp_path / "c.parquet",
    )


@pytest.mark.parametrize("kind", sorted(BAD_MAPPINGS))
def test_a_wrong_typed_generic_mapping_is_one_line(kind, tmp_path, capsys, monkeypatch):
    mapping, words = BAD_MAPPINGS[kind]
    root, path = _generic(tmp_path, mapping)
    result = _cohort_of(root, path, tmp_path, capsys, monkeypatch)
    assert_one_line_error(result, str(path), words)


def test_the_good_mapping_loads(tmp_path, capsys, monkeypatch):
    root, path = _generic(tmp_path, GOOD_MAPPING)
    code, out, err = _cohort_of(root, path, tmp_path, capsys, monkeypatch)
    assert code == 0 and "n_positive_images: 2" in out, err


# 2. output paths: checked before any work, locked while a stage runs ------------------------------------

FOLDER_COMMANDS = {
    "synth": ["synth"],
    "eda": ["eda", "--dataset", "rsna", "--root", "ROOT"],
    "preprocess": ["preprocess", "--dataset", "rsna", "--root", "ROOT"],
    "train": ["train", "--cache", "NOWHERE"],
    "evaluate": ["evaluate", "--run", "NOWHERE", "--cache", "NOWHERE"],
    "explain": ["explain", "--run", "NOWHERE", "--cache", "NOWHERE"],
    "fuse-train": ["fuse-train", "--dataset", "rsna", "--root", "ROOT"],
    "ensemble": ["ensemble", "--runs", "NOWHERE", "NOWHERE"],
    "compare": ["compare", "--runs", "NOWHERE", "NOWHERE"],
}
FILE_COMMANDS = {
    "cohort": ["cohort", "--dataset", "rsna", "--root", "ROOT"],
    "embed": ["embed", "--run", "NOWHERE", "--cache", "NOWHERE"],
    "predict": ["predict", "--run", "NOWHERE", "--images", "NOWHERE"],
}


def _args(template: list[str], tmp_path: Path, out: Path) -> list[str]:
    root = rsna_root(tmp_path)
    swap = {"ROOT": str(root), "NOWHERE": str(tmp_path / "nowhere")}
    return [swap.get(a, a) for a in template] + ["--out", str(out)]


@pytest.mark.parametrize("command", sorted(FOLDER_COMMANDS))
def test_a_folder_output_that_is_a_file_or_foreign_is_refused_before_work(
    command, tmp_path, capsys, monkeypatch
):
    as_file = tmp_path / "taken"
    as_file.write_text("keep me")
    assert_one_line_error(
        run_cli(capsys, monkeypatch, *_args(FOLDER_COMMANDS[command], tmp_path, as_file)), "not a folder"
    )
    assert as_file.read_text() == "keep me"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("keep me")
    result = run_cli(capsys, monkeypatch, *_args(FOLDER_COMMANDS[command], tmp_path, foreign))
    assert_one_line_error(result, "not empty", f"'{command}'")
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.docx"]


@pytest.mark.parametrize("command", sorted(FILE_COMMANDS))
def test_a_file_output_that_is_a_folder_or_under_a_file_is_refused_before_work(
    command, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert_one_line_error(
        run_cli(capsys, monkeypatch, *_args(FILE_COMMANDS[command], tmp_path, folder)), "is a folder"
    )
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    result = run_cli(capsys, monkeypatch, *_args(FILE_COMMANDS[command], tmp_path, blocker / "out.csv"))
    assert_one_line_error(result, "cannot write to")


def test_embed_checks_its_output_before_computing_anything(tmp_path, capsys, monkeypatch):
    from mammo_insight.stages import embed

    monkeypatch.setattr(
        embed, "run_embed", lambda config: pytest.fail("embeddings computed before the check")
    )
    (tmp_path / "e.parquet").mkdir()
    result = run_cli(
        capsys, monkeypatch, "embed", "--run", tmp_path, "--cache", tmp_path, "--out", tmp_path / "e.parquet"
    )
    assert_one_line_error(result, "is a folder")


def test_an_unwritable_output_is_one_line(tmp_path, capsys, monkeypatch):
    """Read-only disk (EROFS) and a folder the user may not write (EACCES; the tests run as root, who may
    write anywhere, so the kernel's answer is simulated at the one place the check asks it)."""
    real_open = os.open

    for code in (errno.EROFS, errno.EACCES):

        def refuse(path, *args, code=code, **kwargs):
            if str(path).endswith(".lock"):
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
        result = run_cli(
            capsys, monkeypatch, *_args(FOLDER_COMMANDS["eda"], tmp_path, tmp_path / f"out{code}")
        )
        assert_one_line_error(result, "cannot write to", os.strerror(code))


def test_a_rerun_of_the_same_stage_reuses_its_folder_and_resumable_markers_count(tmp_path):
    out = tmp_path / "eda"
    with claim_output(out, "eda"):
        (out / "summary.json").write_text("{}")
    with claim_output(out, "eda"):  # .lock names eda: a rerun (or resume) is welcome
        pass
    with (
        pytest.raises(MammoInsightError, match="holds no earlier 'train' output"),
        claim_output(out, "train"),
    ):
        pass
    old_run = tmp_path / "old_run"  # a run folder from before the lock file existed
    (old_run / "folds").mkdir(parents=True)
    with claim_output(old_run, "train", markers=("folds",)):
        pass
    manifest_only = tmp_path / "m"
    manifest_only.mkdir()
    (manifest_only / "manifest.json").write_text(json.dumps({"stage": "explain"}))
    with claim_output(manifest_only, "explain"):
        pass


def test_a_second_claim_on_a_held_output_stops_at_once(tmp_path):
    out = tmp_path / "cache"
    with claim_output(out, "preprocess"):
        started = time.monotonic()
        with (
            pytest.raises(MammoInsightError, match="in use by another mammo-insight run .preprocess, pid"),
            claim_output(out, "preprocess"),
        ):
            pass
        assert time.monotonic() - started < 1
    with claim_output(out, "preprocess"):  # released on exit
        pass
    with claim_output(tmp_path / "x.parquet", "cohort", folder=False):
        assert (tmp_path / ".x.parquet.lock").exists()
        with (
            pytest.raises(MammoInsightError, match="in use"),
            claim_output(tmp_path / "x.parquet", "cohort", folder=False),
        ):
            pass
    assert not (tmp_path / ".x.parquet.lock").exists()  # a file output leaves no lock behind


@contextmanager
def _held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A second process holding FOLDER's lock as a running preprocess would; SIGKILLed on exit."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time; from mammo_insight.files import claim_output\n"
                f"with claim_output({str(folder)!r}, 'preprocess'):\n    print('held', flush=True); time.sleep(60)"
            ),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_two_preprocess_runs_on_one_cache_collide_with_a_message_and_a_killed_holder_frees_it(
    tmp_path, capsys, monkeypatch
):
    """Another process holds CACHE (as a running preprocess would); a second preprocess stops at once with
    one line; after kill -9 of the holder the kernel has dropped the lock and the cache can be claimed."""
    cache = tmp_path / "cache"
    with _held_by_another_process(cache) as holder:
        started = time.monotonic()
        result = run_cli(capsys, monkeypatch, *_args(FOLDER_COMMANDS["preprocess"], tmp_path, cache))
        assert_one_line_error(result, "in use by another mammo-insight run", f"pid {holder.pid}")
        assert time.monotonic() - started < 10
    with claim_output(cache, "preprocess"):
        pass


def test_predict_holds_its_cache_so_a_concurrent_run_on_it_stops_at_once(tmp_path, capsys, monkeypatch):
    """predict --cache writes a preprocess cache: a run (preprocess or predict) already writing there
    stops it before any work, with one line; a folder of something else is refused too."""
    cache = tmp_path / "cache"
    args = ["predict", "--run", tmp_path / "nowhere", "--images", tmp_path / "nowhere", "--cache", cache]
    with _held_by_another_process(cache) as holder:
        result = run_cli(capsys, monkeypatch, *args, "--out", tmp_path / "p.csv")
        assert_one_line_error(result, "in use by another mammo-insight run", f"pid {holder.pid}")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a cache")
    args[-1] = other
    assert_one_line_error(run_cli(capsys, monkeypatch, *args, "--out", tmp_path / "p.csv"), str(other))
    assert not (tmp_path / "p.csv").exists()


# full disk: the write fails with ENOSPC; the message is one line and no partial file is left ----------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_eda_on_a_full_disk_is_one_line_and_leaves_no_empty_summary(tmp_path, capsys, monkeypatch):
    def half_then_full(self, *args, **kwargs):
        Path(self).write_bytes(b"")  # the 0-byte file a torn write leaves
        _enospc()

    monkeypatch.setattr(Path, "write_text", half_then_full)
    out = tmp_path / "eda"
    result = run_cli(capsys, monkeypatch, *_args(FOLDER_COMMANDS["eda"], tmp_path, out))
    assert_one_line_error(result, "No space left on device")
    assert not (out / "summary.json").exists()
    assert [p.name for p in out.rglob("*") if p.is_file() and p.name != ".lock"] == []


@pytest.mark.parametrize(
    ("command", "target"),
    [
        ("cohort", "pandas.DataFrame.to_parquet"),
        ("eda", "pandas.DataFrame.to_csv"),
        ("synth", "pydicom.dcmwrite"),
        ("report", "mammo_insight.report.render.write_text_atomic"),
    ],
)
def test_a_full_disk_is_one_line_in_every_command(command, target, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(target, _enospc)
    if command == "report":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "manifest.json").write_text(json.dumps({"stage": "eda"}))
        args = ["report", "--runs", tmp_path / "run", "--out", tmp_path / "out"]
    elif command == "synth":
        args = ["synth", "--patients", "2", "--size", "64x48", "--out", tmp_path / "out"]
    else:
        template = FILE_COMMANDS.get(command) or FOLDER_COMMANDS[command]
        args = _args(template, tmp_path, tmp_path / ("out.parquet" if command == "cohort" else "out"))
    assert_one_line_error(run_cli(capsys, monkeypatch, *args), "No space left on device")
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []


# report on hostile manifests ------------------------------------------------------------------------------


def test_report_reads_hostile_manifests_without_failing(tmp_path, capsys, monkeypatch):
    bodies = {
        "a_list": [1, 2],
        "strings_and_nulls": {"stage": "train", "headline": {"ROC-AUC": "fast", "pF1": None}, "report": None},
        "wrong_types": {"stage": ["train"], "headline": [1], "report": 5},
        "not_json": "{{{",
    }
    for name, body in bodies.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        text = body if isinstance(body, str) else json.dumps(body)
        (tmp_path / "runs" / name / "manifest.json").write_text(text)
    code, _, err = run_cli(
        capsys, monkeypatch, "report", "--runs", tmp_path / "runs", "--out", tmp_path / "index"
    )
    assert code == 0, err
    assert "fast" in (tmp_path / "index" / "index.html").read_text()


# training options ----------------------------------------------------------------------------------------

BAD_OPTIONS = {
    'lr = "fast"': "lr = 'fast'",
    "augment = 3": "augment = 3",
    "image_size = [0, 0]": "image_size=(0, 0)",
    "batch_size = 0": "batch_size=0",
    "dropout = 1.5": "dropout=1.5",
    "epochs = true": "epochs = True",
    '[augment]\nhflip = "often"': "hflip = 'often'",
}


@pytest.mark.parametrize("body", sorted(BAD_OPTIONS))
def test_a_wrong_typed_training_option_is_one_line(body, tmp_path, capsys, monkeypatch):
    config = tmp_path / "train.toml"
    config.write_text(body + "\n")
    result = run_cli(
        capsys, monkeypatch, "train", "--cache", tmp_path, "--out", tmp_path / "run", "--config", config
    )
    assert_one_line_error(result, BAD_OPTIONS[body])


def test_a_non_binary_label_column_stops_before_any_fold_trains(tmp_path, capsys, monkeypatch):
    from train_cache import write_cache

    from mammo_insight.training import loop as training

    cache = write_cache(tmp_path / "cache", n_patients=6, seed=0)
    monkeypatch.setattr(training, "train_fold", lambda *a, **k: pytest.fail("a fold trained"))
    config = tmp_path / "train.toml"
    config.write_text('label_column = "age"\nmodel = "test_resnet"\n')
    result = run_cli(
        capsys, monkeypatch, "train", "--cache", cache, "--out", tmp_path / "run", "--config", config
    )
    assert_one_line_error(result, "label_column 'age' must hold 0/1 labels", "index.parquet")


# checkpoints ---------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_fold_model_is_refused_in_one_line(tmp_path):
    import torch
    from test_trained_run import make_run

    from mammo_insight.runs.open import open_run
    from mammo_insight.runs.run_io import fold_model_path

    make_run(tmp_path / "run", "single", folds=(0,))
    marker = tmp_path / "payload_ran"
    torch.save({"state": _Payload(marker)}, fold_model_path(tmp_path / "run", 0))
    with pytest.raises(MammoInsightError, match="refused to unpickle .*model.pt") as caught:
        open_run(tmp_path / "run").model(0)
    assert "\n" not in str(caught.value) and not marker.exists()


def test_a_torn_last_checkpoint_is_set_aside_and_the_best_one_resumes(tmp_path, caplog):
    import torch

    from mammo_insight.training.engine import resume_checkpoint

    ckpt = tmp_path / "fold_0"
    ckpt.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, ckpt / "best.ckpt")
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, ckpt / "last.ckpt")
    whole = (ckpt / "last.ckpt").read_bytes()
    assert resume_checkpoint(ckpt) == ckpt / "last.ckpt"
    (ckpt / "last.ckpt").write_bytes(whole[: len(whole) // 2])  # killed mid-write
    assert resume_checkpoint(ckpt) == ckpt / "best.ckpt"
    assert (ckpt / "last.ckpt.torn").is_file() and not (ckpt / "last.ckpt").exists()
    assert "truncated or corrupt" in caplog.text and "set aside" in caplog.text
    (ckpt / "best.ckpt").write_bytes(b"")  # torn too: start over
    assert resume_checkpoint(ckpt) is None
    torch.save({"state_dict": _Payload(tmp_path / "ran")}, ckpt / "last.ckpt")
    with pytest.raises(MammoInsightError, match="refused to unpickle"):  # unsafe is refused, not set aside
        resume_checkpoint(ckpt)
    assert not (tmp_path / "ran").exists()


def test_each_training_batch_draws_the_same_random_numbers_whatever_ran_before():
    import random
    from types import SimpleNamespace

    import torch

    from mammo_insight.training.lightning_module import StepSeed

    def draws(epoch: int, batch: int) -> tuple:
        StepSeed(7).on_train_batch_start(SimpleNamespace(current_epoch=epoch), None, None, batch)
        dropped = torch.nn.functional.dropout(torch.ones(64), 0.5)
        return random.random(), float(np.random.rand()), float(torch.rand(1)), tuple(dropped.tolist())

    first = draws(2, 5)
    torch.rand(100), np.random.rand(5), random.random()  # what an uninterrupted run drew before
    assert draws(2, 5) == first
    assert draws(3, 5) != first and draws(2, 6) != first


# fusion embeddings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inf", "text file", "nan is fine"])
def test_hostile_embeddings_are_one_line(kind, tmp_path):
    from mammo_insight.fusion.emb_table import read_embeddings

    path = tmp_path / "emb.parquet"
    frame = pd.DataFrame(
        {
            "level": "breast",
            "breast_id": ["a", "b"],
            "patient_id": ["1", "2"],
            "emb_000": [0.1, 0.2],
            "emb_001": [1.0, 2.0],
        }
    )
    if kind == "text file":
        path.write_text("image_id,emb_000\nx,1\n")
        with pytest.raises(MammoInsightError, match="not a readable parquet"):
            read_embeddings(path)
        return
    frame.loc[1, "emb_001"] = np.inf if kind == "inf" else np.nan
    frame.to_parquet(path)
    if kind == "inf":
        with pytest.raises(MammoInsightError, match="non-finite .* row 1 column 'emb_001' = inf"):
            read_embeddings(path)
    else:
        assert len(read_embeddings(path)) == 2


def test_fuse_train_with_a_non_parquet_embeddings_file_is_one_line(tmp_path, capsys, monkeypatch):
    emb = tmp_path / "emb.parquet"
    emb.write_bytes(b"PAR1 not really")
    root = rsna_root(tmp_path)
    result = run_cli(
        capsys,
        monkeypatch,
        "fuse-train",
        "--dataset",
        "rsna",
        "--root",
        root,
        "--embeddings",
        emb,
        "--out",
        tmp_path / "f",
    )
    assert_one_line_error(result, str(emb))


# evaluate: an "external" cache that shares women with the run ------------------------------------------


def test_evaluate_refuses_a_cache_sharing_women_with_the_run(tmp_path):
    import torch
    from test_trained_run import make_cache, make_run

    from mammo_insight.stages.evaluate import INTERNAL, EvaluateConfig, run_evaluate, write_evaluate

    cache, run = tmp_path / "cache", tmp_path / "run"
    index = make_cache(cache)
    make_run(run, "single", folds=(0, 1))
    seen = index[index["patient_id"] == index["patient_id"].iloc[0]].assign(fold=0, prob=0.5)
    seen[["image_id", "breast_id", "patient_id", "fold", "prob", "cancer"]].to_csv(
        run / "oof_predictions.csv", index=False
    )
    n_women = index["patient_id"].nunique()
    with pytest.raises(MammoInsightError, match=f"1 of its {n_women} women and {len(seen)} of its"):
        run_evaluate(EvaluateConfig(run=run, cache=cache, device="cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_evaluate(EvaluateConfig(run=run, cache=cache, device="cpu", allow_overlap=True))
    finally:
        torch.set_num_threads(threads)
    assert result.headline()["validation"] == INTERNAL and result.title.startswith("Internal validation")
    page = write_evaluate(result, tmp_path / "out")
    assert INTERNAL in page.read_text()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["validation"] == INTERNAL and metrics["training_overlap"]["shared_women"] == 1

    other = seen.assign(patient_id="elsewhere", image_id="x" + seen["image_id"])  # no shared id: external
    other.to_csv(run / "oof_predictions.csv", index=False)
    result = run_evaluate(EvaluateConfig(run=run, cache=cache, device="cpu"))
    assert "validation" not in result.headline() and result.title.startswith("External validation")


@pytest.mark.slow
def test_preprocess_on_a_disk_that_fills_up_is_one_line_and_resumes(tmp_path, capsys, monkeypatch):
    """The disk fills up at the third image (in the decoding worker, --workers 1) and then at the index
    (in the main process): each time one line, no torn or temporary file, no index; once there is room,
    the rerun resumes from the journal to a complete cache."""
    import cv2
    from dying_task import DISK_FULL_MARK, process_on_a_disk_that_fills_up

    from mammo_insight.imaging.build import JOURNAL_FILE
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path / "rsna"
    make_synthetic_cohort(root, n_patients=3, seed=1, size=(128, 96))
    third = pd.read_csv(root / "train.csv").iloc[2]
    mark = root / "train_images" / str(third["patient_id"]) / f"{third['image_id']}{DISK_FULL_MARK}"
    mark.touch()
    monkeypatch.setattr("mammo_insight.imaging.build.process_one", process_on_a_disk_that_fills_up)
    out = tmp_path / "cache"
    args = [
        "preprocess",
        "--dataset",
        "rsna",
        "--root",
        root,
        "--out",
        out,
        "--size",
        "64x32",
        "--workers",
        "1",
    ]

    def assert_nothing_torn() -> None:
        assert not (out / "index.parquet").exists() and not (out / "failures.csv").exists()
        assert list(out.rglob("*.tmp")) == []
        for png in out.rglob("*.png"):
            assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED) is not None, png

    assert_one_line_error(run_cli(capsys, monkeypatch, *args), "No space left on device", ".png:")
    assert_nothing_torn()
    journaled = (out / JOURNAL_FILE).read_text().count("\n")
    assert 2 <= journaled < len(pd.read_csv(root / "train.csv"))
    mark.unlink()
    with monkeypatch.context() as index_write:
        index_write.setattr("pandas.DataFrame.to_parquet", _enospc)
        assert_one_line_error(run_cli(capsys, monkeypatch, *args), "No space left on device")
    assert_nothing_torn()
    code, stdout, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    index = pd.read_parquet(out / "index.parquet")
    assert (index["status"] == "ok").all() and len(index) == len(pd.read_csv(root / "train.csv"))
    assert f"already_done: {len(index)}" in stdout
