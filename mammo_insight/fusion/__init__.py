"""Fusion of metadata and CNN embeddings: `embed` (torch) and `fuse-train` (LightGBM + SHAP, no torch)."""
