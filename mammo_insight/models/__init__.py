"""timm-backed image classifiers, the run-directory contract, training glue and embeddings."""
