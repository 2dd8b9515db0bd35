"""The networks: timm factory, offline pretrained weights, pooling heads, the small CNN, unfreezing, devices."""
