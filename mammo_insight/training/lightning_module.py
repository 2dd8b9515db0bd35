"""The LightningModule around a classifier: loss, AdamW, LR schedule, per-epoch pF1/AUC/loss.

Lightning owns the loop (checkpoint/resume, precision, DDP, early stopping); this module only
says how one batch is scored and which metric the run selects checkpoints on.
"""

from __future__ import annotations

import logging
import random

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from mammo_insight.metrics import pf1, point_metrics, roc_auc
from mammo_insight.nets.unfreeze import (
    apply_schedule,
    backbone_groups,
    keep_frozen_bn_stats,
    lr_multipliers,
)
from mammo_insight.runs.config import TrainConfig

log = logging.getLogger(__name__)
# The epoch's balanced accuracy (monitor = "balanced_accuracy") cuts at 0.5: a fixed point, so epochs compare;
# a model trained at the real prevalence rarely crosses it (pair it with pos_weight or a balanced sampler).
BALANCED_ACCURACY_CUT = 0.5


class ClassifierModule(pl.LightningModule):
    """Wraps a Single- or MultiViewClassifier; a batch is the dict the cache datasets yield."""

    def __init__(
        self, model: nn.Module, config: TrainConfig, loss: nn.Module, use_channels_last: bool = False
    ):
        super().__init__()
        self.model = model
        self.config = config
        self.loss_fn = loss
        self.use_channels_last = use_channels_last
        # (probs, labels, summed loss or None) per batch, scored over the whole epoch
        self._outputs: dict[str, list[tuple]] = {"train": [], "val": []}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image = batch["image"]
        if self.use_channels_last and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        if "mask" in batch:
            return self.model(image, batch["mask"])
        return self.model(image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self.loss_fn(logits.float(), batch["label"].float())
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        self._outputs["train"].append(
            (
                torch.sigmoid(logits.detach().float()),
                (batch["label"] > 0.5).float(),
                loss.detach() * len(logits),
            )
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch).float()
        labels = (batch["label"] > 0.5).float()
        self.log(
            "val_loss",
            nn.functional.binary_cross_entropy_with_logits(logits, labels),
            on_epoch=True,
            batch_size=len(logits),
            sync_dist=True,
        )
        self._outputs["val"].append((torch.sigmoid(logits).detach(), labels, None))

    def _log_scores(self, split: str) -> None:
        """pF1 and ROC-AUC over the whole epoch (gathered across DDP ranks); NaN-free for the loggers."""
        outputs = self._outputs[split]
        if not outputs:
            return
        probs = self.all_gather(torch.cat([o[0] for o in outputs])).flatten().cpu().numpy()
        labels = self.all_gather(torch.cat([o[1] for o in outputs])).flatten().cpu().numpy()
        if outputs[0][2] is not None:
            total = self.all_gather(torch.stack([o[2] for o in outputs]).sum()).sum()
            self.log(f"{split}_loss", float(total) / len(probs))
        outputs.clear()
        auc = roc_auc(labels, probs)
        balanced = point_metrics(labels, probs, BALANCED_ACCURACY_CUT)["balanced_accuracy"]
        self.log(f"{split}_pf1", float(np.nan_to_num(pf1(labels, probs))), prog_bar=split == "val")
        self.log(f"{split}_auc", float(auc) if np.isfinite(auc) else 0.5, prog_bar=split == "val")
        self.log(f"{split}_balanced_accuracy", float(np.nan_to_num(balanced, nan=0.5)))

    def on_validation_epoch_end(self) -> None:
        # Validation runs after the epoch's last training batch, so both splits are scored here and
        # are in callback_metrics before the checkpoint of this epoch is written.
        if not self.trainer.sanity_checking:
            self._log_scores("train")
            self._log_scores("val")
        self._outputs["val"].clear()

    def param_groups(self) -> list[dict]:
        """One optimizer group per backbone group (its LR factor from nets/unfreeze.py), then the rest."""
        groups = backbone_groups(self.model.backbone, self.config.group_level)
        factors = lr_multipliers(len(groups), self.config)
        in_backbone = {id(p) for g in groups for p in g}
        rest = [p for p in self.model.parameters() if id(p) not in in_backbone]
        out = [{"params": g, "lr": self.config.lr * f} for g, f in zip(groups, factors, strict=True)]
        return [*out, {"params": rest, "lr": self.config.lr}]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.param_groups(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        if self.config.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(self.config.epochs, 1)
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        if self.config.schedule == "plateau":
            mode = "min" if self.config.monitor == "loss" else "max"
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=0.5, patience=1
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {
                    "scheduler": scheduler,
                    "monitor": monitor_key(self.config.monitor),
                    "interval": "epoch",
                },
            }
        return optimizer


def monitor_key(monitor: str) -> str:
    return f"val_{monitor}"


class GroupUnfreeze(pl.Callback):
    """Sets which backbone groups train at the start of each epoch (nets/unfreeze.py).

    Stateless (a function of the epoch), so it survives a resume.
    """

    def __init__(self, config: TrainConfig):
        self.config = config

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        groups = backbone_groups(pl_module.model.backbone, self.config.group_level)
        apply_schedule(groups, trainer.current_epoch, self.config)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        # per batch: Lightning puts the whole model back in train mode after every validation run
        if self.config.frozen_bn == "keep":
            keep_frozen_bn_stats(pl_module.model.backbone)


class StepSeed(pl.Callback):
    """Reseed python, numpy and torch (every CUDA device too) before each training batch from
    (seed, epoch, batch).

    Dropout and anything else drawing on the global generators then depend only on where training is,
    not on what ran before (a resumed run builds its data loader iterator, which draws from torch's
    generator, at another moment than an uninterrupted one), so a run resumed from an epoch-end
    checkpoint after a kill -9 draws exactly what the uninterrupted run drew. The sampler and the
    augmentation are seeded per epoch and per item already (training.sampling.EpochSampler).
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        state = np.random.SeedSequence([self.seed, trainer.current_epoch, batch_idx]).generate_state(3)
        random.seed(int(state[0]))
        np.random.seed(int(state[1]))
        # torch.manual_seed on a process without CUDA queues a lazy CUDA seeding with a recorded stack
        # trace on every call (milliseconds per batch, a queue that only grows): seed CUDA when it is up
        torch.default_generator.manual_seed(int(state[2]))
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(int(state[2]))
