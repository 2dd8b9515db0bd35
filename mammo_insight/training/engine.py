"""The training engine every kind of run shares (train's whole-image folds, patch-train's patch folds).

``fit_fold`` trains one fold's ``ClassifierModule`` with Lightning's Trainer: the device policy
(``lightning_device``: nets.device.resolve_device, mixed precision on a GPU only), checkpoints written
atomically (``AtomicCheckpointIO``) to CKPT/last.ckpt every epoch and CKPT/best.ckpt on the monitored
metric, resume from the last good checkpoint after a kill, per-batch reseeding (``StepSeed``), early
stopping, unfreezing schedules and DDP. ``fit_folds`` runs the folds that are not done yet, so
rerunning an interrupted command finishes it. What a fold's data are and what it writes once trained
belong to the caller (training/loop.py for train, training/patches.py for patch-train).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write
from mammo_insight.nets.device import resolve_device
from mammo_insight.runs.config import TrainConfig
from mammo_insight.runs.run_io import TornCheckpointError, load_run_config, load_weights, save_torch
from mammo_insight.training.lightning_module import ClassifierModule, GroupUnfreeze, StepSeed, monitor_key
from mammo_insight.training.losses import build_loss
from mammo_insight.training.sampling import EpochSampler, pos_weight_value, worker_init

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
        if (
            trainer.is_global_zero
        ):  # a line per epoch: a long run shows it is alive in any log, not only a TTY
            log.info(
                "epoch %d/%d: train loss %.4f, val loss %.4f, val ROC-AUC %.3f, val pF1 %.3f",
                epoch + 1,
                trainer.max_epochs,
                m.get("train_loss", np.nan),
                m.get("val_loss", np.nan),
                m.get("val_auc", np.nan),
                m.get("val_pf1", np.nan),
            )
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
                    "lr": self._lr,
                }
            )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


def lightning_device(config: TrainConfig) -> tuple[str, str]:
    """(Lightning accelerator, precision) from ``--device`` (nets.device.resolve_device's policy):
    mixed precision only on a GPU, ``precision = "auto"`` is bf16 where the GPU has it."""
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


@contextmanager
def cpu_threads(config: TrainConfig) -> Iterator[None]:
    """torch's intra-op threads set to ``cpu_threads`` while the folds train, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.cpu_threads or threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


def check_resumable(out_dir: Path, values: dict[str, Any], defaults: TrainConfig) -> None:
    """Refuse to resume into a run directory made with other settings or another cache.

    ``defaults``: the config whose values fill in the options an older config.json predates.
    """
    if not (out_dir / "config.json").is_file():
        return
    old = _with_defaults(load_run_config(out_dir), defaults)
    skip = RUNTIME_OPTIONS | {"versions", "cache", "threshold", "thresholds"}
    # options a run made before them lacks are not compared; the external caches are, added or dropped too
    keys = {k for k in values if k in old} | {"external_caches", "external_positives_only"}
    differ = sorted(k for k in keys - skip if _norm(old.get(k)) != _norm(values.get(k)))
    if differ:
        raise MammoInsightError(
            f"{out_dir} holds a run with other settings ({', '.join(differ)} differ): "
            "use a new --out folder, or delete this one to start over"
        )


def _with_defaults(old: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """A config.json with the options it predates filled in at their defaults (what that run used)."""
    defaults = config.to_dict()
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


def make_loaders(
    train_ds: Dataset, val_ds: Dataset, hard_labels: np.ndarray, config: TrainConfig, *, accelerator: str
) -> tuple[DataLoader, DataLoader]:
    """Training loader (epoch-seeded sampler: imbalance plan + augmentation seeds) and validation loader.

    An image dataset's items are grouped by breast for the sampler, so the warm-up subset keeps a breast's
    views together (a breast dataset's items are breasts already). The last short batch is dropped when
    there are two full ones, or when it would hold one item (batch norm needs two).
    """
    common = {
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "pin_memory": accelerator == "gpu",
        "worker_init_fn": worker_init if config.num_workers else None,
        "persistent_workers": config.num_workers > 0,
    }
    n = len(train_ds)
    train_loader = DataLoader(
        train_ds,
        sampler=EpochSampler(hard_labels, config, groups=_breast_of_items(train_ds)),
        drop_last=n >= 2 * config.batch_size or n % config.batch_size == 1,
        **common,
    )
    return train_loader, DataLoader(val_ds, shuffle=False, **common)


def _breast_of_items(dataset: Any) -> np.ndarray | None:
    table = getattr(dataset, "table", None)
    return table["breast_id"].to_numpy() if table is not None and "breast_id" in table else None


def classifier_module(
    model: nn.Module, config: TrainConfig, hard_labels: np.ndarray, accelerator: str
) -> ClassifierModule:
    """A classifier in its LightningModule with the configured loss; channels_last on a GPU (single view)."""
    channels_last = accelerator == "gpu" and config.channels_last and config.view_mode == "single"
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
        atomic_write(path, lambda tmp: save_torch(checkpoint, tmp))


def make_trainer(
    config: TrainConfig, accelerator: str, precision: str, callbacks: list[pl.Callback], **overrides: Any
) -> pl.Trainer:
    """The Lightning Trainer of a fold: precision, devices, DDP strategy, determinism on the CPU; no logger
    (a run's record is its History, history.csv)."""
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


@dataclass(frozen=True)
class FoldFit:
    """A trained fold on rank 0: its model (the chosen epoch's weights, contiguous), history and device."""

    model: nn.Module
    history: pd.DataFrame
    device: torch.device


def _callbacks(config: TrainConfig, ckpt_dir: Path, seed: int) -> tuple[list[pl.Callback], Any, History]:
    mode = "min" if config.monitor == "loss" else "max"
    best = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=monitor_key(config.monitor), mode=mode, save_top_k=1
    )
    # Lightning's save_last writes last.ckpt only in epochs that improve the monitored metric; the epoch
    # a resume starts from and select_epoch = "last" need the final epoch, so a second callback keeps it.
    latest = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    history = History()
    callbacks: list[pl.Callback] = [history, best, latest, StepSeed(seed)]
    if config.early_stopping_patience > 0:
        callbacks.append(
            pl.callbacks.EarlyStopping(
                monitor_key(config.monitor), mode=mode, patience=config.early_stopping_patience
            )
        )
    if config.freeze_epochs > 0 or config.trainable_groups > 0 or config.unfreeze_stages > 1:
        callbacks.append(GroupUnfreeze(config))
    return callbacks, best, history


def fit_fold(
    module: ClassifierModule,
    loaders: tuple[DataLoader, DataLoader],
    config: TrainConfig,
    ckpt_dir: Path,
    *,
    seed: int,
    fold: int,
) -> FoldFit | None:
    """Train one fold (resuming from its checkpoints) and load the chosen epoch's weights (best on the
    monitored metric, or the last); None on a DDP rank other than 0."""
    accelerator, precision = lightning_device(config)
    callbacks, best, history = _callbacks(config, ckpt_dir, seed)
    trainer = make_trainer(config, accelerator, precision, callbacks)
    resume = resume_checkpoint(ckpt_dir)
    if resume is not None:
        log.info("fold %d: resuming from %s", fold, resume)
    trainer.fit(module, *loaders, ckpt_path=str(resume) if resume else None, weights_only=True)
    if not trainer.is_global_zero:
        return None
    chosen = best.best_model_path if config.select_epoch == "best" else ""
    module.load_state_dict(load_weights(chosen or str(ckpt_dir / "last.ckpt"))["state_dict"])
    model = module.model.to(memory_format=torch.contiguous_format)
    return FoldFit(model, pd.DataFrame(history.rows).assign(fold=fold), trainer.strategy.root_device)


def fit_folds(
    n_folds: int, done: Callable[[int], bool], train: Callable[[int], bool], ckpt_root: Path
) -> bool:
    """Train each fold that is not ``done`` with ``train`` (False on a DDP worker rank); returns whether
    this process is rank 0 (the one that goes on to write the run). Done folds delete their checkpoints;
    ``ckpt_root``, the folder that held them, goes once all are done."""
    rank_zero = True
    for fold in range(n_folds):
        if done(fold):
            log.info("fold %d: already done, skipped", fold)
        elif not train(fold):
            rank_zero = False
    if rank_zero and ckpt_root.is_dir() and not any(ckpt_root.iterdir()):
        ckpt_root.rmdir()
    return rank_zero
