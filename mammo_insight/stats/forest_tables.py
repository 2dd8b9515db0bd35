"""The study's pictures as columns of its tables (report.glyphs): the cancer rate per level, the adjusted
odds ratios, each column's AUC alone, the share missing per site, and age's observed and modelled rate.

A table row and its mark share one line: the reader compares levels along the marks and reads the exact
figures beside them. Rows that share a mark's scale are one factor's levels (rates), or the whole table
(odds ratios on one log scale, AUCs); an axis row under them gives the scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from markupsafe import Markup

from mammo_insight.report.glyphs import ACCENT, INK, MUTED, WARN, Scale, axis, heat, interval
from mammo_insight.stats.factors import MISSING, Factor

UNIT_FOR_PLOT = {"view": "image"}
MIN_N_FOR_AXIS = 30
MODEL_COLOURS = ["#2f5d9e", "#c8702a", "#3c8d5a", "#8a4f9e", "#a4361d", "#5d6675"]
RATE_MARK = "rate and 95% CI (dashed: all)"


def pct(x: float) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.1f}%"


def rate_ci(rate: float, low: float, high: float) -> str:
    return f"{pct(rate)} ({pct(low)}–{pct(high)})"


def plot_unit(factor: Factor, rates: pd.DataFrame) -> str:
    """Breast level, except for factors that vary within a breast (view): image level."""
    unit = UNIT_FOR_PLOT.get(factor.name, "breast")
    return unit if ((rates["factor"] == factor.name) & (rates["unit"] == unit)).any() else "image"


def rate_scale(rates: pd.DataFrame, overall: float, also: Sequence[float] = ()) -> Scale:
    """0 to the top of the intervals of the levels with enough units (and of ``also``), in percent; a tiny
    level's interval may run past it (an arrow marks it)."""
    solid = rates[rates["n"] >= MIN_N_FOR_AXIS]
    tops = [*solid["ci_high"], *rates["rate"], *also, 2 * overall, 1e-3]
    return Scale(0.0, 100 * float(np.nanmax(tops)) * 1.08)


def _rate_mark(row, scale: Scale, label: str, **style) -> Markup:
    """A row of a rates table (rate, ci_low, ci_high as fractions) drawn in percent."""
    return interval(100 * row.rate, 100 * row.ci_low, 100 * row.ci_high, scale, label=label, **style)


def _blank(columns: list[str], mark: Markup) -> dict:
    return {**dict.fromkeys(columns, ""), columns[-1]: mark}


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows whose marks stay Markup: pandas would store them as plain strings, which the page escapes."""
    return pd.DataFrame(rows, columns=columns, dtype=object)


def with_marks(display: pd.DataFrame, name: str, marks: list[Markup], scale: Markup) -> pd.DataFrame:
    """``display`` with a column of marks, one per row, and their scale as a last row."""
    marked = display.astype(object).assign(**{name: pd.Series(marks, index=display.index, dtype=object)})
    return pd.concat([marked, _frame([_blank(list(marked.columns), scale)], list(marked.columns))])


def rates_forest(rates: pd.DataFrame, factors: list[Factor]) -> pd.DataFrame:
    """Per factor (at its plot unit) a row per level, its rate and interval drawn on the factor's scale,
    then the scale. Grey: not recorded; red: a column that leaks the label."""
    columns = ["factor", "unit", "level", "n", "cancers", "rate (95% CI)", RATE_MARK]
    rows: list[dict] = []
    for factor in factors:
        unit = plot_unit(factor, rates)
        sub = rates[(rates["factor"] == factor.name) & (rates["unit"] == unit)]
        overall_rows = rates[(rates["factor"] == "all") & (rates["unit"] == unit)]["rate"]
        overall = float(overall_rows.iloc[0]) if len(overall_rows) else float(sub["rate"].mean())
        scale = rate_scale(sub, overall)
        name = factor.name + ("  (leaks the label)" if factor.post_outcome else "")
        for i, r in enumerate(sub.itertuples(index=False)):
            colour = MUTED if r.level == MISSING else (WARN if factor.post_outcome else ACCENT)
            text = rate_ci(r.rate, r.ci_low, r.ci_high)
            mark = _rate_mark(
                r,
                scale,
                f"{factor.name} {r.level}: {text}",
                colour=colour,
                references=[(100 * overall, MUTED, "dashed")],
            )
            rows.append(
                {
                    "factor": name if i == 0 else "",
                    "unit": unit if i == 0 else "",
                    "level": r.level,
                    "n": f"{r.n:,}",
                    "cancers": f"{r.n_cancer:,}",
                    "rate (95% CI)": text,
                    RATE_MARK: mark,
                }
            )
        rows.append(_blank(columns, axis(scale, "%")))
    return _frame(rows, columns)


def odds_marks(odds: pd.DataFrame) -> tuple[list[Markup], Markup]:
    """Each odds ratio and interval on one log scale for the whole table (1 dashed), coloured by model;
    and that scale's axis."""
    low = float(odds["ci_low"].min()) if len(odds) else 0.5
    high = float(odds["ci_high"].max()) if len(odds) else 2.0
    scale = Scale(max(0.01, min(low / 1.3, 0.8)), min(500.0, max(high * 1.3, 1.25)), log=True)
    colour = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(dict.fromkeys(odds["model"]))}
    marks = [
        interval(
            r.odds_ratio,
            r.ci_low,
            r.ci_high,
            scale,
            colour=colour[r.model],
            references=[(1.0, MUTED, "dashed")],
            label=f"{r.model}, {r.term}: odds ratio {r.odds_ratio:.2f} ({r.ci_low:.2f}–{r.ci_high:.2f})",
        )
        for r in odds.itertuples(index=False)
    ]
    return marks, axis(scale)


def auc_marks(leakage: pd.DataFrame, leaky_auc: float, suspect_auc: float) -> tuple[list[Markup], Markup]:
    """Each column's AUC alone as a dot over the grey band of its permutations (chance), 0.5 dashed, the
    suspect and leaky thresholds dotted; red when the audit flags the column."""
    aucs = leakage["auc_alone"].dropna()
    scale = Scale(min(0.3, float(aucs.min()) - 0.05) if len(aucs) else 0.3, 1.0)
    marks = [
        interval(
            r.auc_alone,
            float("nan"),
            float("nan"),
            scale,
            colour=WARN if r.verdict in ("leaky", "suspect") else ACCENT,
            references=[(0.5, MUTED, "dashed"), (suspect_auc, MUTED, "dotted"), (leaky_auc, WARN, "dotted")],
            band=(r.null_low, r.null_high),
            label=f"{r.column}: AUC alone {r.auc_alone:.3f}",
        )
        for r in leakage.itertuples(index=False)
    ]
    return marks, axis(scale)


def missingness_heat(missing: pd.DataFrame) -> pd.DataFrame:
    """The share of images with each column empty (rows), over all sites and per site (columns), each
    cell shaded by its share."""
    wide = missing.pivot(index="column", columns="site_id", values="missing_fraction")
    wide = wide.loc[list(dict.fromkeys(missing["column"])), list(dict.fromkeys(missing["site_id"]))]
    rows = [
        {"column": column, **{_site(s): heat(v, f"{100 * v:.0f}%") for s, v in shares.items()}}
        for column, shares in wide.iterrows()
    ]
    return _frame(rows, ["column", *map(_site, wide.columns)])


def _site(site: object) -> str:
    return "all sites" if site == "all" else f"site {site}"


def age_forest(age_rates: pd.DataFrame, age_fit: pd.DataFrame) -> pd.DataFrame:
    """Per age bin the observed breast-level rate with its interval (dot and line) and the age-alone
    logistic model's rate at the bin's middle with its 95% band (dark tick on a grey band)."""
    mark_name = "observed rate, 95% CI; model: tick and band"
    columns = ["age", "breasts", "cancers", "observed rate (95% CI)", "model (95% band)", mark_name]
    fit = age_fit.set_index("age").reindex(age_rates["age_mid"].to_numpy())
    scale = rate_scale(age_rates, 0.0, also=fit["ci_high"].tolist())  # the model's band too
    rows = []
    for r, (_, model) in zip(age_rates.itertuples(index=False), fit.iterrows(), strict=True):
        text = rate_ci(r.rate, r.ci_low, r.ci_high)
        mark = _rate_mark(
            r,
            scale,
            f"age {r.age_bin}: {text}",
            references=[(100 * model["rate"], INK, "solid")],
            band=(100 * model["ci_low"], 100 * model["ci_high"]),
        )
        rows.append(
            {
                "age": f"{r.age_bin}–{2 * r.age_mid - r.age_bin - 1:g}",
                "breasts": f"{r.n:,}",
                "cancers": f"{r.n_cancer:,}",
                "observed rate (95% CI)": text,
                "model (95% band)": rate_ci(model["rate"], model["ci_low"], model["ci_high"]),
                mark_name: mark,
            }
        )
    rows.append(_blank(columns, axis(scale, "%")))
    return _frame(rows, columns)
