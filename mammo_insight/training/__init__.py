"""The trainer: datasets' sampling, losses, augmentation, the Lightning module and the fold loop that writes runs."""
