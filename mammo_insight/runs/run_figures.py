"""The figures of a run report, each a matplotlib Figure built without pyplot's global state."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import precision_recall_curve, roc_curve

from mammo_insight.metrics import average_precision, calibration_table, point_metrics, roc_auc
from mammo_insight.report.plotting import error_lengths

LABEL, PROB = "cancer", "prob"
COLORS = {
    "image": "#2f5d9e",
    "breast": "#c0392b",
    "breast_max": "#7d5ba6",
    "train": "#7f8c8d",
    "val": "#2f5d9e",
}


def learning_curves(history: pd.DataFrame) -> Figure:
    """Loss, pF1, ROC-AUC and balanced accuracy (at 0.5; runs before it have none) per epoch: train dashed,
    validation solid, one line per fold."""
    metrics = [
        m
        for m in ("loss", "pf1", "roc_auc", "balanced_accuracy")
        if m in history.columns and history[m].notna().any()
    ]
    fig = Figure(figsize=(4.2 * len(metrics), 3.3), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    folds = sorted(history["fold"].dropna().unique()) if "fold" in history.columns else [None]
    for ax, metric in zip(axes, metrics, strict=False):
        for fold in folds:
            part = history if fold is None else history[history["fold"] == fold]
            for split, style in (("train", "--"), ("val", "-")):
                rows = part[part["split"] == split].sort_values("epoch")
                if rows[metric].notna().any():
                    ax.plot(
                        rows["epoch"],
                        rows[metric],
                        style,
                        color=COLORS[split],
                        alpha=0.75,
                        marker=".",
                        label=f"{split}" if fold == folds[0] else None,
                    )
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False)
    return fig


def roc_pr_curves(levels: Mapping[str, pd.DataFrame]) -> Figure:
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_roc, ax_pr = fig.subplots(1, 2)
    for level, frame in levels.items():
        y, p = frame[LABEL].to_numpy(float), frame[PROB].to_numpy(float)
        fpr, tpr, _ = roc_curve(y, p)
        ax_roc.plot(fpr, tpr, color=COLORS.get(level), label=f"{level} (AUC {roc_auc(y, p):.3f})")
        precision, recall, _ = precision_recall_curve(y, p)
        ax_pr.step(
            recall,
            precision,
            where="post",
            color=COLORS.get(level),
            label=f"{level} (AP {average_precision(y, p):.3f})",
        )
        ax_pr.axhline(y.mean(), ls=":", color=COLORS.get(level), lw=1)
    ax_roc.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax_roc.set(
        xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01)
    )
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (ax_roc, ax_pr):
        ax.legend(frameon=False, loc="lower right" if ax is ax_roc else "upper right")
        ax.grid(alpha=0.3)
    return fig


def per_fold_roc(frame: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.subplots()
    for fold, part in frame.groupby("fold"):
        y, p = part[LABEL].to_numpy(float), part[PROB].to_numpy(float)
        if np.unique(y).size < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.2, label=f"fold {fold} (AUC {roc_auc(y, p):.3f}, n={len(part)})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def confusion_matrices(levels: Mapping[str, pd.DataFrame], thresholds: Mapping[str, float]) -> Figure:
    fig = Figure(figsize=(4.0 * len(levels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(levels), squeeze=False)[0]
    for ax, (level, frame) in zip(axes, levels.items(), strict=False):
        t = thresholds.get(level, 0.5)
        m = point_metrics(frame[LABEL], frame[PROB], t)
        grid = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        rows = grid.sum(axis=1, keepdims=True)
        ax.imshow(
            np.divide(grid, rows, out=np.zeros_like(grid), where=rows > 0), cmap="Blues", vmin=0, vmax=1
        )
        for (i, j), v in np.ndenumerate(grid):
            share = v / grid[i].sum() if grid[i].sum() else np.nan
            ax.text(
                j,
                i,
                f"{int(v):,}\n{share:.1%}",
                ha="center",
                va="center",
                color="white" if share > 0.6 else "black",
            )
        ax.set_xticks([0, 1], ["predicted 0", "predicted 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(f"{level} (threshold {t:.3g})")
    return fig


def calibration_curves(levels: Mapping[str, pd.DataFrame], n_bins: int = 10) -> Figure:
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.subplots()
    top = 0.0
    for level, frame in levels.items():
        cal = calibration_table(frame[LABEL], frame[PROB], n_bins, strategy="quantile")
        ax.plot(cal["mean_prob"], cal["observed_rate"], "o-", color=COLORS.get(level), label=level)
        top = max(top, cal["mean_prob"].max(), cal["observed_rate"].max())
    top = min(1.0, top * 1.1 + 1e-3)
    ax.plot([0, top], [0, top], "--", color="grey", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", xlim=(0, top), ylim=(0, top))
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def _forest(ax, labels: list[str], values, lows, *, highs, color: str) -> None:
    ypos = np.arange(len(labels))[::-1]
    ax.errorbar(
        np.asarray(values, dtype=float),
        ypos,
        xerr=error_lengths(values, lows, highs),
        fmt="o",
        color=color,
        capsize=3,
    )
    ax.set_yticks(ypos, labels)
    ax.grid(alpha=0.3, axis="x")


def forest_plot(frame: pd.DataFrame, metrics: list[str]) -> Figure:
    """Tidy metrics (level, metric, value, ci_low, ci_high): one panel per metric, one row per level."""
    metrics = [m for m in metrics if m in set(frame["metric"])]
    fig = Figure(
        figsize=(2.6 * max(len(metrics), 1), 0.45 * frame["level"].nunique() + 1.4), layout="constrained"
    )
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False, sharey=True)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        part = frame[frame["metric"] == metric]
        _forest(
            ax,
            list(part["level"]),
            part["value"],
            part["ci_low"],
            highs=part["ci_high"],
            color=COLORS["image"],
        )
        ax.set_title(metric)
        ax.set_xlim(-0.02, 1.02)
    return fig


def subgroup_forest(rows: pd.DataFrame) -> Figure:
    """Tidy subgroup rows of one metric: one line per (factor, level) with its interval."""
    labels = [
        f"{f}: {lv} (n={n})" for f, lv, n in zip(rows["factor"], rows["level"], rows["n"], strict=False)
    ]
    fig = Figure(figsize=(6.5, 0.32 * len(labels) + 1.2), layout="constrained")
    ax = fig.subplots()
    _forest(ax, labels, rows["value"], rows["ci_low"], highs=rows["ci_high"], color=COLORS["breast"])
    ax.axvline(0.5, ls="--", color="grey", lw=1)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(str(rows["metric"].iloc[0]) if len(rows) else "")
    return fig


def overlaid_learning_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Several runs' loss, pF1 and ROC-AUC per epoch, averaged over folds: validation solid, training dashed."""
    metrics = ("loss", "pf1", "roc_auc")
    fig = Figure(figsize=(4.2 * len(metrics), 3.5), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for k, (name, history) in enumerate(histories.items()):
        color = f"C{k % 10}"
        mean = history.groupby(["split", "epoch"])[[m for m in metrics if m in history]].mean().reset_index()
        for ax, metric in zip(axes, metrics, strict=False):
            if metric not in mean:
                continue
            for split, style in (("val", "-"), ("train", "--")):
                rows = mean[mean["split"] == split].sort_values("epoch")
                if rows[metric].notna().any():
                    ax.plot(
                        rows["epoch"],
                        rows[metric],
                        style,
                        color=color,
                        marker=".",
                        alpha=1.0 if split == "val" else 0.5,
                        label=f"{name} ({split})",
                    )
    for ax, metric in zip(axes, metrics, strict=False):
        ax.set_title(f"{metric} (mean over folds)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize="small")
    return fig
