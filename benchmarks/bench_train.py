"""Benchmark: training images/s of the mammo-insight engine vs a bare timm + PyTorch loop.

    python benchmarks/bench_train.py                      # CPU: resnet10t, 128x96, 256 images
    python benchmarks/bench_train.py --device cuda        # GPU: efficientnet_b0, 512x256, 2048 images, mixed precision
    python benchmarks/bench_train.py --device cuda --model tf_efficientnet_lite0 --pretrained   # extra `pretrained`

Both loops train the same timm model (1 channel) on the same cached PNGs, batch size, optimizer
(AdamW), loss and precision; the engine goes through Lightning (make_loaders / make_module /
make_trainer, the code train_run uses, with its epoch-seeded sampler and per-epoch scoring), the
bare loop is a plain DataLoader + autocast loop. Both start from the same weights (random, or the run's
pretrained start with ``--pretrained``: nets.factory.create_backbone) and normalise the input with the
backbone's pretrained mean/std as every run does (factory.input_normalization). Augmentation is off in both. The first epoch is
warm-up; the median of the others is reported. Target: engine overhead at most 10%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

DEFAULTS = {
    "cpu": {"model": "resnet10t", "size": "128x96", "images": 256, "batch": 32, "workers": 0},
    "cuda": {"model": "efficientnet_b0", "size": "512x256", "images": 2048, "batch": 32, "workers": 8},
}


def write_cache(root: Path, n: int, size: tuple[int, int], seed: int = 0):
    """n random 8-bit PNGs in the cache layout, every 4th labelled positive."""
    import numpy as np
    import pandas as pd

    from mammo_insight.imaging.cache import relative_image_path, write_png_atomic

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rel = relative_image_path(f"P{i // 4}", f"I{i}")
        write_png_atomic(root / rel, rng.integers(0, 256, size, dtype=np.uint8))
        rows.append(
            {
                "patient_id": f"P{i // 4}",
                "image_id": f"I{i}",
                "breast_id": f"P{i // 4}_L",
                "cancer": float(i % 4 == 0),
                "cache_path": rel,
            }
        )
    return pd.DataFrame(rows)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def bench_engine(cache: Path, table, config, size, device: str) -> list[float]:
    import lightning.pytorch as pl

    from mammo_insight.runs.data import CacheImageDataset
    from mammo_insight.training.engine import lightning_device, make_loaders, make_trainer
    from mammo_insight.training.loop import make_module

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            _sync(device)
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            _sync(device)
            self.times.append(time.perf_counter() - self.t0)

    pl.seed_everything(0, verbose=False)
    accelerator, precision = lightning_device(config)
    ds = CacheImageDataset(cache, table, None, size=size)
    train_loader, _ = make_loaders(ds, ds, ds.labels, config, accelerator=accelerator)
    module = make_module(config, size, ds.labels, accelerator)
    timer = EpochTimer()
    trainer = make_trainer(
        config,
        accelerator,
        precision,
        [timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_loader)
    return timer.times


def bench_bare(cache: Path, table, config, size, device: str) -> list[float]:
    import torch
    from torch.utils.data import DataLoader

    from mammo_insight.nets.factory import create_backbone, input_normalization
    from mammo_insight.runs.data import CacheImageDataset
    from mammo_insight.training.engine import lightning_device

    torch.manual_seed(0)
    _, precision = lightning_device(config)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    backbone = create_backbone(config.model, pretrained=config.pretrained)
    mean, std = input_normalization(config.model)
    head = torch.nn.Linear(backbone.num_features, 1)

    class Bare(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.head = backbone, head

        def forward(self, x):
            return self.head(self.backbone((x - mean) / std))

    model = Bare().to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(enabled=dtype is torch.float16)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    ds = CacheImageDataset(cache, table, None, size=size)
    loader = DataLoader(
        ds,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        pin_memory=device == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    times = []
    model.train()
    for _ in range(config.epochs):
        _sync(device)
        t0 = time.perf_counter()
        for batch in loader:
            image = batch["image"].to(device, non_blocking=True)
            if device == "cuda":
                image = image.contiguous(memory_format=torch.channels_last)
            label = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(model(image).squeeze(-1).float(), label)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--model")
    parser.add_argument("--size", help="HxW")
    parser.add_argument("--images", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--epochs", type=int, default=4, help="including one warm-up epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", default="auto", help="auto, 32-true, 16-mixed or bf16-mixed (GPU)")
    parser.add_argument(
        "--pretrained", action="store_true", help="start from ImageNet weights (as train does)"
    )
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    from mammo_insight.runs.config import AugmentConfig, TrainConfig

    device = (
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    d = DEFAULTS[device]
    model, n, batch = args.model or d["model"], args.images or d["images"], args.batch or d["batch"]
    workers = d["workers"] if args.workers is None else args.workers
    size = tuple(int(v) for v in (args.size or d["size"]).lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    off = AugmentConfig(hflip=0, vflip=0, rotate_degrees=0, brightness=0, contrast=0)
    config = TrainConfig(
        model=model,
        batch_size=batch,
        epochs=args.epochs,
        device=device,
        num_workers=workers,
        augment=off,
        precision=args.precision,
        schedule="none",
        pretrained=args.pretrained,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        table = write_cache(cache, n, size)
        print(
            f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}), model {model}, "
            f"{n} images {size[0]}x{size[1]}, batch {batch}, workers {workers}, epochs {args.epochs} (1 warm-up)"
        )
        bare = bench_bare(cache, table, config, size, device)
        engine = bench_engine(cache, table, config, size, device)
    per_epoch = (n // batch) * batch
    bare_ips = per_epoch / statistics.median(bare[1:])
    engine_ips = per_epoch / statistics.median(engine[1:])
    print(
        f"bare timm + PyTorch loop: {bare_ips:8.1f} images/s  (epochs {', '.join(f'{t:.2f}s' for t in bare)})"
    )
    print(
        f"mammo-insight engine:     {engine_ips:8.1f} images/s  (epochs {', '.join(f'{t:.2f}s' for t in engine)})"
    )
    print(f"engine overhead: {100 * (bare_ips / engine_ips - 1):+.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
