"""One contract for every stage (stages/base.py): a frozen config, `run_<stage>(config) -> Result`,
`write_<stage>(result, out) -> Path`, a frozen result with a headline, lines and a notebook view; and the
commands that need no model never import torch."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import mammo_insight.stages as stages_package
from mammo_insight.stages.base import StageResult

STAGE_MODULES = sorted(
    m.name for m in pkgutil.iter_modules(stages_package.__path__) if m.name not in {"base", "__init__"}
)


def _frozen(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_every_command_has_a_stage_module():
    from mammo_insight.cli.app import COMMANDS

    named = {"fuse_train": "fuse"}  # the command's module name -> its stage's
    assert {named.get(c, c) for c in COMMANDS} == set(STAGE_MODULES)


@pytest.mark.parametrize("name", STAGE_MODULES)
def test_stage_follows_the_contract(name):
    module = importlib.import_module(f"mammo_insight.stages.{name}")
    run, write = getattr(module, f"run_{name}"), getattr(module, f"write_{name}")
    run_hints = typing.get_type_hints(run, vars(module))
    write_hints = typing.get_type_hints(write, vars(module))

    params = list(inspect.signature(run).parameters.values())
    assert params[0].name in {"config", "cfg"}
    assert all(p.default is not inspect.Parameter.empty for p in params[1:]), "extra inputs are optional"
    config_type, result_type = run_hints[params[0].name], run_hints["return"]
    assert _frozen(config_type), f"{config_type.__name__} must be a frozen dataclass"
    assert issubclass(result_type, StageResult) and _frozen(result_type)
    assert result_type.stage
    fields = {f.name for f in dataclasses.fields(result_type)}
    assert result_type.title or "title" in fields, "a title for the page and the notebook view"

    assert list(inspect.signature(write).parameters) == ["result", "out"]
    assert write_hints["result"] is result_type
    assert write_hints["return"] is Path


@pytest.mark.slow
def test_cheap_stages_run_write_and_show(tmp_path):
    """synth -> cohort -> eda -> report through the Python API: what the CLI and a notebook see."""
    from mammo_insight.stages import cohort, eda, report, synth

    root = tmp_path / "synth"
    made = synth.run_synth(synth.SynthConfig(out=root, patients=12, seed=1, size=(96, 64), prevalence=0.5))
    synth.write_synth(made, root)
    results = [made]
    results.append(cohort.run_cohort(cohort.CohortConfig("rsna", root)))
    cohort.write_cohort(results[-1], tmp_path / "cohort.parquet")
    results.append(eda.run_eda(eda.EdaConfig(dataset="rsna", root=root)))
    eda.write_eda(results[-1], tmp_path / "eda")
    results.append(report.run_report(report.ReportConfig((tmp_path,))))
    page = report.write_report(results[-1], tmp_path / "index")

    for result in results:
        headline = result.headline()
        assert headline and all(isinstance(k, str) and isinstance(v, str) for k, v in headline.items())
        assert result.lines() and all(isinstance(line, str) for line in result.lines())
        assert result.title in result._repr_html_()
    assert results[-1].headline()["stage outputs"] == "3"  # synth, cohort, eda
    assert "eda" in page.read_text()


def test_working_folder_stages_refuse_another_out(tmp_path):
    from mammo_insight.errors import MammoInsightError
    from mammo_insight.stages.base import working_folder

    assert working_folder(tmp_path / "run", tmp_path / "run" / ".", "train") == tmp_path / "run"
    with pytest.raises(MammoInsightError, match="built .*run while it ran"):
        working_folder(tmp_path / "run", tmp_path / "elsewhere", "train")


def _imports_torch(argv: list[str]) -> bool:
    """Run one command in a fresh interpreter; True when torch was imported by the end."""
    code = (
        "import sys\n"
        "from mammo_insight.cli.app import main\n"
        f"sys.argv = {['mammo-insight', *argv]!r}\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1] == "TORCH"


def test_help_does_not_import_torch():
    assert not _imports_torch(["--help"])
    assert not _imports_torch(["train", "--help"])


@pytest.mark.slow
def test_commands_without_a_model_never_import_torch(tmp_path):
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path / "synth"
    make_synthetic_cohort(root, n_patients=30, seed=2, size=(96, 64), prevalence=0.3)
    assert not _imports_torch(
        ["cohort", "--dataset", "rsna", "--root", str(root), "--out", str(tmp_path / "c.parquet")]
    )
    assert not _imports_torch(
        ["eda", "--dataset", "rsna", "--root", str(root), "--out", str(tmp_path / "eda")]
    )
    fuse = ["fuse-train", "--dataset", "rsna", "--root", str(root), "--out", str(tmp_path / "fuse")]
    assert not _imports_torch([*fuse, "--folds", "3", "--n-boot", "50"])
