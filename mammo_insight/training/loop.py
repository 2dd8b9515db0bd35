"""`train_folds`: k-fold training on a cache with PyTorch Lightning, writing each fold's folder.

Per fold, Lightning's Trainer owns the loop: checkpoint and resume (RUN/checkpoints/fold_<k>/last.ckpt),
early stopping, mixed precision, DDP. The best checkpoint on the monitored metric is exported
with ``run_io.save_fold_model`` and scores the fold's validation patients (out-of-fold predictions).
A fold whose predictions exist is skipped, and an unfinished fold resumes from its last checkpoint,
so rerunning an interrupted command finishes the run. A finished fold's Lightning checkpoints (weights
plus optimizer state, about three times the model) are deleted: folds/fold_<k>/model.pt is what stays.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from mammo_insight.cohort.folds import assign_folds, fold_split
from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write, write_csv_atomic
from mammo_insight.imaging.cache import CONFIG_FILE, INDEX_FILE
from mammo_insight.imaging.pipeline import PreprocessConfig
from mammo_insight.manifest import file_sha256, package_versions
from mammo_insight.nets.device import resolve_device
from mammo_insight.runs.config import TrainConfig, validate_config
from mammo_insight.runs.data import CacheBreastDataset, CacheImageDataset
from mammo_insight.runs.patch import check_patch_run, init_from_patch_run, patch_scale_mismatch
from mammo_insight.runs.predict import predict_cache
from mammo_insight.runs.run_io import TornCheckpointError, load_weights, save_fold_model, save_run_config
from mammo_insight.runs.spec import RunSpec
from mammo_insight.training.augment import build_augment
from mammo_insight.training.lightning_module import ClassifierModule, GroupUnfreeze, StepSeed, monitor_key
from mammo_insight.training.losses import build_loss
from mammo_insight.training.sampling import EpochSampler, pos_weight_value, soft_labels, worker_init
from mammo_insight.training.sources import SOURCE_COLUMN, external_name, load_sources

log = logging.getLogger(__name__)
# Options that may change between an interrupted run and its resume (they do not change the result).
RUNTIME_OPTIONS = {
    "device",
    "precision",
    "channels_last",
    "devices",
    "num_nodes",
    "strategy",
    "num_workers",
    "cpu_threads",
}


class History(pl.Callback):
    """Per-epoch loss, pF1, ROC-AUC, balanced accuracy and LR of both splits; saved inside checkpoints so resumes keep it."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._lr = float("nan")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]  # the epoch's LR, before the scheduler steps

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        epoch = trainer.current_epoch
        lr = self._lr
        self.rows = [r for r in self.rows if r["epoch"] != epoch]
        for split in ("train", "val"):
            self.rows.append(
                {
                    "epoch": epoch,
                    "split": split,
                    "loss": m.get(f"{split}_loss", np.nan),
                    "pf1": m.get(f"{split}_pf1", np.nan),
                    "roc_auc": m.get(f"{split}_auc", np.nan),
                    "balanced_accuracy": m.get(f"{split}_balanced_accuracy", np.nan),
                    "lr": lr,
                }
            )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


def lightning_device(config: TrainConfig) -> tuple[str, str]:
    """(Lightning accelerator, precision) from ``--device`` (nets.device.resolve_device's policy):
    mixed precision only on a GPU."""
    accelerator = "gpu" if resolve_device(config.device).type == "cuda" else "cpu"
    if accelerator == "cpu":
        if config.precision not in {"auto", "32-true", "32"}:
            log.warning("precision %s needs a GPU; training in 32-bit on the CPU", config.precision)
        return accelerator, "32-true"
    if config.precision == "auto":
        return accelerator, "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return accelerator, config.precision


def _trainer_devices(config: TrainConfig, accelerator: str) -> int | str | list[int]:
    """Lightning's ``devices``: the one GPU of ``--device cuda:N``, else the ``devices`` option."""
    if accelerator == "gpu" and config.devices == "auto" and ":" in config.device:
        return [int(resolve_device(config.device).index or 0)]
    return config.devices


def resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint a fold resumes from: last.ckpt, or when it is torn (set aside as *.torn, with a
    warning) the best one, or None (start over). A refused (unsafe) file stops the run instead."""
    for name in ("last.ckpt", "best.ckpt"):
        path = ckpt_dir / name
        if not path.is_file():
            continue
        try:
            load_weights(path)
        except TornCheckpointError as exc:
            aside = path.with_name(path.name + ".torn")
            path.replace(aside)
            log.warning("%s; set aside as %s, training goes on from the previous good state", exc, aside.name)
            continue
        return path
    return None


def resolved_config(config: TrainConfig, cache_dir: Path, table: pd.DataFrame) -> dict[str, Any]:
    """config.json: the run's spec (every option plus the image size, normalisation, cache copy) and what
    the run depends on (cache hash, versions, counts)."""
    cache_config = cache_dir / CONFIG_FILE
    preprocess = json.loads(cache_config.read_text()) if cache_config.is_file() else None
    size = config.image_size
    if size is None:  # the cache's config.json says how it was made; the index only for old caches
        size = (
            PreprocessConfig.from_dict(preprocess).size
            if preprocess
            else (int(table["out_height"].iloc[0]), int(table["out_width"].iloc[0]))
        )
    facts = {
        "cache_index_sha256": file_sha256(cache_dir / INDEX_FILE),
        "versions": package_versions(),
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
    }
    # the cache's config.json copied verbatim, so predict can preprocess new images the same way once the
    # cache is gone
    spec = RunSpec.cnn(config, image_size=size, preprocess=preprocess, cache=str(cache_dir), facts=facts)
    return spec.to_dict()


def _check_resumable(out_dir: Path, values: dict[str, Any]) -> None:
    """Refuse to resume into a run directory made with other settings or another cache."""
    from mammo_insight.runs.run_io import load_run_config

    if not (out_dir / "config.json").is_file():
        return
    old = _with_defaults(load_run_config(out_dir))
    skip = RUNTIME_OPTIONS | {"versions", "cache", "threshold", "thresholds"}
    # options a run made before them lacks are not compared; the external caches are, added or dropped too
    keys = {k for k in values if k in old} | {"external_caches", "external_positives_only"}
    differ = sorted(k for k in keys - skip if _norm(old.get(k)) != _norm(values.get(k)))
    if differ:
        raise MammoInsightError(
            f"{out_dir} holds a run with other settings ({', '.join(differ)} differ): "
            "use a new --out folder, or delete this one to start over"
        )


def _with_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """A config.json with the options it predates filled in at their defaults (what that run used),
    so a run made before an option existed still resumes."""
    defaults = TrainConfig().to_dict()
    merged = {**defaults, **old}
    if isinstance(old.get("augment"), dict):
        merged["augment"] = {**defaults["augment"], **old["augment"]}
    return merged


def _norm(value: Any) -> Any:
    return (
        [_norm(v) for v in value]
        if isinstance(value, (list, tuple))
        else ({k: _norm(v) for k, v in value.items()} if isinstance(value, dict) else value)
    )


def _datasets(
    cache_dir: Path, train: pd.DataFrame, val: pd.DataFrame, config: TrainConfig, *, size: tuple[int, int]
) -> tuple[Any, Any]:
    augment = build_augment(config.augment)
    if config.view_mode == "single":
        train_ds = CacheImageDataset(cache_dir, train, augment, config.label_column, size=size)
        val_ds = CacheImageDataset(cache_dir, val, None, config.label_column, size=size)
    else:
        train_ds = CacheBreastDataset(
            cache_dir, train, augment, config.label_column, max_views=config.max_views, size=size
        )
        val_ds = CacheBreastDataset(
            cache_dir, val, None, config.label_column, max_views=config.max_views, size=size
        )
    return train_ds, val_ds


def _breast_of_items(dataset: Any) -> np.ndarray | None:
    table = getattr(dataset, "table", None)
    return table["breast_id"].to_numpy() if table is not None and "breast_id" in table else None


def make_loaders(
    train_ds: Any, val_ds: Any, hard_labels: np.ndarray, config: TrainConfig, *, accelerator: str
) -> tuple[DataLoader, DataLoader]:
    """Training loader (epoch-seeded sampler: imbalance plan + augmentation seeds) and validation loader.

    An image dataset's items are grouped by breast for the sampler, so the warm-up subset keeps a breast's
    views together (a breast dataset's items are breasts already).
    """
    common = {
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "pin_memory": accelerator == "gpu",
        "worker_init_fn": worker_init if config.num_workers else None,
        "persistent_workers": config.num_workers > 0,
    }
    train_loader = DataLoader(
        train_ds,
        sampler=EpochSampler(hard_labels, config, groups=_breast_of_items(train_ds)),
        drop_last=len(train_ds) >= 2 * config.batch_size,
        **common,
    )
    return train_loader, DataLoader(val_ds, shuffle=False, **common)


def make_module(
    config: TrainConfig, size: tuple[int, int], hard_labels: np.ndarray, accelerator: str
) -> ClassifierModule:
    """The classifier in its LightningModule; channels_last on a GPU for single-view models."""
    channels_last = accelerator == "gpu" and config.channels_last and config.view_mode == "single"
    model = RunSpec.cnn(config, image_size=size).build_model(initial=True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss = build_loss(
        config.loss, pos_weight_value(hard_labels, config.pos_weight), config.focal_gamma, config.focal_alpha
    )
    return ClassifierModule(model, config, loss, use_channels_last=channels_last)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through files.atomic_write: a temporary file beside the checkpoint,
    then a rename. Lightning's own writer moves a file from the system temp folder (a copy when that is
    another disk), so a kill or a full disk there could leave a torn last.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def make_trainer(
    config: TrainConfig, accelerator: str, precision: str, callbacks: list[pl.Callback], **overrides: Any
) -> pl.Trainer:
    """The Lightning Trainer of a fold: precision, devices, DDP strategy, determinism on the CPU."""
    options = {
        "max_epochs": config.epochs,
        "accelerator": accelerator,
        "devices": _trainer_devices(config, accelerator),
        "num_nodes": config.num_nodes,
        "strategy": config.strategy,
        "precision": precision,
        "callbacks": callbacks,
        "logger": False,
        "num_sanity_val_steps": 0,
        "deterministic": "warn" if accelerator == "cpu" else False,
        "reload_dataloaders_every_n_epochs": 1 if config.warmup_epochs else 0,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "plugins": [AtomicCheckpointIO()],
        **overrides,
    }
    return pl.Trainer(**options)


def train_fold(
    cache_dir: Path,
    out_dir: Path,
    table: pd.DataFrame,
    folds: pd.Series,
    *,
    fold: int,
    config: TrainConfig,
    size: tuple[int, int],
) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """Train one fold (resuming from its last checkpoint), export its best model, score its validation rows.

    Returns (image rows, breast rows or None), or None on a DDP rank other than 0.
    """
    train_idx, val_idx = fold_split(table, folds, fold)
    train, val = table.loc[train_idx], table.loc[val_idx]
    log.info("fold %d: %d training and %d validation images", fold, len(train), len(val))
    pl.seed_everything(config.seed + fold, workers=True, verbose=False)
    accelerator, precision = lightning_device(config)

    train_ds, val_ds = _datasets(cache_dir, train, val, config, size=size)
    hard = train_ds.labels.copy()
    train_ds.labels = soft_labels(hard, config.positive_label)
    train_loader, val_loader = make_loaders(train_ds, val_ds, hard, config, accelerator=accelerator)
    module = make_module(config, size, hard, accelerator)
    if config.init_patch_run:
        init_from_patch_run(module.model, Path(config.init_patch_run), fold)

    ckpt_dir = out_dir / "checkpoints" / f"fold_{fold}"
    mode = "min" if config.monitor == "loss" else "max"
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor_key(config.monitor),
        mode=mode,
        save_top_k=1,
    )
    # Lightning's save_last writes last.ckpt only in epochs that improve the monitored metric; the epoch
    # a resume starts from and select_epoch = "last" need the final epoch, so a second callback keeps it.
    latest = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    history = History()
    callbacks: list[pl.Callback] = [history, checkpoint, latest, StepSeed(config.seed + fold)]
    if config.early_stopping_patience > 0:
        callbacks.append(
            pl.callbacks.EarlyStopping(
                monitor_key(config.monitor), mode=mode, patience=config.early_stopping_patience
            )
        )
    if config.freeze_epochs > 0 or config.trainable_groups > 0 or config.unfreeze_stages > 1:
        callbacks.append(GroupUnfreeze(config))
    trainer = make_trainer(config, accelerator, precision, callbacks)
    resume = resume_checkpoint(ckpt_dir)
    if resume is not None:
        log.info("fold %d: resuming from %s", fold, resume)
    trainer.fit(
        module, train_loader, val_loader, ckpt_path=str(resume) if resume else None, weights_only=True
    )
    if not trainer.is_global_zero:
        return None

    chosen = checkpoint.best_model_path if config.select_epoch == "best" else ""
    state = load_weights(chosen or str(ckpt_dir / "last.ckpt"))["state_dict"]
    module.load_state_dict(state)
    model = module.model.to(memory_format=torch.contiguous_format)
    save_fold_model(out_dir, fold, model)
    device = trainer.strategy.root_device
    images, breasts = predict_cache(
        model.to(device),
        cache_dir,
        val,
        config.view_mode,
        image_size=size,
        batch_size=config.batch_size,
        max_views=config.max_views,
        device=device,
        label_column=config.label_column,
    )
    fold_dir = out_dir / "folds" / f"fold_{fold}"
    hist = pd.DataFrame(history.rows).assign(fold=fold)
    write_csv_atomic(fold_dir / "history.csv", hist)
    for frame in (images, breasts):
        if frame is not None:
            frame.insert(frame.columns.get_loc("patient_id") + 1, "fold", fold)
    if breasts is not None:
        write_csv_atomic(fold_dir / "oof_breast.csv", breasts)
    write_csv_atomic(fold_dir / "oof.csv", images)  # written last: its presence marks the fold done
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # a done fold is never resumed
    return images, breasts


def _remove_if_empty(folder: Path) -> None:
    """Finished folds delete their checkpoints; the folder that held them goes once all are done."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _read_fold(fold_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    ids = {"image_id": str, "breast_id": str, "patient_id": str}
    images = pd.read_csv(fold_dir / "oof.csv", dtype=ids)
    breast_path = fold_dir / "oof_breast.csv"
    return images, pd.read_csv(breast_path, dtype=ids) if breast_path.is_file() else None


@dataclass(frozen=True)
class FoldOutputs:
    """What the folds left: each fold's out-of-fold rows and history, the table and folds they came from."""

    table: pd.DataFrame
    folds: pd.Series
    values: dict[str, Any]
    images: list[pd.DataFrame]
    breasts: list[pd.DataFrame | None]
    history: list[pd.DataFrame]


def train_folds(
    cache_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    external_caches: Sequence[str | Path] = (),
    external_positives_only: bool = False,
) -> FoldOutputs | None:
    """Train every fold (resuming what an interrupted run left, skipping finished folds).

    `external_caches`: more caches whose rows only train (see `load_sources`). Returns None on a DDP rank
    other than 0: it trains every fold with rank 0, which writes the files.
    """
    config = config or TrainConfig()
    validate_config(config)
    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.cpu_threads or threads)
    try:
        external = [Path(p) for p in external_caches]
        table = load_sources(cache_dir, external, config.label_column, positives_only=external_positives_only)
        values = resolved_config(config, cache_dir, table)
        if external:
            values["external_positives_only"] = external_positives_only
            values["external_caches"] = [
                {
                    "name": external_name(k),
                    "cache": str(path),
                    "cache_index_sha256": file_sha256(path / INDEX_FILE),
                    "n_images": int((table[SOURCE_COLUMN] == external_name(k)).sum()),
                }
                for k, path in enumerate(external, start=1)
            ]
        return _train_folds(cache_dir, out_dir, config, table, values)
    finally:
        torch.set_num_threads(threads)


def _train_folds(
    cache_dir: Path, out_dir: Path, config: TrainConfig, table: pd.DataFrame, values: dict[str, Any]
) -> FoldOutputs | None:
    size = tuple(values["image_size"])
    _check_resumable(out_dir, values)
    if config.init_patch_run:
        check_patch_run(
            Path(config.init_patch_run),
            model_name=config.model,
            normalize=config.normalize,
            folds=config.folds,
            seed=config.seed,
            label=config.label_column,
        )
        scale = patch_scale_mismatch(Path(config.init_patch_run), cache_dir)
        if scale:
            log.warning("%s; fine-tuning starts from features learnt at another scale", scale)
    save_run_config(out_dir, values)
    folds = assign_folds(table, config.folds, config.seed, config.label_column)

    images, breasts, history = [], [], []
    rank_zero = True
    for fold in range(config.folds):
        fold_dir = out_dir / "folds" / f"fold_{fold}"
        if (fold_dir / "oof.csv").is_file() and (fold_dir / "model.pt").is_file():
            log.info("fold %d: already done, skipped", fold)
        elif train_fold(cache_dir, out_dir, table, folds, fold=fold, config=config, size=size) is None:
            rank_zero = False
            continue
        image_rows, breast_rows = _read_fold(fold_dir)
        images.append(image_rows)
        breasts.append(breast_rows)
        history.append(pd.read_csv(fold_dir / "history.csv"))
    if not rank_zero:
        return None
    _remove_if_empty(out_dir / "checkpoints")
    return FoldOutputs(table, folds, values, images, breasts, history)
