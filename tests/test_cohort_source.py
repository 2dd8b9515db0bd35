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
    assert (cohort.dataset, cohort.label_meaning, cohort.factors, cohort.post_outcome) == (
        "mias",
        direct.label_meaning,
        direct.factors,
        direct.post_outcome,
    )
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
