"""RunSpec: written to config.json and read back into the same type; folders of the previous layout upgraded.

tests/data/legacy_runs/<kind>/config.json were written by mammo-insight at commit 2cc3c3b (before
``schema_version``) on a tiny synthetic run (their package versions dropped, their cache path replaced).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mammo_insight.errors import MammoInsightError
from mammo_insight.runs.config import PatchConfig, TrainConfig
from mammo_insight.runs.spec import SCHEMA_VERSION, RunSpec, upgrade

LEGACY = Path(__file__).parent / "data" / "legacy_runs"


def _legacy(name: str) -> dict:
    return json.loads((LEGACY / name / "config.json").read_text())


def test_a_cnn_spec_reads_back_as_the_same_spec(tmp_path) -> None:
    recipe = TrainConfig(model="test_resnet", view_mode="multi", pool="gem", folds=3, seed=7, epochs=2)
    spec = RunSpec.cnn(
        recipe, image_size=(64, 48), cache="c", preprocess={"size": [64, 48]}, facts={"n_images": 9}
    )
    spec = spec.with_thresholds({"image": 0.25, "breast": 0.5})
    spec.write(tmp_path)
    again = RunSpec.read(tmp_path)
    assert again == spec
    assert again.recipe.image_size == (64, 48) and again.multi_view and again.facts == {"n_images": 9}
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION and written["kind"] == "cnn"
    assert (
        written["threshold"] == 0.25 and written["epochs"] == 2
    )  # older readers of the flat file still work


def test_a_patch_spec_reads_back_as_the_same_spec(tmp_path) -> None:
    recipe = PatchConfig(model="test_resnet", patch_size=16, folds=2, seed=4, normalize=False)
    spec = RunSpec.patch(recipe, image_size=(96, 64), facts={"stage": "patch-train"})
    spec.write(tmp_path)
    again = RunSpec.read(tmp_path)
    assert again == spec and again.input_size == (16, 16) and again.normalization is None
    assert isinstance(again.recipe, PatchConfig) and again.recipe.patch_size == 16


def test_build_model_rebuilds_the_recorded_network() -> None:
    spec = RunSpec.cnn(TrainConfig(model="test_resnet", pool="gem"), image_size=(32, 24))
    model = spec.build_model()
    assert type(model.pool).__name__.lower().startswith("gem")
    assert (float(model.normalize.mean), float(model.normalize.std)) == pytest.approx(spec.normalization)
    patch = RunSpec.patch(PatchConfig(model="test_resnet", patch_size=16), image_size=None).build_model()
    assert patch.embed(__import__("torch").rand(2, 1, 16, 16)).shape[0] == 2
    with pytest.raises(MammoInsightError, match="no network of its own"):
        RunSpec(kind="ensemble", backbone="a + b", folds=2, seed=0).build_model()


@pytest.mark.parametrize(
    ("name", "kind"), [("cnn", "cnn"), ("cnn_multi", "cnn"), ("patch", "patch"), ("ens", "ensemble")]
)
def test_a_folder_written_before_the_spec_is_upgraded_in_memory(name: str, kind: str) -> None:
    old = _legacy(name)
    assert "schema_version" not in old
    spec = RunSpec.from_dict(old)
    assert spec.kind == kind and spec.seed == 3 and spec.folds == 3 and spec.schema_version == SCHEMA_VERSION
    # a patch run recorded its thresholds in metrics.json only (runs read them there first)
    assert spec.thresholds.get("image") == pytest.approx(old.get("threshold"))
    if kind == "cnn":
        assert spec.recipe.epochs == 1 and spec.image_size == spec.input_size == (128, 96)
        assert spec.normalization == pytest.approx((old["input_mean"], old["input_std"]))
        assert spec.pool == ("gem" if name == "cnn_multi" else "avg") and spec.preprocess == old["preprocess"]
    if kind == "patch":
        from mammo_insight.nets.factory import input_normalization

        assert spec.input_size == (24, 24) and spec.image_size == (
            128,
            96,
        )  # its patch; the recorded cache size
        assert spec.normalization == pytest.approx(input_normalization("test_efficientnet"))
        assert (
            spec.recipe.patch_size == 24 and spec.recipe.epochs == 2 and spec.facts["stage"] == "patch-train"
        )
    if kind == "ensemble":
        assert len(spec.members) == 2 and spec.recipe is None
    # upgraded once and for all: the current layout reads back unchanged
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert upgrade(spec.to_dict()) == spec.to_dict()


@pytest.mark.parametrize("name", ["cnn", "patch"])
def test_an_old_run_folder_opens_and_loads_its_fold_models(tmp_path, name: str) -> None:
    """A folder of the previous layout opens as its kind; the network its spec rebuilds takes the fold's
    weights strictly (the state dict written by that version's network)."""
    from mammo_insight.runs.open import open_run
    from mammo_insight.runs.run_io import save_fold_model

    shutil.copy(LEGACY / name / "config.json", tmp_path / "config.json")
    spec = RunSpec.read(tmp_path)
    save_fold_model(tmp_path, 0, spec.build_model())
    run = open_run(tmp_path)
    assert run.spec.kind == name and run.folds == (0,)
    assert run.model(0).training is False


def test_a_newer_layout_or_one_without_a_model_stops_with_one_line(tmp_path) -> None:
    newer = {**_legacy("cnn"), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(MammoInsightError, match="newer than this mammo-insight reads"):
        RunSpec.from_dict(newer)
    with pytest.raises(MammoInsightError, match="names no 'model'"):
        RunSpec.from_dict({"folds": 3})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MammoInsightError, match="not valid JSON"):
        RunSpec.read(tmp_path)
