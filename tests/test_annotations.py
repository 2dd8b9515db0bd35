"""The annotations table: circles, boxes and masks carried into the cache and back, one rasteriser."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import write_png_atomic
from mammo_insight.imaging.geometry import CacheGeometry

ORIG = (200, 120)  # height, width of the original image
GEOM = CacheGeometry.fit(*ORIG, (20, 10, 110, 190), True, 90, 48)


def _index(geom: CacheGeometry = GEOM) -> pd.DataFrame:
    return pd.DataFrame([{"image_id": "img1", "patient_id": "p1", "status": "ok", **geom.as_dict()}])


def _mask_file(tmp_path, name: str, mask: np.ndarray) -> str:
    path = tmp_path / name
    write_png_atomic(path, mask.astype(np.uint8) * 255)
    return str(path)


def test_circle_box_and_mask_land_where_the_geometry_puts_them(tmp_path) -> None:
    roi = np.zeros(ORIG, dtype=bool)
    roi[100:130, 40:60] = True
    lesions = pd.DataFrame(
        [
            {"image_id": "img1", "x": 50.0, "y": 60.0, "radius": 8.0},
            {"image_id": "img1", "shape": "box", "x0": 70, "y0": 140, "x1": 90, "y1": 170},
            {"image_id": "img1", "shape": "mask", "mask_path": _mask_file(tmp_path, "roi.png", roi)},
            {"image_id": "not_cached", "x": 1.0, "y": 1.0, "radius": 1.0},
        ]
    )
    cache = tmp_path / "cache"
    table = annotations.to_cache(lesions, _index(), cache)
    assert list(table["shape"]) == ["circle", "box", "mask"]
    annotations.write(table, cache)
    back = annotations.read(cache)
    # the mask's centroid and equal-area radius stand for it; its cache PNG is under CACHE/masks
    mask_row = back.iloc[2]
    assert (mask_row["x"], mask_row["y"]) == pytest.approx((49.5, 114.5))
    assert mask_row["radius"] == pytest.approx(np.sqrt(600 / np.pi))
    assert (cache / mask_row["cache_mask"]).is_file()
    for row in back.itertuples():
        u, v = GEOM.to_cache(row.x, row.y)
        assert (row.cache_x, row.cache_y) == pytest.approx((float(u), float(v)))
        assert row.cache_x0 <= row.cache_x <= row.cache_x1 and row.cache_y0 <= row.cache_y <= row.cache_y1
    # original-pixel rasters: each shape exactly where it was drawn (the mask back through the cache)
    box_only = annotations.lesion_mask(back.iloc[[1]], GEOM, cache)
    assert box_only[140:170, 70:90].all() and box_only.sum() == 600
    mask_only = annotations.lesion_mask(back.iloc[[2]], GEOM, cache)
    overlap = (mask_only & roi).sum() / (mask_only | roi).sum()
    assert overlap > 0.8
    widened = annotations.lesion_mask(back.iloc[[1]], GEOM, cache, tolerance=5)
    assert widened[136, 80] and not box_only[136, 80]
    # cache-pixel rasters agree with the original ones mapped forward
    in_cache = annotations.cache_lesion_mask(back, (GEOM.out_height, GEOM.out_width), cache)
    forward = GEOM.image_to_cache(annotations.lesion_mask(back, GEOM, cache)) >= 0.5
    assert (in_cache & forward).sum() / (in_cache | forward).sum() > 0.8


def test_a_mask_of_the_wrong_size_or_not_binary_is_left_out_with_its_name(tmp_path, caplog) -> None:
    crop = np.zeros((40, 30), dtype=bool)
    crop[5:10, 5:10] = True
    grey = np.tile(np.linspace(0, 1, ORIG[1]), (ORIG[0], 1))
    grey_path = tmp_path / "grey.png"
    write_png_atomic(grey_path, (grey * 200).astype(np.uint8))
    lesions = pd.DataFrame(
        [
            {"image_id": "img1", "shape": "mask", "mask_path": _mask_file(tmp_path, "crop.png", crop)},
            {"image_id": "img1", "shape": "mask", "mask_path": str(grey_path)},
            {"image_id": "img1", "x": 50.0, "y": 60.0, "radius": 8.0},
        ]
    )
    with caplog.at_level(logging.WARNING):
        table = annotations.to_cache(lesions, _index(), tmp_path / "cache")
    assert list(table["shape"]) == ["circle"]
    assert "crop.png is 30x40 but its image is 120x200" in caplog.text
    assert "grey.png holds more than two values" in caplog.text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image_id": "a", "shape": "polygon"}, "'polygon' is not one of circle, box, mask"),
        ({"image_id": "a", "shape": "box", "x0": 1, "y0": 1, "x1": 5}, "a box needs column 'y1'; row 0"),
        ({"image_id": "a", "x": "near the nipple", "y": 1, "radius": 2}, "column 'x' row 0 holds"),
        ({"image_id": "a", "shape": "box", "x0": 5, "y0": 1, "x1": 5, "y1": 3}, "box row 0 is empty"),
    ],
)
def test_bad_annotation_rows_are_named(row, message) -> None:
    with pytest.raises(MammoInsightError, match=message):
        annotations.normalise(pd.DataFrame([row]), "lesions.csv")


def test_old_circle_only_cache_reads_as_circles(tmp_path) -> None:
    old = pd.DataFrame([{"image_id": 7, "x": 1.0, "y": 2.0, "radius": 3.0, "cache_x": 1.0, "cache_y": 2.0}])
    old.to_parquet(tmp_path / annotations.ANNOTATIONS_FILE)
    table = annotations.read(tmp_path)
    assert table.loc[0, "shape"] == "circle" and table.loc[0, "image_id"] == "7"


def _dicom_mask(path, mask: np.ndarray) -> None:
    """A binary mask as TCIA ships CBIS ROI masks: an uncompressed 8-bit MONOCHROME2 DICOM, 0/255."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = mask.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (mask.astype(np.uint8) * 255).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_cbis_roi_masks_travel_into_the_cache(tmp_path, caplog) -> None:
    """A CBIS ROI folder as TCIA's downloader leaves it: the mask and the cropped lesion image, renamed."""
    from mammo_insight.cohort.adapters.cbis import roi_masks

    case = tmp_path / "Mass-Training_P_00001_LEFT_CC_1" / "renamed-study" / "renamed-series"
    roi = np.zeros(ORIG, dtype=bool)
    roi[50:80, 30:60] = True
    _dicom_mask(case / "1-1.dcm", roi[40:90, 20:70])  # the cropped lesion: not the film's size
    _dicom_mask(case / "1-2.dcm", roi)
    rows = pd.DataFrame(
        [
            {
                "image_id": "img1",
                "roi_mask": "Mass-Training_P_00001_LEFT_CC_1/a/b/000001.dcm",
                "abnormality_type": "mass",
                "pathology": "MALIGNANT",
            },
            {"image_id": "img1", "roi_mask": "", "abnormality_type": "mass", "pathology": "BENIGN"},
        ]
    )
    found = roi_masks(tmp_path, rows)
    assert len(found) == 2 and set(found["shape"]) == {"mask"}
    with caplog.at_level(logging.WARNING):
        table = annotations.to_cache(found, _index(), tmp_path / "cache")
    assert len(table) == 1 and table.loc[0, "pathology"] == "MALIGNANT"
    assert "1-1.dcm is 50x50 but its image is 120x200" in caplog.text
    back = annotations.lesion_mask(table, GEOM, tmp_path / "cache")
    assert (back & roi).sum() / (back | roi).sum() > 0.8
