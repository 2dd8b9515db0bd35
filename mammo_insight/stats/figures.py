"""The study's figures (matplotlib Figure objects, no global pyplot state): rates with intervals,
the age trend, the forest plot of odds ratios, the missingness heatmap and the leakage bars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mammo_insight.stats.factors import Factor

INK = "#1d2330"
ACCENT = "#2f5d9e"
WARN = "#a4361d"
MUTED = "#8a93a3"
MODEL_COLOURS = ["#2f5d9e", "#c8702a", "#3c8d5a", "#8a4f9e", "#a4361d", "#5d6675"]
UNIT_FOR_PLOT = {"view": "image"}


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8, colors=INK)
    ax.grid(axis="y", color="#e6e9ef", linewidth=0.8)
    ax.set_axisbelow(True)


def _errors(rates: pd.DataFrame) -> np.ndarray:
    """Error-bar lengths in percent (clipped at 0: Wilson bounds can sit a rounding error past the rate)."""
    return np.clip(100 * np.vstack([rates["rate"] - rates["ci_low"], rates["ci_high"] - rates["rate"]]), 0, None)


def plot_unit(factor: Factor, rates: pd.DataFrame) -> str:
    """Breast level, except for factors that vary within a breast (view): image level."""
    unit = UNIT_FOR_PLOT.get(factor.name, "breast")
    return unit if ((rates["factor"] == factor.name) & (rates["unit"] == unit)).any() else "image"


def rates_figure(rates: pd.DataFrame, factors: list[Factor], ncols: int = 3) -> Figure:
    """One panel per factor: rate and 95% Wilson interval per level, overall rate dashed, n under each level."""
    shown = [f for f in factors if f.kind != "continuous"]
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, factor in zip(axes, shown):
        unit = plot_unit(factor, rates)
        sub = rates[(rates["factor"] == factor.name) & (rates["unit"] == unit)]
        overall = rates[(rates["factor"] == "all") & (rates["unit"] == unit)]["rate"]
        x = np.arange(len(sub))
        y = 100 * sub["rate"].to_numpy()
        err = _errors(sub)
        colours = [MUTED if lv == "missing" else (WARN if factor.post_outcome else ACCENT) for lv in sub["level"]]
        for xi, yi, lo, hi, c in zip(x, y, err[0], err[1], colours):
            ax.errorbar(xi, yi, yerr=[[lo], [hi]], fmt="o", color=c, ecolor=c, capsize=3, markersize=5, lw=1.4)
        if len(overall):
            ax.axhline(100 * overall.iloc[0], color=MUTED, ls="--", lw=1)
        ax.set_xticks(x, [f"{lv}\nn={n:,}" for lv, n in zip(sub["level"], sub["n"])], fontsize=7)
        title = f"{factor.name} ({unit} level)" + (" — decided after outcome" if factor.post_outcome else "")
        ax.set_title(title, fontsize=10, loc="left", color=WARN if factor.post_outcome else INK)
        ax.set_ylabel("cancer rate (%)", fontsize=8)
        ax.set_ylim(bottom=0)
        _style(ax)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    return fig


def age_figure(age_rates: pd.DataFrame, age_fit: pd.DataFrame) -> Figure:
    """Breast-level rate in 5-year bins (points, 95% CI) with the logistic age trend and its band."""
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    if len(age_fit):
        ax.fill_between(age_fit["age"], 100 * age_fit["ci_low"], 100 * age_fit["ci_high"], color=ACCENT, alpha=0.15,
                        lw=0, label="logistic trend, 95% band")
        ax.plot(age_fit["age"], 100 * age_fit["rate"], color=ACCENT, lw=1.6)
    err = _errors(age_rates)
    ax.errorbar(age_rates["age_mid"], 100 * age_rates["rate"], yerr=err, fmt="o", color=INK, capsize=3,
                markersize=4, lw=1.1, label="5-year bins, 95% Wilson CI")
    ax.set_xlabel("age (years)", fontsize=9)
    ax.set_ylabel("breast-level cancer rate (%)", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    _style(ax)
    return fig


def forest_figure(odds: pd.DataFrame) -> Figure:
    """Odds ratios with 95% intervals on a log axis, one colour per model, grouped by model."""
    rows = odds.iloc[::-1].reset_index(drop=True)
    fig = Figure(figsize=(8.5, 0.9 + 0.28 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    models = list(dict.fromkeys(odds["model"]))
    colour = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}
    for i, r in rows.iterrows():
        ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=colour[r["model"]], lw=1.6)
        ax.plot(r["odds_ratio"], i, "s", color=colour[r["model"]], markersize=5)
    ax.axvline(1, color=MUTED, ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [f"{r['term']}  [{r['model']}]" for _, r in rows.iterrows()], fontsize=8)
    ax.set_xlabel("odds ratio (log scale), 95% CI, patient-clustered", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e6e9ef", linewidth=0.8, which="both")
    for label, (_, r) in zip(ax.get_yticklabels(), rows.iterrows()):
        label.set_color(colour[r["model"]])
    return fig


def missingness_figure(missing: pd.DataFrame) -> Figure:
    """Heatmap of the missing fraction: columns (rows of the map) by site (columns of the map)."""
    wide = missing.pivot(index="column", columns="site_id", values="missing_fraction")
    wide = wide.loc[list(dict.fromkeys(missing["column"])), list(dict.fromkeys(missing["site_id"]))]
    fig = Figure(figsize=(1.6 + 1.1 * wide.shape[1], 0.6 + 0.32 * wide.shape[0]), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(wide.to_numpy(dtype=float), cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(wide.shape[1]), [f"site {s}" if s != "all" else "all sites" for s in wide.columns], fontsize=8)
    ax.set_yticks(range(wide.shape[0]), wide.index, fontsize=8)
    for (i, j), v in np.ndenumerate(wide.to_numpy(dtype=float)):
        ax.text(j, i, f"{100 * v:.0f}%", ha="center", va="center", fontsize=7, color="white" if v > 0.6 else INK)
    fig.colorbar(im, ax=ax, shrink=0.6, label="missing fraction")
    return fig


def leakage_figure(leakage: pd.DataFrame) -> Figure:
    """AUC of each column alone (patient-grouped, breast level), leaky ones in red."""
    rows = leakage.dropna(subset=["auc_alone"]).sort_values("auc_alone")
    fig = Figure(figsize=(7, 0.8 + 0.3 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    colours = [WARN if v == "leaky" else ACCENT for v in rows["verdict"]]
    ax.barh(range(len(rows)), rows["auc_alone"], color=colours, height=0.6)
    ax.set_yticks(range(len(rows)), rows["column"], fontsize=8)
    ax.axvline(0.5, color=MUTED, ls="--", lw=1)
    ax.axvline(0.9, color=WARN, ls=":", lw=1)
    ax.set_xlim(min(0.3, float(rows["auc_alone"].min()) - 0.05) if len(rows) else 0.3, 1.0)
    ax.set_xlabel("AUC of the column alone (red: leaky)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
