"""predict's folder mode: ids that reveal nothing of the PatientID, and one id per file."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pydicom
import pytest

from mammo_insight.cohort.adapters.dicom import folder_cohort


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory) -> list[Path]:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("ids_synth")
    make_synthetic_cohort(root, n_patients=2, seed=11, size=(64, 48), prevalence=0.5)
    return sorted(root.rglob("*.dcm"))


def _derived(patient_id: str) -> set[str]:
    """What a brute force over likely PatientIDs would compute: the id itself and its plain digests."""
    out = {patient_id}
    for name in ("sha256", "sha1", "md5", "blake2b"):
        digest = hashlib.new(name, patient_id.encode()).hexdigest()
        out |= {digest, digest[:12], digest[:8], digest[:16]}
    return out


def test_no_folder_mode_value_is_derivable_from_the_patient_id(dicoms, tmp_path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in dicoms:
        shutil.copy(path, flat / path.name)
    first, _ = folder_cohort(flat)
    second, _ = folder_cohort(flat)
    patient_ids = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in dicoms}
    forbidden = set().union(*(_derived(p) for p in patient_ids))
    header_derived = [*first.table["patient_id"], *first.table["breast_id"], *first.table["notes"]]
    leaked = {f for f in forbidden for value in header_derived if f in str(value)}
    assert not leaked, leaked
    # one woman, one id within a run; a new key each run
    assert first.table["patient_id"].nunique() == len(patient_ids)
    assert set(first.table["patient_id"]).isdisjoint(set(second.table["patient_id"]))


def test_files_whose_paths_join_alike_get_distinct_ids(dicoms, tmp_path) -> None:
    folder = tmp_path / "studies"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a_b").mkdir()
    shutil.copy(dicoms[0], folder / "a" / "b" / "1.dcm")
    shutil.copy(dicoms[1], folder / "a_b" / "1.dcm")
    cohort, _ = folder_cohort(folder)
    assert cohort.table["image_id"].is_unique and len(cohort.table) == 2
    assert set(cohort.table["patient_id"]) == {"a", "a_b"}
