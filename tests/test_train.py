"""Training building blocks: patient-grouped folds, train-only rows, samplers, losses, augmentation, config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_insight.cohort.folds import assign_folds, fold_split
from mammo_insight.errors import MammoInsightError
from mammo_insight.runs.config import AugmentConfig, TrainConfig, load_config
from mammo_insight.runs.data import CacheBreastDataset, CacheImageDataset
from mammo_insight.training.augment import GridPatchDrop, build_augment
from mammo_insight.training.engine import make_loaders
from mammo_insight.training.losses import FocalLoss, build_loss
from mammo_insight.training.sampling import (
    EpochSampler,
    balanced_indices,
    balanced_subset,
    epoch_plan,
    pos_weight_value,
    resampled_indices,
    soft_labels,
)


def _table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        positive = rng.random() < 0.2
        for k in range(int(rng.integers(1, 6))):  # 1-5 images per woman
            rows.append(
                {"patient_id": f"P{p}", "image_id": f"P{p}_{k}", "cancer": float(positive and k == 0)}
            )
    return pd.DataFrame(rows)


def test_no_patient_in_two_folds_and_every_fold_has_positives():
    table = _table()
    folds = assign_folds(table, 5, seed=3)
    assert folds.between(0, 4).all()
    assert (table.assign(fold=folds).groupby("patient_id")["fold"].nunique() == 1).all()
    positives = table.assign(fold=folds).groupby("fold")["cancer"].sum()
    assert len(positives) == 5 and (positives > 0).all()
    for k in range(5):
        train, val = fold_split(table, folds, k)
        assert not set(table.loc[train, "patient_id"]) & set(table.loc[val, "patient_id"])
    assert assign_folds(table, 5, seed=3).equals(folds)  # seeded
    assert not assign_folds(table, 5, seed=4).equals(folds)


def test_augmented_and_external_rows_never_validate_and_never_leak():
    table = _table()
    source = table[table["cancer"] == 1].head(6)
    augmented = source.assign(image_id=source["image_id"] + "_aug", is_augmented=True)
    external = pd.DataFrame(
        {
            "patient_id": ["EXT1", "EXT1", "EXT2"],
            "image_id": ["E1", "E2", "E3"],
            "cancer": [1.0, 1.0, 0.0],
            "external_only": [True, True, True],
        }
    )
    full = pd.concat([table, augmented, external], ignore_index=True)
    full["is_augmented"] = full["is_augmented"].astype("boolean")
    folds = assign_folds(full, 4, seed=0)
    train_only = full["image_id"].str.endswith("_aug") | full["image_id"].str.startswith("E")
    assert (folds[full["patient_id"].str.startswith("EXT")] == -1).all()
    for k in range(4):
        train, val = fold_split(full, folds, k)
        assert not train_only[val].any(), "an augmented or external row entered validation"
        val_patients = set(full.loc[val, "patient_id"])
        leaked = full.loc[train][full.loc[train, "patient_id"].isin(val_patients)]
        assert leaked.empty, "an augmented copy of a validation patient's image was trained on"
        assert {"E1", "E2", "E3"} <= set(full.loc[train, "image_id"])  # external rows train in every fold


def test_too_few_patients_for_folds_is_a_clear_error():
    with pytest.raises(MammoInsightError, match="too few"):
        assign_folds(_table(3), 5, seed=0)


def test_balanced_sampler_hits_the_target_ratio_and_is_seeded():
    labels = np.array([1.0] * 20 + [0.0] * 980)
    picked = balanced_indices(labels, 0.25, np.random.default_rng(0))
    assert len(picked) == 1000 and abs(labels[picked].mean() - 0.25) < 0.01
    config = TrainConfig(sampler="balanced", target_pos_ratio=0.4, seed=7)
    assert np.array_equal(epoch_plan(labels, config, 2), epoch_plan(labels, config, 2))
    assert not np.array_equal(epoch_plan(labels, config, 2), epoch_plan(labels, config, 3))


def test_undersampling_oversampling_and_warmup_subset():
    labels = np.array([1.0] * 10 + [0.0] * 90)
    rng = np.random.default_rng(0)
    picked = resampled_indices(labels, 0.5, 3, rng)
    assert (labels[picked] == 1).sum() == 30 and (labels[picked] == 0).sum() == 45
    assert len(set(picked[labels[picked] == 0])) == 45  # negatives without replacement
    subset = balanced_subset(labels, 0.5, rng)
    assert (labels[subset] == 1).sum() == 10 and (labels[subset] == 0).sum() == 10
    config = TrainConfig(warmup_epochs=1, seed=0)
    assert len(epoch_plan(labels, config, 0)) == 20 and len(epoch_plan(labels, config, 1)) == 100


def test_warmup_subset_keeps_breasts_whole():
    """Single-view warm-up draws breasts, not images: each breast's views are all in the subset or all out,
    and the positive share is counted in breasts."""
    rng = np.random.default_rng(0)
    n_breasts = 200
    views = rng.integers(1, 5, n_breasts)  # 1 to 4 images per breast
    breast = np.repeat(np.arange(n_breasts), views)
    positive_breast = rng.random(n_breasts) < 0.1
    labels = (positive_breast[breast] & (rng.random(len(breast)) < 0.7)).astype(float)  # not every view
    positive_breast = np.bincount(breast, weights=labels, minlength=n_breasts) > 0
    groups = np.array([f"b{b}" for b in breast])
    config = TrainConfig(warmup_epochs=2, warmup_pos_ratio=0.5, seed=3)
    for epoch in (0, 1):
        subset = epoch_plan(labels, config, epoch, groups)
        assert len(set(subset)) == len(subset)
        picked = np.zeros(len(breast), dtype=bool)
        picked[subset] = True
        per_breast = np.bincount(breast, weights=picked, minlength=n_breasts)
        assert np.array_equal(per_breast[per_breast > 0], views[per_breast > 0])  # whole breasts
        chosen = per_breast > 0
        assert chosen[positive_breast].all() and chosen.sum() == 2 * positive_breast.sum()
    per_image = epoch_plan(labels, config, 0)  # without groups images are drawn one by one
    split = np.bincount(breast[per_image], minlength=n_breasts)
    assert ((split > 0) & (split < views)).any()
    sampler = EpochSampler(labels, config, groups=groups)
    assert sorted(i for i, _ in sampler) == sorted(epoch_plan(labels, config, 0, groups).tolist())


def test_training_loader_groups_images_by_breast(tmp_path):
    """The single-view training loader hands the sampler each image's breast; a breast dataset needs none."""
    table = pd.DataFrame(
        {
            "cache_path": ["a.png", "b.png", "c.png"],
            "breast_id": ["p1_L", "p1_L", "p2_R"],
            "cancer": [1, 0, 0],
        }
    )
    images = CacheImageDataset(tmp_path, table)
    loader, _ = make_loaders(images, images, images.labels, TrainConfig(warmup_epochs=1), accelerator="cpu")
    assert loader.sampler.groups.tolist() == ["p1_L", "p1_L", "p2_R"]
    breasts = CacheBreastDataset(
        tmp_path, table.assign(patient_id=["p1", "p1", "p2"], image_id=["1", "2", "3"], view="CC")
    )
    loader, _ = make_loaders(
        breasts, breasts, breasts.labels, TrainConfig(warmup_epochs=1), accelerator="cpu"
    )
    assert loader.sampler.groups is None and len(breasts) == 2


def test_epoch_sampler_yields_index_and_seed_per_epoch():
    sampler = EpochSampler(np.array([1.0, 0.0, 0.0, 1.0]), TrainConfig(seed=1))
    first = list(sampler)
    assert sorted(i for i, _ in first) == [0, 1, 2, 3]
    seeds = [seed for _, seed in first]
    assert all(isinstance(seed, int) and 0 <= seed < 2**31 for seed in seeds) and len(set(seeds)) == 4
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert not {seed for _, seed in sampler} & set(seeds)  # each epoch augments with fresh seeds
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_soft_labels_and_pos_weight():
    labels = np.array([1.0, 0.0, 0.0, 0.0])
    assert soft_labels(labels, 0.9).tolist() == pytest.approx([0.9, 0, 0, 0])
    assert pos_weight_value(labels, "auto") == 3.0
    assert pos_weight_value(labels, 2.5) == 2.5 and pos_weight_value(labels, None) is None


def test_focal_loss_matches_the_formula_and_bce_uses_pos_weight():
    logits, targets = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    pt = torch.where(targets == 1, p, 1 - p)
    alpha = torch.where(targets == 1, 0.25, 0.75)
    expected = (-alpha * (1 - pt) ** 2 * torch.log(pt)).mean()
    assert FocalLoss(2.0, 0.25)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    weighted = build_loss("bce", pos_weight=4.0)(logits, targets)
    plain = build_loss("bce")(logits, targets)
    positive, negative = -torch.log(p), -torch.log(1 - p)
    assert plain.item() == pytest.approx(
        torch.where(targets == 1, positive, negative).mean().item(), rel=1e-5
    )
    assert weighted.item() == pytest.approx(
        torch.where(targets == 1, 4.0 * positive, negative).mean().item(), rel=1e-5
    )


def test_augmentations_keep_shape_and_range_and_erase_a_patch():
    torch.manual_seed(0)
    image = torch.full((1, 64, 48), 0.5)
    out = build_augment(
        AugmentConfig(
            hflip=0.5, vflip=0.5, rotate_degrees=0, brightness=0.2, contrast=0.2, noise_std=0.05, erase_p=1.0
        )
    )(image)
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
    erased = build_augment(AugmentConfig(hflip=0, rotate_degrees=0, brightness=0, contrast=0, erase_p=1.0))(
        image
    )
    assert 0 < (erased == 0).float().mean() < 0.2
    off = AugmentConfig(hflip=0, rotate_degrees=0, brightness=0, contrast=0)
    assert build_augment(off) is None


def test_grid_patch_drop_blanks_whole_cells_at_the_asked_rate():
    """Each 16x16 cell of the grid is blanked or kept whole, and the blanked share is the drop rate."""
    torch.manual_seed(0)
    image = torch.full((1, 512, 496), 0.5)  # 32 x 31 cells
    quiet = {"hflip": 0, "rotate_degrees": 0, "brightness": 0, "contrast": 0}
    for rate in (0.1, 0.5):
        out = build_augment(AugmentConfig(**quiet, patch_drop_rate=rate, patch_size=16))(image)
        cells = (out[0] == 0).float().unfold(0, 16, 16).unfold(1, 16, 16).mean(dim=(-1, -2))
        assert set(cells.unique().tolist()) <= {0.0, 1.0}  # cells dropped whole
        assert cells.mean().item() == pytest.approx(rate, abs=0.04)
    edge = GridPatchDrop(patch_size=10, rate=1.0)(torch.ones(1, 25, 13))  # edge cells cut short
    assert edge.shape == (1, 25, 13) and (edge == 0).all()
    assert torch.equal(GridPatchDrop(patch_size=32, rate=0.0)(image), image)


def test_zoom_and_shift_move_the_image():
    """A bright square moves with shift and changes size with zoom; both off leaves it alone."""
    image = torch.zeros(1, 64, 64)
    image[:, 24:40, 24:40] = 1.0
    quiet = {"hflip": 0, "rotate_degrees": 0, "brightness": 0, "contrast": 0}
    assert build_augment(AugmentConfig(**quiet)) is None
    areas, centres = [], []
    for seed in range(20):
        torch.manual_seed(seed)
        zoomed = build_augment(AugmentConfig(**quiet, zoom=0.3))(image)
        areas.append(float((zoomed > 0.5).sum()))
        torch.manual_seed(seed)
        shifted = build_augment(AugmentConfig(**quiet, shift=0.2))(image)
        ys, xs = torch.nonzero(shifted[0] > 0.5, as_tuple=True)
        centres.append((float(ys.float().mean()), float(xs.float().mean())))
    assert min(areas) < 0.85 * 256 and max(areas) > 1.15 * 256  # 16x16 square, zoom in [0.7, 1.3]
    assert all(abs(a - 256) < 256 * 0.75 for a in areas)
    offsets = np.abs(np.array(centres) - 31.5)
    assert offsets.max() > 3 and offsets.max() <= 0.2 * 64 + 1  # moved, by at most 20% of the side


def test_config_toml_then_flags(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('model = "resnet10t"\nepochs = 7\nloss = "focal"\n[augment]\nerase_p = 0.3\n')
    config = load_config(path, epochs=2, seed=None)
    assert (config.model, config.epochs, config.loss, config.augment.erase_p) == (
        "resnet10t",
        2,
        "focal",
        0.3,
    )
    path.write_text("lerning_rate = 1\n")
    with pytest.raises(MammoInsightError, match="lerning_rate"):
        load_config(path)
    with pytest.raises(MammoInsightError, match="view_mode"):
        load_config(None, view_mode="triple")


def test_checkpoints_are_written_atomically_so_a_failed_save_keeps_the_last_good_one(tmp_path, monkeypatch):
    """Every fold's Trainer writes through AtomicCheckpointIO: a save that dies half-way (kill, full
    disk) leaves the previous last.ckpt whole and no stray temporary file."""
    from mammo_insight.training import engine as training

    trainer = training.make_trainer(TrainConfig(epochs=1), "cpu", "32-true", [])
    io = trainer.strategy.checkpoint_io
    assert isinstance(io, training.AtomicCheckpointIO)
    last = tmp_path / "fold_0" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, last)

    def dies_half_way(obj, f, *args, **kwargs):  # f: the buffer run_io.save_torch serialises into
        f.write(b"PK\x03\x04 torn")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, last)
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]


def test_config_takes_the_study_recipes_and_refuses_out_of_range_values(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(
        'model = "small_cnn"\nmonitor = "balanced_accuracy"\nthreshold_method = "sensitivity"\n'
        "target_sensitivity = 0.85\n[augment]\nzoom = 0.1\nshift = 0.05\npatch_drop_rate = 0.2\npatch_size = 32\n"
    )
    config = load_config(path)
    assert (config.monitor, config.threshold_method, config.target_sensitivity) == (
        "balanced_accuracy",
        "sensitivity",
        0.85,
    )
    assert (config.augment.zoom, config.augment.shift, config.augment.patch_drop_rate) == (0.1, 0.05, 0.2)
    assert config.augment.patch_size == 32
    for bad, name in (
        ({"target_sensitivity": 1.5}, "target_sensitivity=1.5"),
        ({"threshold_method": "youden"}, "threshold_method='youden'"),
        ({"augment": {"patch_drop_rate": 2.0}}, "augment.patch_drop_rate=2.0"),
        ({"augment": {"zoom": 1.0}}, "augment.zoom=1.0"),
    ):
        with pytest.raises(MammoInsightError, match=name):
            load_config(None, **bad)


def test_a_run_made_before_an_option_existed_still_resumes(tmp_path):
    """config.json without the newer keys reads them at their defaults: same settings resume, others refuse."""
    from mammo_insight.runs.run_io import save_run_config
    from mammo_insight.training.engine import check_resumable

    old = TrainConfig().to_dict()
    del old["target_sensitivity"], old["augment"]["zoom"], old["augment"]["patch_drop_rate"]
    save_run_config(tmp_path, old)
    check_resumable(tmp_path, TrainConfig().to_dict(), TrainConfig())
    with pytest.raises(MammoInsightError, match="augment differ"):
        check_resumable(tmp_path, TrainConfig(augment=AugmentConfig(zoom=0.1)).to_dict(), TrainConfig())
