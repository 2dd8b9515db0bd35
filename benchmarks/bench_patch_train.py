"""Benchmark: one patch-train fold on the engine (Lightning) vs a bare PyTorch loop, side by side.

    python benchmarks/bench_patch_train.py --cache CACHE                 # resnet10t, 32-px patches, 2 epochs
    python benchmarks/bench_patch_train.py --cache CACHE --model test_efficientnet --epochs 3 --threads 1

CACHE is an image cache with lesion annotations (mini-MIAS: ``preprocess --dataset mias --size 128x64``).
Both train fold 0's patch classifier on the same sampled patches (training.patches.sample_patches), the
same model (runs.patch.build_patch_model), AdamW, balanced BCE (pos_weight negatives/positives), the same
batch size and epochs, flips and transposes. The engine is ``training.patches.train_patch_fold``, what
patch-train runs: Lightning's Trainer, the epoch-seeded sampler and per-item seeded augmentation, a
checkpoint every epoch, per-epoch scoring of the fold's validation patches, the history. The bare loop is
the plain loop patch-train ran before it moved onto the engine (one random permutation per epoch, one
flip/transpose draw per batch, a cosine schedule per step, no validation, no checkpoint). Prints each
one's wall time for the fold's training and the ratio. Target: the engine within 1.5x of the bare loop.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def bare_loop(pixels, labels, config) -> float:
    """The pre-engine patch loop; returns its wall time in seconds."""
    import numpy as np
    import torch

    from mammo_insight.runs.patch import build_patch_model

    torch.manual_seed(config.seed)
    model = build_patch_model(config)
    generator = torch.Generator().manual_seed(config.seed)
    x, y = torch.from_numpy(pixels).unsqueeze(1), torch.from_numpy(labels.astype(np.float32))
    pos_weight = torch.tensor((len(y) - float(y.sum())) / max(float(y.sum()), 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * int(np.ceil(len(y) / config.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps))
    started = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            batch = x[idx]
            for flip in (-1, -2):
                if torch.rand(1, generator=generator).item() < 0.5:
                    batch = batch.flip(flip)
            if torch.rand(1, generator=generator).item() < 0.5:
                batch = batch.transpose(-1, -2)
            loss = loss_fn(model(batch), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import lightning.pytorch as pl
    import torch

    from mammo_insight.imaging import annotations
    from mammo_insight.runs.config import PatchConfig
    from mammo_insight.training.patches import patch_folds, sample_patches, train_patch_fold
    from mammo_insight.training.sources import load_training_table

    if args.threads:
        torch.set_num_threads(args.threads)
    config = PatchConfig(
        model=args.model, patch_size=args.patch_size, epochs=args.epochs, folds=args.folds, device="cpu"
    )
    table = patch_folds(load_training_table(args.cache, config.label_column), config)
    patches, pixels = sample_patches(args.cache, table, annotations.read(args.cache), config)
    train = (patches["fold"] != 0).to_numpy()
    print(
        f"{config.model}, {config.patch_size}-px patches: fold 0 trains on {int(train.sum())} patches, "
        f"validates on {int((~train).sum())}; {config.epochs} epochs, batch {config.batch_size}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    bare = bare_loop(pixels[train], patches.loc[train, "label"].to_numpy(), config)
    pl.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train_patch_fold(Path(tmp), patches, pixels, config, 0)
        engine = time.perf_counter() - started
    print(f"bare loop: {bare:.1f} s   engine: {engine:.1f} s   engine / bare: {engine / bare:.2f}x")


if __name__ == "__main__":
    main()
