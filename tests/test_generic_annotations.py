"""Generic mappings with [annotations]: VinDr-Mammo style boxes (one CSV row per finding) and circles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import write_png_atomic

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vindr_mammo.toml"
HEADER = (
    "image_id,study_id,series_id,laterality,view_position,height,width,breast_birads,breast_density,"
    "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
)
ROWS = [
    "img_a,st1,se1,L,CC,64,48,BI-RADS 4,DENSITY C,['Mass'],BI-RADS 4,10.5,20.0,30.25,41.0,training",
    "img_a,st1,se1,L,CC,64,48,BI-RADS 4,DENSITY C,['Suspicious Calcification'],BI-RADS 4,2,3,6,9,training",
    "img_b,st1,se1,L,MLO,64,48,BI-RADS 4,DENSITY C,['Mass'],BI-RADS 4,12,22,33,44,training",
    "img_c,st2,se2,R,CC,64,48,BI-RADS 1,DENSITY B,['No Finding'],,,,,,test",
]


def _root(tmp_path: Path, rows: list[str] = ROWS, mapping: str | None = None) -> tuple[Path, Path]:
    """A VinDr-like release with PNG images; the example mapping pointed at .png files."""
    root = tmp_path / "vindr"
    root.mkdir()
    (root / "finding_annotations.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    for row in rows:
        image, study = row.split(",")[:2]
        write_png_atomic(root / "images" / study / f"{image}.png", np.full((64, 48), 90, dtype=np.uint8))
    path = root / "vindr.toml"
    path.write_text(mapping or EXAMPLE.read_text().replace("{image_id}.dicom", "{image_id}.png"))
    return root, path


def test_vindr_rows_per_finding_give_one_image_row_and_a_box_each(tmp_path) -> None:
    cohort = load_cohort("generic", *_root(tmp_path))
    table = cohort.table
    assert table["image_id"].tolist() == ["img_a", "img_b", "img_c"]
    assert table["cancer"].tolist() == [1.0, 1.0, 0.0]
    assert table["birads"].tolist() == [4.0, 4.0, 1.0] and table["density"].tolist() == ["C", "C", "B"]
    assert table["patient_id"].tolist() == ["st1", "st1", "st2"]
    assert all(Path(p).is_file() for p in table["image_path"])
    assert Path(table.loc[1, "image_path"]).parts[-2:] == ("st1", "img_b.png")
    lesions = annotations.normalise(cohort.annotations)
    assert lesions["image_id"].tolist() == ["img_a", "img_a", "img_b"]  # "No Finding" gives none
    assert set(lesions["shape"]) == {"box"}
    assert lesions[["x0", "y0", "x1", "y1"]].to_numpy().tolist()[:2] == [[10.5, 20, 30.25, 41], [2, 3, 6, 9]]
    assert lesions["abnormality"].tolist() == ["['Mass']", "['Suspicious Calcification']", "['Mass']"]
    assert "birads" in cohort.post_outcome


def test_the_example_mapping_loads_as_released(tmp_path) -> None:
    root, _ = _root(tmp_path)
    cohort = load_cohort("generic", root, EXAMPLE)
    assert cohort.table["image_path"].str.endswith(".dicom").all() and len(cohort.annotations) == 3


def test_circle_columns_give_circles(tmp_path) -> None:
    rows = ["p1,L,CC,1,a.png,50,60,8", "p1,L,CC,1,a.png,10,12,3", "p2,R,MLO,0,b.png,,,"]
    root = tmp_path / "r"
    root.mkdir()
    (root / "t.csv").write_text("\n".join(["pid,side,view,y,file,cx,cy,r", *rows]) + "\n")
    mapping = root / "m.toml"
    mapping.write_text(
        'csv = "t.csv"\n[columns]\npatient_id = "pid"\nlaterality = "side"\nview = "view"\n'
        'image_path = "file"\n[label]\ncolumn = "y"\npositive = "1"\n'
        '[annotations]\nx = "cx"\ny = "cy"\nradius = "r"\n'
    )
    cohort = load_cohort("generic", root, mapping)
    assert len(cohort.table) == 2
    lesions = annotations.normalise(cohort.annotations)
    assert lesions["shape"].tolist() == ["circle", "circle"]
    assert lesions[["x", "y", "radius"]].to_numpy().tolist() == [[50, 60, 8], [10, 12, 3]]


def _spoil(row: int, column: str, value: str) -> list[str]:
    rows = [r.split(",") for r in ROWS]
    index = HEADER.split(",").index(column)
    rows[row][index] = value
    return [",".join(r) for r in rows]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (_spoil(2, "ymax", ""), r"line 4: annotation column 'ymax' \(y1\) is empty"),
        (_spoil(0, "xmin", "left"), r"line 2: annotation column 'xmin' \(x0\) holds 'left', not a finite"),
        (_spoil(1, "xmin", "inf"), r"line 3: annotation column 'xmin' \(x0\) holds 'inf'"),
        (
            _spoil(2, "xmax", "12"),
            r"line 4: annotation columns 'xmin', 'ymin', 'xmax', 'ymax' give an empty box",
        ),
        (
            _spoil(1, "breast_density", "DENSITY D"),
            r"image 'img_a' \(line\(s\) 2, 3\) that disagree on 'density'",
        ),
        # after the collapse, validation still names the CSV's line (img_c is the 4th data row)
        (_spoil(3, "laterality", "X"), r"'laterality' has unknown value\(s\) \['X'\] in line\(s\) 5"),
    ],
)
def test_bad_annotation_rows_name_file_column_and_line(tmp_path, rows, message) -> None:
    with pytest.raises(MammoInsightError, match=message):
        load_cohort("generic", *_root(tmp_path, rows))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('x1 = "xmax"', 'radius = "xmax"'), r"\[annotations\] must name the columns of one shape"),
        (('x1 = "xmax"', 'x2 = "xmax"'), r"\[annotations\] has unknown key\(s\) \['x2'\]"),
        (('y1 = "ymax"', 'y1 = "y_max"'), r"names column\(s\) \['y_max'\]"),
        (("{study_id}/", "{study_id!r}/"), "must name source columns as plain"),
        (("{study_id}/", "{study_id/"), "is malformed"),
    ],
)
def test_bad_annotation_mappings_are_one_line_errors(tmp_path, edit, message) -> None:
    mapping = EXAMPLE.read_text().replace(*edit)
    with pytest.raises(MammoInsightError, match=message):
        load_cohort("generic", *_root(tmp_path, mapping=mapping))


def test_repeated_rows_without_annotations_stay_an_error(tmp_path) -> None:
    text = EXAMPLE.read_text()
    mapping = text[: text.rindex("[annotations]")]
    with pytest.raises(MammoInsightError, match="'image_id' must be unique"):
        load_cohort("generic", *_root(tmp_path, mapping=mapping))


def test_a_path_format_leading_out_of_the_image_root_is_named_as_the_format(tmp_path) -> None:
    mapping = EXAMPLE.read_text().replace("{study_id}/", "../{study_id}/")
    with pytest.raises(
        MammoInsightError, match=r"generic: 'image_path_format' points outside the image root"
    ):
        load_cohort("generic", *_root(tmp_path, mapping=mapping))
