"""Imbalance remedies on the sample level: which items an epoch sees, and with which label.

All plans are drawn from a generator seeded by (seed, epoch), so an epoch's sample is the same
after a resume. ``EpochSampler`` also hands each item an augmentation seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from mammo_insight.runs.config import TrainConfig


def pos_weight_value(labels: np.ndarray, setting: float | str | None) -> float | None:
    """BCE pos_weight: a number, or "auto" = negatives / positives of the training labels."""
    if setting is None:
        return None
    if setting == "auto":
        positives = float((labels > 0.5).sum())
        return float((labels <= 0.5).sum()) / max(positives, 1.0)
    return float(setting)


def soft_labels(labels: np.ndarray, positive_label: float) -> np.ndarray:
    """Positives get ``positive_label`` (e.g. 0.9) instead of 1: softer targets for noisy positives."""
    return np.where(labels > 0.5, positive_label, labels).astype(np.float32)


def balanced_indices(
    labels: np.ndarray, pos_ratio: float, rng: np.random.Generator, n_items: int | None = None
) -> np.ndarray:
    """Draw with replacement so that about ``pos_ratio`` of the items are positive."""
    pos, neg = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
    if len(pos) == 0 or len(neg) == 0:
        return rng.permutation(len(labels))
    n_items = n_items or len(labels)
    n_pos = round(n_items * pos_ratio)
    picked = np.concatenate(
        [rng.choice(pos, n_pos, replace=True), rng.choice(neg, n_items - n_pos, replace=True)]
    )
    return rng.permutation(picked)


def balanced_subset(
    labels: np.ndarray, pos_ratio: float, rng: np.random.Generator, groups: np.ndarray | None = None
) -> np.ndarray:
    """The warm-up set: every positive group plus enough negative groups (drawn without replacement) for
    ``pos_ratio`` of the groups to be positive, with all the items of each group drawn.

    ``groups``: one id per item, the breast of each image in single-view mode, so a breast's views are
    all in the subset or all out (a group is positive when any of its items is); None: one item each.
    """
    codes = np.arange(len(labels)) if groups is None else pd.factorize(np.asarray(groups))[0]
    positive = np.zeros(codes.max() + 1 if len(codes) else 0, dtype=bool)
    np.logical_or.at(positive, codes, np.asarray(labels) > 0.5)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    n_neg = min(len(neg), max(1, round(len(pos) * (1 - pos_ratio) / pos_ratio)) if len(pos) else len(neg))
    chosen = np.concatenate([pos, rng.choice(neg, n_neg, replace=False)])
    return rng.permutation(np.flatnonzero(np.isin(codes, chosen)))


def resampled_indices(
    labels: np.ndarray,
    undersample_negatives: float | None,
    oversample_positives: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Keep a fraction of negatives and repeat each positive ``oversample_positives`` times."""
    pos, neg = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
    if undersample_negatives is not None:
        neg = (
            rng.choice(neg, max(1, round(len(neg) * undersample_negatives)), replace=False)
            if len(neg)
            else neg
        )
    return rng.permutation(np.concatenate([np.repeat(pos, oversample_positives), neg]))


def epoch_plan(
    labels: np.ndarray, config: TrainConfig, epoch: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """The item indices of one epoch: warm-up subset (whole ``groups``), balanced draw, or resampled full data."""
    rng = np.random.default_rng([config.seed, epoch])
    if epoch < config.warmup_epochs:
        return balanced_subset(labels, config.warmup_pos_ratio, rng, groups)
    if config.sampler == "balanced":
        return balanced_indices(labels, config.target_pos_ratio, rng)
    return resampled_indices(labels, config.undersample_negatives, config.oversample_positives, rng)


class EpochSampler(Sampler):
    """Yields (index, augmentation seed) per item; Lightning calls ``set_epoch`` before each epoch.

    ``groups``: the breast of each item when items are images, so the warm-up subset keeps breasts whole.
    """

    def __init__(self, labels: np.ndarray, config: TrainConfig, groups: np.ndarray | None = None):
        self.labels = np.asarray(labels)
        self.config = config
        self.groups = None if groups is None else np.asarray(groups)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> np.ndarray:
        return epoch_plan(self.labels, self.config, self.epoch, self.groups)

    def __len__(self) -> int:
        return len(self._plan())

    def __iter__(self):
        plan = self._plan()
        seeds = np.random.default_rng([self.config.seed, self.epoch, 1]).integers(0, 2**31 - 1, len(plan))
        return iter(zip(plan.tolist(), seeds.tolist(), strict=True))


def worker_init(_: int) -> None:
    """Workers use one thread each: the main process owns the cores."""
    torch.set_num_threads(1)
