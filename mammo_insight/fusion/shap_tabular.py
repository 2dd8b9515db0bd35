"""SHAP for the tree models of fuse-train: values, grouped attribution, interactions and the plots.

shap.TreeExplainer gives exact Shapley values of a LightGBM model (log-odds units). Features are put in
groups ("metadata", "image") so a breast's prediction splits into what its metadata and what its
images contributed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

IMPORTANCE_COLUMNS = ["feature", "group", "mean_abs_shap"]


def tree_shap(model, X: pd.DataFrame, workers: int = 1):
    """(explainer, shap.Explanation) of the positive class in log-odds, for the rows of X.

    Rows are split into ``workers`` chunks explained in threads (the tree SHAP kernels release the GIL).
    """
    import shap

    explainer = shap.TreeExplainer(model)
    chunks = [c for c in np.array_split(np.arange(len(X)), max(1, workers)) if len(c)]
    with warnings.catch_warnings():  # shap announces its list-of-classes output for LightGBM on every call
        warnings.filterwarnings("ignore", message="LightGBM binary classifier with TreeExplainer")
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            parts = list(pool.map(lambda rows: _positive_class(explainer.shap_values(X.iloc[rows])), chunks))
    base = np.ravel(explainer.expected_value)[-1]
    explanation = shap.Explanation(
        np.concatenate(parts),
        base_values=np.full(len(X), base),
        data=numeric_view(X),
        display_data=X.astype(object).to_numpy(),
        feature_names=list(X.columns),
    )
    return explainer, explanation


def _positive_class(values) -> np.ndarray:
    """SHAP of the positive class whatever shape this shap version returns (list per class or 3-d array)."""
    if isinstance(values, list):
        values = values[-1]
    return values[..., 1] if values.ndim == 3 else values


def numeric_view(X: pd.DataFrame) -> np.ndarray:
    """X as floats for colouring plots: categorical columns become their category codes (NaN when missing)."""
    cols = [
        X[c].cat.codes.replace(-1, np.nan).astype(float)
        if isinstance(X[c].dtype, pd.CategoricalDtype)
        else X[c].astype(float)
        for c in X.columns
    ]
    return np.column_stack(cols) if cols else np.zeros((len(X), 0))


def importance_table(values: np.ndarray, features: Sequence[str], groups: Mapping[str, str]) -> pd.DataFrame:
    """feature, group, mean_abs_shap: the global importance, largest first."""
    table = pd.DataFrame(
        {
            "feature": list(features),
            "group": [groups[f] for f in features],
            "mean_abs_shap": np.abs(values).mean(axis=0),
        }
    )
    return table.sort_values("mean_abs_shap", ascending=False, ignore_index=True)[IMPORTANCE_COLUMNS]


def group_attribution(values: np.ndarray, features: Sequence[str], groups: Mapping[str, str]) -> pd.DataFrame:
    """Per row, the summed SHAP value of each group (a breast's metadata part and image part)."""
    labels = np.array([groups[f] for f in features])
    return pd.DataFrame({g: values[:, labels == g].sum(axis=1) for g in dict.fromkeys(labels)})


def group_share(values: np.ndarray, features: Sequence[str], groups: Mapping[str, str]) -> dict[str, float]:
    """Each group's share of the total mean |SHAP| (sums to 1): how much of the model's movement it drives."""
    per_group = group_attribution(np.abs(values), features, groups).mean()
    total = float(per_group.sum())
    return {g: float(v / total) if total > 0 else float("nan") for g, v in per_group.items()}


def top_interactions(explainer, X: pd.DataFrame, among: Sequence[str], n_pairs: int = 5) -> pd.DataFrame:
    """The strongest pairwise SHAP interactions among the ``among`` features: feature_a, feature_b, mean_abs.

    Interaction values cost features^2 per row, so pass a modest sample of rows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightGBM binary classifier with TreeExplainer")
        # shap's own interaction kernel casts X to float: category codes (as LightGBM stores them), not labels
        inter = explainer.shap_interaction_values(numeric_view(X))
    if isinstance(inter, list):
        inter = inter[-1]
    if inter.ndim == 4:
        inter = inter[..., 1]
    strength = np.abs(inter).mean(axis=0)
    idx = [list(X.columns).index(f) for f in among]
    rows = [
        {
            "feature_a": X.columns[i],
            "feature_b": X.columns[j],
            "mean_abs_interaction": float(2 * strength[i, j]),
        }
        for n, i in enumerate(idx)
        for j in idx[n + 1 :]
    ]
    table = pd.DataFrame(rows, columns=["feature_a", "feature_b", "mean_abs_interaction"])
    return table.sort_values("mean_abs_interaction", ascending=False, ignore_index=True).head(n_pairs)


def bar_figure(importance: pd.DataFrame, max_features: int = 20):
    """Horizontal bars of mean |SHAP|, coloured by group."""
    import matplotlib.pyplot as plt

    top = importance.head(max_features).iloc[::-1]
    colours = {"metadata": "#1f77b4", "image": "#d62728"}
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1.2))
    ax.barh(top["feature"], top["mean_abs_shap"], color=[colours.get(g, "#7f7f7f") for g in top["group"]])
    ax.set_xlabel("mean |SHAP| (log-odds)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for g, c in colours.items() if g in set(top["group"])]
    ax.legend(handles, [g for g in colours if g in set(top["group"])], loc="lower right")
    fig.tight_layout()
    return fig


def beeswarm_figure(explanation, max_display: int = 15):
    import matplotlib.pyplot as plt
    import shap

    shap.plots.beeswarm(
        explanation, max_display=max_display, show=False, plot_size=(8, 0.35 * max_display + 1.5)
    )
    return plt.gcf()


def dependence_figure(explanation, feature: str, color_by: str | None = None):
    """SHAP value of one feature against its value (coloured by a partner feature when given)."""
    import matplotlib.pyplot as plt
    import shap

    fig, ax = plt.subplots(figsize=(6, 4))
    color = explanation[:, color_by] if color_by else None
    kwargs = {"color": color} if color is not None else {}
    shap.plots.scatter(explanation[:, feature], ax=ax, show=False, **kwargs)
    ax.set_title(f"{feature}" + (f" (colour: {color_by})" if color_by else ""))
    fig.tight_layout()
    return fig


def group_figure(attribution: pd.DataFrame, label: np.ndarray):
    """Each breast's metadata contribution against its image contribution, positives highlighted."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    neg, pos = label == 0, label == 1
    ax.scatter(
        attribution.loc[neg, "metadata"],
        attribution.loc[neg, "image"],
        s=4,
        alpha=0.3,
        c="#7f7f7f",
        label="cancer = 0",
    )
    ax.scatter(
        attribution.loc[pos, "metadata"],
        attribution.loc[pos, "image"],
        s=10,
        alpha=0.8,
        c="#d62728",
        label="cancer = 1",
    )
    ax.axhline(0, lw=0.5, c="k")
    ax.axvline(0, lw=0.5, c="k")
    ax.set_xlabel("metadata contribution (sum of SHAP, log-odds)")
    ax.set_ylabel("image contribution (sum of SHAP, log-odds)")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def waterfall_figure(explanation_row, title: str, max_display: int = 12):
    import matplotlib.pyplot as plt
    import shap

    shap.plots.waterfall(explanation_row, max_display=max_display, show=False)
    fig = plt.gcf()
    fig.suptitle(title, fontsize=10)
    fig.set_size_inches(7, 0.35 * max_display + 1.5)
    return fig
