"""Training augmentations on a 1xHxW float image in [0, 1] (torchvision.transforms.v2).

Flips, rotation, zoom and shift, brightness and contrast, Gaussian noise, random erasing (one box
blanked) and grid patch dropping ("destructive patching": the image cut into patch_size cells, each
blanked at a drop rate, so the model cannot rely on any one spot).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2

from mammo_insight.runs.config import AugmentConfig


class GridPatchDrop(nn.Module):
    """Blank each ``patch_size`` x ``patch_size`` cell of the image (edge cells cut short) with probability
    ``rate``; draws from torch's generator, which the dataset seeds per item."""

    def __init__(self, patch_size: int, rate: float, value: float = 0.0):
        super().__init__()
        self.patch_size, self.rate, self.value = int(patch_size), float(rate), float(value)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        cells = (-(-height // self.patch_size), -(-width // self.patch_size))
        dropped = torch.rand(cells) < self.rate
        mask = dropped.repeat_interleave(self.patch_size, 0).repeat_interleave(self.patch_size, 1)
        return image.masked_fill(mask[:height, :width], self.value)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, rate={self.rate}"


class RandomTranspose(nn.Module):
    """Swap height and width with probability ``p``: with both flips at 0.5, every one of a square's eight
    symmetries (quarter turns and mirrors) is equally likely; draws from torch's generator."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.transpose(-1, -2) if torch.rand(1).item() < self.p else image


def patch_augment(config: AugmentConfig) -> v2.Compose:
    """A lesion patch's augmentation: the [augment] table (a patch run's default: both flips), then a
    transpose at p 0.5, which completes the quarter turns (a lesion has no up or left)."""
    steps = build_augment(config)
    return v2.Compose([*(steps.transforms if steps else []), RandomTranspose(0.5)])


def build_augment(config: AugmentConfig) -> v2.Compose | None:
    """The composed transform, or None when every augmentation is off."""
    steps: list[torch.nn.Module] = []
    if config.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(config.hflip))
    if config.vflip > 0:
        steps.append(v2.RandomVerticalFlip(config.vflip))
    if config.rotate_degrees > 0:
        steps.append(v2.RandomRotation(config.rotate_degrees, interpolation=v2.InterpolationMode.BILINEAR))
    if config.zoom > 0 or config.shift > 0:
        steps.append(
            v2.RandomAffine(
                degrees=0,
                translate=(config.shift, config.shift) if config.shift > 0 else None,
                scale=(1 - config.zoom, 1 + config.zoom) if config.zoom > 0 else None,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if config.brightness > 0 or config.contrast > 0:
        steps.append(v2.ColorJitter(brightness=config.brightness or None, contrast=config.contrast or None))
    if config.noise_std > 0:
        steps.append(v2.GaussianNoise(sigma=config.noise_std, clip=True))
    if config.erase_p > 0:
        steps.append(v2.RandomErasing(p=config.erase_p, scale=tuple(config.erase_scale), value=0.0))
    if config.patch_drop_rate > 0:
        steps.append(GridPatchDrop(config.patch_size, config.patch_drop_rate))
    return v2.Compose(steps) if steps else None
