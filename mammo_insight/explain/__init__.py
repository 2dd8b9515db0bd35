"""Explanations: SHAP for the tabular models, class activation maps (with checks) for the CNNs."""
