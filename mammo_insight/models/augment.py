"""Training augmentations on a 1xHxW float image in [0, 1] (torchvision.transforms.v2).

Flips, rotation, brightness and contrast, Gaussian noise and random patch erasure
("destructive patching": a random box is blanked, so the model cannot rely on one spot).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from mammo_insight.models.config import AugmentConfig


def build_augment(config: AugmentConfig) -> v2.Compose | None:
    """The composed transform, or None when every augmentation is off."""
    steps: list[torch.nn.Module] = []
    if config.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(config.hflip))
    if config.vflip > 0:
        steps.append(v2.RandomVerticalFlip(config.vflip))
    if config.rotate_degrees > 0:
        steps.append(v2.RandomRotation(config.rotate_degrees, interpolation=v2.InterpolationMode.BILINEAR))
    if config.brightness > 0 or config.contrast > 0:
        steps.append(v2.ColorJitter(brightness=config.brightness or None, contrast=config.contrast or None))
    if config.noise_std > 0:
        steps.append(v2.GaussianNoise(sigma=config.noise_std, clip=True))
    if config.erase_p > 0:
        steps.append(v2.RandomErasing(p=config.erase_p, scale=tuple(config.erase_scale), value=0.0))
    return v2.Compose(steps) if steps else None
