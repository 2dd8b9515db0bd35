"""The study's figures (matplotlib Figure objects, no global pyplot state): rates with intervals,
the age trend, the forest plot of odds ratios, the missingness heatmap and the leakage bars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from mammo_insight.report.plotting import error_lengths
from mammo_insight.stats.factors import Factor

INK = "#1d2330"
ACCENT = "#2f5d9e"
WARN = "#a4361d"
MUTED = "#8a93a3"
MODEL_COLOURS = ["#2f5d9e", "#c8702a", "#3c8d5a", "#8a4f9e", "#a4361d", "#5d6675"]
UNIT_FOR_PLOT = {"view": "image"}
MIN_N_FOR_AXIS = 30
FOREST_TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20, 50, 100]


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8, colors=INK)
    ax.grid(axis="y", color="#e6e9ef", linewidth=0.8)
    ax.set_axisbelow(True)


def _errors(rates: pd.DataFrame) -> np.ndarray:
    """Error-bar lengths in percent."""
    return 100 * error_lengths(rates["rate"], rates["ci_low"], rates["ci_high"])


def plot_unit(factor: Factor, rates: pd.DataFrame) -> str:
    """Breast level, except for factors that vary within a breast (view): image level."""
    unit = UNIT_FOR_PLOT.get(factor.name, "breast")
    return unit if ((rates["factor"] == factor.name) & (rates["unit"] == unit)).any() else "image"


def _axis_limit(sub: pd.DataFrame, overall: float) -> float:
    """Upper rate limit (%) set by the levels with enough units; tiny levels' intervals are clipped."""
    solid = sub[sub["n"] >= MIN_N_FOR_AXIS]
    top = max(solid["ci_high"].max() if len(solid) else 0.0, sub["rate"].max())
    return 100 * max(top, 2 * overall, 1e-3) * 1.08


def rates_figure(rates: pd.DataFrame, factors: list[Factor], ncols: int = 2) -> Figure:
    """One panel per factor: rate and 95% Wilson interval per level (rows), overall rate dashed, n in the label.

    Intervals of levels with fewer than MIN_N_FOR_AXIS units may run past the axis: they end in an arrow.
    """
    shown = [f for f in factors if f.kind != "continuous"]
    nrows = max(1, math.ceil(len(shown) / ncols))
    heights = [max(len(f.levels) for f in shown[r * ncols : (r + 1) * ncols]) + 1.6 for r in range(nrows)]
    fig = Figure(figsize=(12, 0.3 * sum(heights) + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": heights}).ravel()
    for ax, factor in zip(axes, shown, strict=False):
        unit = plot_unit(factor, rates)
        sub = rates[(rates["factor"] == factor.name) & (rates["unit"] == unit)].reset_index(drop=True)
        overall_rows = rates[(rates["factor"] == "all") & (rates["unit"] == unit)]["rate"]
        overall = float(overall_rows.iloc[0]) if len(overall_rows) else float(sub["rate"].mean())
        limit = _axis_limit(sub, overall)
        err = _errors(sub)
        for i, r in sub.iterrows():
            colour = MUTED if r["level"] == "missing" else (WARN if factor.post_outcome else ACCENT)
            low, high = 100 * r["rate"] - err[0, i], 100 * r["rate"] + err[1, i]
            ax.plot([low, min(high, limit)], [i, i], color=colour, lw=1.8, solid_capstyle="butt")
            if high > limit:
                ax.plot(limit, i, ">", color=colour, markersize=5, clip_on=False)
            ax.plot(100 * r["rate"], i, "o", color=colour, markersize=5.5)
        ax.axvline(100 * overall, color=MUTED, ls="--", lw=1)
        ax.set_yticks(
            range(len(sub)),
            [f"{lv}  (n={n:,})" for lv, n in zip(sub["level"], sub["n"], strict=False)],
            fontsize=8,
        )
        ax.set_ylim(len(sub) - 0.5, -0.5)
        ax.set_xlim(0, limit)
        title = f"{factor.name}: {unit}s" + ("  (leaks the label)" if factor.post_outcome else "")
        ax.set_title(
            title, fontsize=10, loc="left", color=WARN if factor.post_outcome else INK, fontweight="bold"
        )
        ax.set_xlabel("cancer rate (%), 95% CI", fontsize=8)
        _style(ax)
        ax.grid(axis="y", visible=False)
        ax.grid(axis="x", color="#e6e9ef", linewidth=0.8)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    return fig


def age_figure(age_rates: pd.DataFrame, age_fit: pd.DataFrame) -> Figure:
    """Breast-level rate in 5-year bins (points, 95% CI) with the logistic age trend and its band."""
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    if len(age_fit):
        ax.fill_between(
            age_fit["age"],
            100 * age_fit["ci_low"],
            100 * age_fit["ci_high"],
            color=ACCENT,
            alpha=0.15,
            lw=0,
            label="logistic trend, 95% band",
        )
        ax.plot(age_fit["age"], 100 * age_fit["rate"], color=ACCENT, lw=1.6)
    err = _errors(age_rates)
    ax.errorbar(
        age_rates["age_mid"],
        100 * age_rates["rate"],
        yerr=err,
        fmt="o",
        color=INK,
        capsize=3,
        markersize=4,
        lw=1.1,
        label="5-year bins, 95% Wilson CI",
    )
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
    ax.xaxis.set_major_locator(
        FixedLocator(
            [t for t in FOREST_TICKS if rows["ci_low"].min() / 1.5 <= t <= rows["ci_high"].max() * 1.5]
        )
    )
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(range(len(rows)), [f"{r['term']}  [{r['model']}]" for _, r in rows.iterrows()], fontsize=8)
    ax.set_xlabel("odds ratio (log scale), 95% CI, patient-clustered", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e6e9ef", linewidth=0.8, which="both")
    for label, (_, r) in zip(ax.get_yticklabels(), rows.iterrows(), strict=False):
        label.set_color(colour[r["model"]])
    return fig


def missingness_figure(missing: pd.DataFrame) -> Figure:
    """Heatmap of the missing fraction: columns (rows of the map) by site (columns of the map)."""
    wide = missing.pivot(index="column", columns="site_id", values="missing_fraction")
    wide = wide.loc[list(dict.fromkeys(missing["column"])), list(dict.fromkeys(missing["site_id"]))]
    fig = Figure(figsize=(1.6 + 1.1 * wide.shape[1], 0.6 + 0.32 * wide.shape[0]), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(wide.to_numpy(dtype=float), cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(
        range(wide.shape[1]), [f"site {s}" if s != "all" else "all sites" for s in wide.columns], fontsize=8
    )
    ax.set_yticks(range(wide.shape[0]), wide.index, fontsize=8)
    for (i, j), v in np.ndenumerate(wide.to_numpy(dtype=float)):
        ax.text(
            j, i, f"{100 * v:.0f}%", ha="center", va="center", fontsize=7, color="white" if v > 0.6 else INK
        )
    fig.colorbar(im, ax=ax, shrink=0.6, label="missing fraction")
    return fig


def leakage_figure(leakage: pd.DataFrame) -> Figure:
    """AUC of each column alone (patient-grouped, breast level), leaky ones in red."""
    rows = leakage.dropna(subset=["auc_alone"]).sort_values("auc_alone").reset_index(drop=True)
    fig = Figure(figsize=(7, 0.8 + 0.3 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    colours = [WARN if v in ("leaky", "suspect") else ACCENT for v in rows["verdict"]]
    ax.barh(range(len(rows)), rows["auc_alone"], color=colours, height=0.6)
    for i, r in rows.iterrows():  # the permutation null: what chance gives
        ax.plot([r["null_low"], r["null_high"]], [i, i], color=INK, lw=2.5, alpha=0.5, solid_capstyle="butt")
    names = rows["column"] + rows["audited"].map({"values": "", "missingness": " (missing)"})
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.axvline(0.5, color=MUTED, ls="--", lw=1)
    ax.axvline(0.9, color=WARN, ls=":", lw=1)
    ax.set_xlim(min(0.3, float(rows["auc_alone"].min()) - 0.05) if len(rows) else 0.3, 1.0)
    ax.set_xlabel("AUC of the column alone (red: leaky; grey bar: 95% of permutations)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
