"""INbreast's AllXML ROIs: polygons as boxes, single calcifications as circles, in original and cache pixels."""

from __future__ import annotations

import logging
import plistlib
from pathlib import Path

import numpy as np
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.adapters.inbreast import POINT_RADIUS_PX
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import read_cache_index
from mammo_insight.imaging.geometry import CacheGeometry

SIZE = (120, 80)  # rows, columns of every fabricated film
IMAGES = [("20586908", "6c613a14b80a8591", "R", "CC"), ("20586934", "6c613a14b80a8591", "L", "MLO")]


def _film(path: Path, side: str) -> None:
    """A 16-bit MONOCHROME2 film: dark background, a bright breast against the chest-wall edge."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.full(SIZE, 50, dtype=np.uint16)
    breast = slice(0, 60) if side == "L" else slice(20, 80)
    pixels[10:110, breast] = 3000
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _roi(name: str, points: list[str]) -> dict:
    return {"Name": name, "NumberOfPoints": len(points), "Point_px": points}


def _xml(root: Path, number: str, rois: list[dict]) -> None:
    (root / "AllXML").mkdir(exist_ok=True)
    with (root / "AllXML" / f"{number}.xml").open("wb") as handle:
        plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}, handle)


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "INbreast Release 1.0"
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    for number, patient, side, view in IMAGES:
        lines.append(f"removed;removed;{side};{view};201001;{number};2;5")
        _film(root / "AllDICOMs" / f"{number}_{patient}_MG_{side}_{view}_ANON.dcm", side)
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    _xml(
        root,
        "20586908",
        [
            _roi("Mass", ["(30.2, 40.7)", "(50.4, 44.0)", "(41.0, 69.6)"]),  # box x 30..51, y 41..71
            _roi("Calcification", ["(60.0, 20.0)"]),
            _roi("Cluster", ["(70.0, 100.0)", "(79.9, 119.0)", "(75.0, 130.0)"]),  # clipped at the bottom
            _roi("Mass", ["(200.0, 10.0)", "(220.0, 30.0)"]),  # right of the 80-pixel-wide film
            _roi("Spiculated Region", ["(10.0, 10.0)", "10, 12"]),
        ],
    )
    (root / "AllXML" / "20586934.xml").write_text("<plist><dict><key>Images</key>")  # truncated
    return root


def test_rois_become_boxes_and_circles_in_original_pixels(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        cohort = load_cohort("inbreast", _root(tmp_path))
    table = annotations.normalise(cohort.annotations)
    assert table["image_id"].tolist() == ["20586908"] * 3
    assert table["abnormality"].tolist() == ["Mass", "Calcification", "Cluster"]
    assert table["shape"].tolist() == ["box", "circle", "box"]
    assert table.loc[0, ["x0", "y0", "x1", "y1"]].tolist() == [30, 41, 51, 71]
    assert table.loc[1, ["x", "y", "radius"]].tolist() == [60, 20, POINT_RADIUS_PX]
    assert table.loc[2, ["x0", "y0", "x1", "y1"]].tolist() == [70, 100, 80, 120]
    xml = str(tmp_path / "INbreast Release 1.0" / "AllXML")
    assert f"{xml}/20586908.xml ROI 3 (Mass) lies outside its 80x120 image" in caplog.text
    assert (
        f"{xml}/20586908.xml ROI 4 (Spiculated Region) has a point '10, 12' that is not '(x, y)'"
        in caplog.text
    )
    assert f"{xml}/20586934.xml is not an ROI plist" in caplog.text


def test_without_allxml_there_are_no_lesions(tmp_path) -> None:
    root = _root(tmp_path)
    for path in (root / "AllXML").iterdir():
        path.unlink()
    (root / "AllXML").rmdir()
    assert load_cohort("inbreast", root).annotations.empty


@pytest.mark.slow
def test_rois_travel_through_preprocess_into_cache_pixels(tmp_path) -> None:
    from mammo_insight.stages import preprocess

    root = _root(tmp_path)
    cache = tmp_path / "cache"
    preprocess.run_preprocess(
        preprocess.PreprocessStageConfig(
            dataset="inbreast", root=root, out=cache, size=(64, 32), sheet_size=0
        )
    )
    index = read_cache_index(cache)
    row = index[index["image_id"] == "20586908"].iloc[0]
    geom = CacheGeometry.from_row(row)
    table = annotations.read(cache)
    assert table["shape"].tolist() == ["box", "circle", "box"]
    for lesion in table.itertuples():
        u, v = geom.to_cache(lesion.x, lesion.y)
        assert (lesion.cache_x, lesion.cache_y) == pytest.approx((float(u), float(v)))
    # the mass box in cache pixels is the original box carried through crop, flip and resize
    box = np.zeros(SIZE, dtype=bool)
    box[41:71, 30:51] = True
    forward = geom.image_to_cache(box) >= 0.5
    in_cache = annotations.cache_lesion_mask(table.iloc[[0]], (geom.out_height, geom.out_width), cache)
    assert forward.any() and (in_cache & forward).sum() / (in_cache | forward).sum() > 0.6
    back = annotations.lesion_mask(table.iloc[[0]], geom, cache)
    assert back[41:71, 30:51].all() and back.sum() == box.sum()
