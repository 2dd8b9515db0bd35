"""No way out of the roots: every route by which a file is opened resolves links before it checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.adapters.dicom import folder_cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.build import build_cache
from mammo_insight.imaging.cache import INDEX_FILE, load_cache_image, read_cache_index
from mammo_insight.imaging.pipeline import PreprocessConfig

SIZE = (64, 32)


@pytest.fixture
def linked_root(tmp_path) -> tuple[Path, str, str]:
    """A synthetic RSNA root where one file and one patient folder are links to copies outside it."""
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root, outside = tmp_path / "root", tmp_path / "outside"
    make_synthetic_cohort(root, n_patients=3, seed=5, size=(96, 64), prevalence=0.5)
    outside.mkdir()
    patients = sorted(p for p in (root / "train_images").iterdir())
    linked_file = min(patients[0].glob("*.dcm"))
    shutil.copy(linked_file, outside / linked_file.name)
    linked_file.unlink()
    linked_file.symlink_to(outside / linked_file.name)
    shutil.move(patients[1], outside / patients[1].name)
    patients[1].symlink_to(outside / patients[1].name, target_is_directory=True)
    return root, linked_file.stem, patients[1].name


def test_a_file_or_patient_folder_linked_out_of_the_root_is_not_read(linked_root, tmp_path) -> None:
    root, file_id, patient = linked_root
    cohort = load_cohort("rsna", root)
    out = tmp_path / "cache"
    build_cache(cohort, out, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0)
    failures = pd.read_csv(out / "failures.csv", dtype=str).set_index("image_id")
    escaped = {file_id} | set(cohort.table.loc[cohort.table["patient_id"] == patient, "image_id"])
    assert set(failures.index) == escaped
    assert all("outside the image root" in r for r in failures["reason"])
    index = read_cache_index(out)
    assert len(index) == len(cohort.table) - len(escaped) and len(index) > 0


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/etc/passwd"])
def test_an_edited_index_cannot_lead_out_of_the_cache(linked_root, tmp_path, bad_path) -> None:
    root, _, _ = linked_root
    out = tmp_path / "cache"
    build_cache(
        load_cohort("rsna", root), out, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0
    )
    index = pd.read_parquet(out / INDEX_FILE)
    index.loc[index["status"] == "ok", "cache_path"] = bad_path
    index.to_parquet(out / INDEX_FILE, index=False)
    with pytest.raises(MammoInsightError, match="outside the cache"):
        read_cache_index(out)
    with pytest.raises(MammoInsightError, match="outside the cache"):
        load_cache_image(out, bad_path)


def test_a_cache_image_linked_out_of_the_cache_is_refused(linked_root, tmp_path) -> None:
    root, _, _ = linked_root
    out = tmp_path / "cache"
    build_cache(
        load_cohort("rsna", root), out, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0
    )
    rel = read_cache_index(out)["cache_path"].iloc[0]
    elsewhere = tmp_path / "elsewhere.png"
    shutil.move(out / rel, elsewhere)
    (out / rel).symlink_to(elsewhere)
    with pytest.raises(MammoInsightError, match="outside the cache"):
        read_cache_index(out)


def test_predict_folder_mode_never_opens_a_link_out_of_the_folder(tmp_path, linked_root) -> None:
    root, _, _ = linked_root
    folder = tmp_path / "studies"
    shutil.copytree(root / "train_images", folder, symlinks=False)
    (folder / "passwd.dcm").symlink_to("/etc/passwd")
    cohort, unreadable = folder_cohort(folder)
    assert "passwd" not in set(cohort.table["image_id"])
    reason = unreadable.set_index("image_id").loc["passwd", "reason"]
    assert "outside" in reason and "not read" in reason


def test_predict_folder_mode_follows_the_folder_links_the_user_made(tmp_path) -> None:
    """The folder given may be a link, and so may a folder directly in it (``studies/site_b -> /mnt/...``):
    both are followed, as the dataset adapters follow a linked image folder (files.inside_dataset). A
    folder link deeper down that leads out is listed as refused, never dropped unseen."""
    from mammo_insight.synth.cohort import make_synthetic_cohort

    make_synthetic_cohort(tmp_path / "mount", n_patients=3, seed=5, size=(96, 64), prevalence=0.5)
    mounted = sorted((tmp_path / "mount" / "train_images").iterdir())
    project = tmp_path / "project"
    shutil.copytree(mounted[0], project / mounted[0].name)
    (project / mounted[1].name).symlink_to(mounted[1], target_is_directory=True)
    (project / "site").mkdir()
    (project / "site" / mounted[2].name).symlink_to(mounted[2], target_is_directory=True)
    given = tmp_path / "studies"
    given.symlink_to(project, target_is_directory=True)

    cohort, unreadable = folder_cohort(given)
    expected = {p.stem for folder in mounted[:2] for p in folder.glob("*.dcm")}
    assert set(cohort.table["image_id"]) == expected
    assert set(cohort.table["patient_id"]) == {mounted[0].name, mounted[1].name}
    refused = unreadable.set_index("file")["reason"]
    assert list(refused.index) == [f"site/{mounted[2].name}"] and "outside" in refused.iloc[0]
    out = tmp_path / "cache"
    build_cache(cohort, out, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0)
    assert set(read_cache_index(out)["image_id"]) == expected  # every image read, none refused
