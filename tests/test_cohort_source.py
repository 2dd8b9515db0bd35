"""One cohort-source loader: --cohort FILE.parquet or --dataset/--root[/--mapping], exactly one of them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.cohort.source import PARQUET_LABEL, load_cohort_source
from mammo_insight.errors import MammoInsightError

INFO = "mdb001 G CIRC B 10 20 5\nmdb002 F NORM\nmdb003 D CALC M 1 2 3\nmdb004 D NORM\n"


@pytest.fixture()
def mias_root(tmp_path) -> Path:
    root = tmp_path / "mias"
    root.mkdir()
    (root / "Info.txt").write_text(INFO)
    return root


def test_dataset_and_root_load_through_the_adapter_and_name_the_files_to_hash(mias_root) -> None:
    cohort, inputs = load_cohort_source(cohort=None, dataset="mias", root=mias_root, mapping=None)
    assert (
        cohort.dataset == "mias" and len(cohort.table) == 4 and inputs == {"Info.txt": mias_root / "Info.txt"}
    )


def test_a_cohort_file_from_the_cohort_command_keeps_its_declarations(mias_root, tmp_path) -> None:
    out = tmp_path / "c.parquet"
    result = CliRunner().invoke(
        app, ["cohort", "--dataset", "mias", "--root", str(mias_root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    direct, _ = load_cohort_source(cohort=None, dataset="mias", root=mias_root, mapping=None)
    cohort, inputs = load_cohort_source(cohort=out, dataset=None, root=None, mapping=None)
    assert inputs == {"cohort": out}
    declarations = ("label_meaning", "factors", "post_outcome", "exposure", "row_unit", "kind")
    assert cohort.dataset == "mias"
    assert [getattr(cohort, d) for d in declarations] == [getattr(direct, d) for d in declarations]
    pd.testing.assert_frame_equal(cohort.table, direct.table)
    assert len(cohort.annotations) == len(direct.annotations) == 2


def test_a_plain_canonical_parquet_gets_the_defaults(mias_root, tmp_path) -> None:
    direct, _ = load_cohort_source(cohort=None, dataset="mias", root=mias_root, mapping=None)
    path = tmp_path / "plain.parquet"
    direct.table.to_parquet(path)
    cohort, _ = load_cohort_source(cohort=path, dataset=None, root=None, mapping=None)
    assert cohort.dataset == "plain" and cohort.label_meaning == PARQUET_LABEL
    assert cohort.post_outcome == POST_OUTCOME_COLUMNS
    named, _ = load_cohort_source(cohort=path, dataset="mine", root=None, mapping=None)
    assert named.dataset == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give --dataset NAME and --root DIR"),
        ({"dataset": "mias"}, "give --dataset NAME and --root DIR"),
        ({"cohort": "c.parquet", "root": "."}, "not both"),
        ({"cohort": "missing.parquet"}, "does not exist"),
        ({"cohort": "junk.parquet"}, "cannot read"),
    ],
)
def test_neither_both_or_a_bad_file_is_a_clear_error(tmp_path, kwargs, message) -> None:
    (tmp_path / "junk.parquet").write_text("not parquet")
    args = {"cohort": None, "dataset": None, "root": None, "mapping": None, **kwargs}
    for key in ("cohort", "root"):
        if args[key] is not None:
            args[key] = tmp_path / args[key]
    with pytest.raises(MammoInsightError, match=message):
        load_cohort_source(**args)


def test_a_cohort_file_breaking_the_contract_is_named(tmp_path) -> None:
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"patient_id": ["a"]}).to_parquet(path)
    with pytest.raises(MammoInsightError, match="bad.parquet: missing column"):
        load_cohort_source(cohort=path, dataset=None, root=None, mapping=None)


def test_a_cohort_file_keeps_exposure_kind_and_row_unit_and_refuses_an_unknown_kind(
    mias_root, tmp_path
) -> None:
    """The declarations eda words its findings and fits its models by survive the file; a kind from a file
    made elsewhere that is none of COHORT_KINDS falls back to screening."""
    from mammo_insight.cohort.source import ATTRS_KEY, write_cohort_file

    cohort, _ = load_cohort_source(cohort=None, dataset="mias", root=mias_root, mapping=None)
    cohort.exposure, cohort.kind, cohort.row_unit = ["tissue"], "biopsied lesions", "lesion"
    path = write_cohort_file(cohort, tmp_path / "c.parquet")
    back, _ = load_cohort_source(cohort=path, dataset=None, root=None, mapping=None)
    assert (back.exposure, back.kind, back.row_unit) == (["tissue"], "biopsied lesions", "lesion")
    table = pd.read_parquet(path)
    table.attrs[ATTRS_KEY]["kind"] = "<script>"
    table.to_parquet(tmp_path / "odd.parquet")
    assert load_cohort_source(cohort=tmp_path / "odd.parquet", dataset=None, root=None, mapping=None)[
        0
    ].kind == ("screening")
