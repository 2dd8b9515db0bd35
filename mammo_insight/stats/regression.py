"""Multivariable logistic regression of breast-level cancer, with patient-clustered standard errors.

Fitted at the breast level (the unit of the label) as a logistic GLM with cluster-robust (sandwich)
standard errors clustered on women, so a woman's two breasts are not counted as independent. On
RSNA (23,810 breasts, all-breasts model) this gives the odds ratios and standard errors of a
binomial GEE with exchangeable correlation to within 0.02% (log-OR difference < 3e-5), in 0.8 s
against 7.6 s for the GEE on the shared 2-core machine.
Missingness is handled in the open rather than by silent complete-case fitting:

- a categorical factor keeps an explicit ``missing`` level;
- a factor whose dummies are (almost) the same as an earlier factor's is left out of that model and
  the note says so (in RSNA, site 2 is exactly where density is missing, so the all-breasts model
  keeps density with its missing level and the per-site models show the site contrast);
- one model per site when there are several, so each site is fitted on what it records;
- rare levels (fewer than MIN_EVENTS cancers or MIN_UNITS breasts) are pooled into ``other``;
  breasts still unusable (missing age, an empty pooled level) are dropped and counted per model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import polars as pl
import statsmodels.api as sm
from scipy import stats

from mammo_insight.stats.factors import MISSING, Factor, constant_within

log = logging.getLogger(__name__)

OR_COLUMNS = ["model", "term", "odds_ratio", "ci_low", "ci_high", "p_value"]
JOINT_COLUMNS = ["model", "factor", "n_terms", "statistic", "p_value"]
MODEL_COLUMNS = ["model", "terms", "n_breasts", "n_patients", "n_cancer", "n_dropped", "converged", "notes"]
AGE_CENTER = 60.0
AGE_SCALE = 10.0
AGE_TERM = "age (per 10 years)"
AGE_ALONE = "age alone"
MIN_EVENTS = 5
MIN_UNITS = 30
ALIAS_CORR = 0.95
MAX_SITES = 10
OTHER = "other"
MAX_LOG_SE = 5.0  # a log-odds standard error this large means (quasi-)separation, not an estimate
MAX_LOG_OR = 10.0


@dataclass
class ModelSpec:
    """One model: its name, the breasts it uses and the factors it tries."""

    name: str
    rows: np.ndarray
    factors: list[Factor]
    use_age: bool = True
    notes: list[str] = field(default_factory=list)


BREAST_RULE = {
    "continuous": "the highest value among the breast's images",
    "ordinal": "the highest recorded level among the breast's images",
    "categorical": "the level most of the breast's images hold (ties: the first in level order)",
}


def _levels(factor: Factor) -> list[str]:
    return [lv for lv in factor.levels if lv != MISSING]


def breast_table(frame: pl.DataFrame, factors: list[Factor]) -> pd.DataFrame:
    """One row per breast: patient, label, mean age and each factor by its documented rule (BREAST_RULE);
    'missing' only when no image of the breast has a value.

    Levels are ranked once over the images, then aggregated with min/max; the most frequent level (a
    per-group mode, slow at a million images) is computed only for the few breasts whose images disagree.
    """
    ranked = frame.with_columns(
        pl.col(f.name).replace_strict(
            {lv: i for i, lv in enumerate(_levels(f))}, default=None, return_dtype=pl.Int64
        )
        for f in factors
        if f.kind != "continuous"
    )
    aggs = [pl.col("patient_id").first(), pl.col("cancer").max(), pl.col("age").mean()]
    aggs += [pl.col(f.name).max() for f in factors]
    modal = [f.name for f in factors if f.kind != "continuous" and not f.ordered]
    aggs += [pl.col(name).min().alias(f"{name} min") for name in modal]
    breasts = ranked.group_by("breast_id", maintain_order=True).agg(aggs)
    for name in modal:  # most frequent recorded level; ties go to the lowest rank
        mixed = breasts.filter(pl.col(f"{name} min") != pl.col(name))["breast_id"]
        if len(mixed):
            mode = (
                ranked.filter(pl.col("breast_id").is_in(mixed.implode()))
                .group_by("breast_id")
                .agg(pl.col(name).drop_nulls().mode().min().alias("mode"))
            )
            breasts = (
                breasts.join(mode, on="breast_id", how="left", maintain_order="left")
                .with_columns(pl.coalesce("mode", name).alias(name))
                .drop("mode")
            )
        breasts = breasts.drop(f"{name} min")
    breasts = breasts.with_columns(
        pl.col(f.name)
        .replace_strict(dict(enumerate(_levels(f))), default=MISSING, return_dtype=pl.String)
        .fill_null(MISSING)
        for f in factors
        if f.kind != "continuous"
    )
    return breasts.to_pandas()


def mixed_breast_notes(frame: pl.DataFrame, factors: list[Factor]) -> list[str]:
    """For each breast-level factor, the breasts whose images hold two or more recorded levels, and how they count."""
    notes = []
    breast_level = constant_within(frame, [f.name for f in factors if not f.binned_from], "breast")
    for f in factors:
        if f.name not in breast_level:
            continue
        recorded = frame.filter(pl.col(f.name).is_not_null())
        if f.kind != "continuous":
            recorded = recorded.filter(pl.col(f.name) != MISSING)
        per_breast = recorded.group_by("breast_id").agg(pl.col(f.name).n_unique().alias("k"))
        n_mixed = int((per_breast["k"] > 1).sum())
        if n_mixed:
            notes.append(
                f"{f.name}: {n_mixed:,} breast(s) have images with different values; in the rates such a breast "
                f"counts under each of its levels (so the levels' breasts sum to more than the breasts), and "
                f"in the models it takes {BREAST_RULE[f.kind]}."
            )
    return notes


def model_factors(frame: pl.DataFrame, factors: list[Factor]) -> tuple[list[Factor], list[str]]:
    """Screening-time factors usable at breast level, with notes on those left out and why."""
    names = {f.name for f in factors}
    kept, notes = [], []
    candidates = [f for f in factors if not (f.post_outcome or f.binned_from)]
    per_breast = constant_within(frame, [f.name for f in candidates if f.kind != "continuous"], "breast")
    for f in candidates:
        if f.name == "machine_id" and "site_id" in names:
            notes.append(
                "machine_id is not a term: machines are nested in sites (see the site x machine table), "
                "so machine and site cannot be separated"
            )
            continue
        if f.kind != "continuous" and f.name not in per_breast:
            notes.append(f"{f.name} varies within a breast, so it is not a breast-level term")
            continue
        kept.append(f)
    return kept, notes


def _pool_rare(values: pd.Series, y: pd.Series, factor: Factor) -> tuple[pd.Series, list[str]]:
    """Pool rare levels into 'other' (when there are two or more of them)."""
    counts = pd.DataFrame({"v": values, "y": y}).groupby("v")["y"].agg(["size", "sum"])
    rare = counts.index[(counts["sum"] < MIN_EVENTS) | (counts["size"] < MIN_UNITS)].tolist()
    if len(rare) < 2:
        return values, []
    return (
        values.where(~values.isin(rare), OTHER),
        [f"{factor.name}: rare levels {', '.join(map(str, rare))} pooled as '{OTHER}'"],
    )


def _separated(values: pd.Series, y: pd.Series) -> list[str]:
    """Levels where every breast is negative (or every one positive): their odds ratio does not exist."""
    counts = pd.DataFrame({"v": values, "y": y}).groupby("v")["y"].agg(["size", "sum"])
    return counts.index[(counts["sum"] == 0) | (counts["sum"] == counts["size"])].tolist()


def _reference(values: pd.Series, factor: Factor) -> str:
    """The lowest recorded level of an ordered factor, else the most common level (ties: factor order)."""
    counts = values.value_counts()
    order = [lv for lv in (*factor.levels, OTHER) if lv in counts.index]
    if factor.ordered:
        recorded = [lv for lv in order if lv not in (MISSING, OTHER)]
        if recorded:
            return recorded[0]
    return str(counts.reindex(order).idxmax())


def _design_block(values: pd.Series, factor: Factor) -> pd.DataFrame:
    """Treatment-coded dummies (reference = lowest ordered level or the most common level)."""
    if factor.kind == "continuous":
        sd = values.std()
        return pd.DataFrame({f"{factor.name} (per SD = {sd:.3g})": (values - values.mean()) / sd})
    ref = _reference(values, factor)
    present = set(values.unique())
    order = [lv for lv in (*factor.levels, OTHER) if lv in present and lv != ref]
    codes = values.to_numpy(dtype=object)
    return pd.DataFrame(
        {f"{factor.name}={lv} (vs {ref})": (codes == lv).astype(float) for lv in order}, index=values.index
    )


def _aliased(block: pd.DataFrame, design: pd.DataFrame) -> str:
    """The existing column a new block's column (almost) duplicates, or ''."""
    for new in block.columns:
        for old in design.columns:
            if design[old].std() == 0 or block[new].std() == 0:
                continue
            r = np.corrcoef(design[old], block[new])[0, 1]
            if abs(r) > ALIAS_CORR:
                return f"'{new}' and '{old}' are almost the same variable (r = {r:.2f}), so their effects cannot be told apart"
    return ""


def _usable_rows(data: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, list[str]]:
    """Drop breasts without age (or another continuous term), pool rare levels, drop separated levels."""
    notes = []
    keep = pd.Series(True, index=data.index)
    for col in (["age"] if spec.use_age else []) + [f.name for f in spec.factors if f.kind == "continuous"]:
        absent = data[col].isna()
        if absent.any():
            notes.append(f"{int(absent.sum())} breast(s) without {col} dropped")
        keep &= ~absent
    data = data[keep].copy()
    for f in spec.factors:
        if f.kind == "continuous":
            continue
        data[f.name], pooled = _pool_rare(data[f.name].astype(str), data["cancer"], f)
        notes += pooled
        separated = _separated(data[f.name], data["cancer"])
        if separated and data[f.name].nunique() - len(separated) < 2:
            notes.append(
                f"{f.name}: level(s) {', '.join(map(str, separated))} have no cancers (or only cancers) "
                "and no other level is left to compare with: not a term"
            )
            data[f.name] = MISSING  # one value: build_design leaves it out
        elif separated:
            gone = data[f.name].isin(separated)
            notes.append(
                f"{int(gone.sum())} breast(s) at {f.name} level(s) {', '.join(map(str, separated))} "
                "dropped (no cancers there, so no odds ratio)"
            )
            data = data[~gone]
    return data, notes


def build_design(
    breasts: pd.DataFrame, spec: ModelSpec
) -> tuple[pd.DataFrame, pd.Series, pd.Series, list[str], int]:
    """(X, y, groups, notes, n_dropped) for one model; X holds a constant and the kept terms.

    ``X.attrs['blocks']`` maps each factor (and age) to its columns, for the joint tests.
    """
    data, notes = _usable_rows(breasts.iloc[spec.rows], spec)
    notes = list(spec.notes) + notes
    y = data["cancer"].astype(float)
    design = pd.DataFrame({"const": 1.0}, index=data.index)
    blocks: dict[str, list[str]] = {}
    if spec.use_age:
        design[AGE_TERM] = (data["age"] - AGE_CENTER) / AGE_SCALE
        blocks["age"] = [AGE_TERM]
    for f in spec.factors:
        if data[f.name].nunique() < 2:
            if not any(n.startswith(f"{f.name}: level(s)") for n in notes):
                notes.append(f"{f.name} has one value in this model's breasts: not a term")
            continue
        block = _design_block(data[f.name], f)
        alias = _aliased(block, design)
        if alias:
            notes.append(f"{f.name} left out: {alias}")
            continue
        design = pd.concat([design, block], axis=1)
        blocks[f.name] = list(block.columns)
    design.attrs["blocks"] = blocks
    return design, y, data["patient_id"], notes, len(spec.rows) - len(data)


def _pattern_start(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """The estimate from the distinct (design row, label) patterns weighted by their counts, or None when
    rows are nearly all distinct. The same maximum likelihood as from every row, from a few thousand rows
    instead of a million: started there, the clustered fit on every row converges in one or two steps."""
    rows = pd.DataFrame(np.column_stack([x, y])).value_counts(sort=False)
    if len(rows) > len(y) // 10:
        return None
    patterns = np.array(rows.index.tolist(), dtype=float)
    model = sm.GLM(
        patterns[:, -1], patterns[:, :-1], family=sm.families.Binomial(), freq_weights=rows.to_numpy()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = model.fit(maxiter=100)
    return np.asarray(fitted.params) if fitted.converged else None


def fit_logistic(design: pd.DataFrame, y: pd.Series, groups: pd.Series):
    """Logistic GLM with patient-clustered sandwich errors; returns (result, converged)."""
    codes = pd.factorize(groups)[0]
    x, outcome = design.to_numpy(dtype=float), y.to_numpy(dtype=float)
    model = sm.GLM(outcome, x, family=sm.families.Binomial())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = _pattern_start(x, outcome)
        result = model.fit(cov_type="cluster", cov_kwds={"groups": codes}, maxiter=100, start_params=start)
    converged = bool(result.converged) and not any("converge" in str(w.message).lower() for w in caught)
    return result, converged


def odds_ratio_rows(name: str, result, columns: list[str]) -> tuple[list[dict], list[str]]:
    """Odds-ratio rows of the fitted terms, and the terms left out as unstable (separation)."""
    ci = np.asarray(result.conf_int())
    params, pvalues, se = np.asarray(result.params), np.asarray(result.pvalues), np.asarray(result.bse)
    rows, unstable = [], []
    for i, col in enumerate(columns):
        if col == "const":
            continue
        if not np.isfinite(se[i]) or se[i] > MAX_LOG_SE or abs(params[i]) > MAX_LOG_OR:
            unstable.append(col)
            continue
        rows.append(
            {
                "model": name,
                "term": col,
                "odds_ratio": float(np.exp(params[i])),
                "ci_low": float(np.exp(ci[i, 0])),
                "ci_high": float(np.exp(ci[i, 1])),
                "p_value": float(pvalues[i]),
            }
        )
    return rows, unstable


def joint_test_rows(name: str, result, design: pd.DataFrame, *, left_out: Collection[str] = ()) -> list[dict]:
    """One Wald test per factor of a fitted model: all its terms at once, with the clustered covariance.

    This is the test that may headline a multi-level factor (a level's own interval is one of several).
    ``left_out``: terms not tested (unstable ones, and levels that are a site: their contrast is the site's).
    """
    columns = list(design.columns)
    params, cov = np.asarray(result.params), np.asarray(result.cov_params())
    rows = []
    for factor, terms in design.attrs.get("blocks", {}).items():
        idx = [columns.index(t) for t in terms if t not in left_out]
        if not idx:
            continue
        b, v = params[idx], cov[np.ix_(idx, idx)]
        try:
            statistic = float(b @ np.linalg.solve(v, b))
        except np.linalg.LinAlgError:
            continue
        p = float(stats.chi2.sf(statistic, len(idx)))
        rows.append(
            {"model": name, "factor": factor, "n_terms": len(idx), "statistic": statistic, "p_value": p}
        )
    return rows


def clustered_association_p(frame: pl.DataFrame, factor: Factor, unit: str) -> float:
    """p of the association of a factor with cancer over breasts or images, clustered by woman.

    The logistic regression of the unit's label on the factor's levels alone, with a Wald test of all
    levels at once on the patient-clustered (sandwich) covariance: the chi-square test's question without
    its assumption that a woman's breasts or images are independent. Levels without a cancer (or without a
    non-cancer) have no odds ratio and are left out; NaN when fewer than two levels remain.
    """
    sub = frame.filter(pl.col(factor.name) != MISSING)
    if unit == "breast":
        sub = sub.group_by("breast_id").agg(
            pl.col("patient_id").first(), pl.col("cancer").max(), pl.col(factor.name).first()
        )
    data = sub.select(["patient_id", "cancer", factor.name]).to_pandas()
    counts = data.groupby(factor.name)["cancer"].agg(["size", "sum"])
    usable = counts.index[(counts["sum"] > 0) & (counts["sum"] < counts["size"])]
    data = data[data[factor.name].isin(usable)]
    if len(usable) < 2:
        return float("nan")
    block = _design_block(data[factor.name].astype(str), factor)
    design = pd.concat([pd.DataFrame({"const": 1.0}, index=data.index), block], axis=1)
    try:
        result, _ = fit_logistic(design, data["cancer"].astype(float), data["patient_id"])
    except (np.linalg.LinAlgError, ValueError):
        return float("nan")
    design.attrs["blocks"] = {factor.name: list(block.columns)}
    rows = joint_test_rows("", result, design)
    return rows[0]["p_value"] if rows else float("nan")


def model_specs(
    breasts: pd.DataFrame, factors: list[Factor], usable: list[Factor], notes: list[str]
) -> list[ModelSpec]:
    """All breasts; one model per site (when several sites); age alone (the continuous trend).

    ``usable``: the factors that may be terms, with the ``notes`` on the others (model_factors).
    """
    all_rows = np.arange(len(breasts))
    age_flagged = any(f.binned_from == "age" and f.post_outcome for f in factors)
    has_age = bool(breasts["age"].notna().any()) and not age_flagged
    specs = [ModelSpec("all breasts", all_rows, usable, has_age, notes)]
    sites = [f for f in usable if f.name == "site_id"]
    if sites:
        levels = [lv for lv in sites[0].levels if lv != MISSING]
        if 2 <= len(levels) <= MAX_SITES:
            others = [f for f in usable if f.name != "site_id"]
            for level in levels:
                rows = np.flatnonzero((breasts["site_id"] == level).to_numpy())
                specs.append(ModelSpec(f"site {level}", rows, others, has_age))
    if has_age:
        specs.append(ModelSpec(AGE_ALONE, all_rows, []))
    return specs


class ModelFits(NamedTuple):
    """The odds ratios, the models (n used and dropped, terms, notes) and each factor's joint Wald test."""

    odds: pd.DataFrame
    models: pd.DataFrame
    joint: pd.DataFrame


def fit_models(frame: pl.DataFrame, factors: list[Factor], site_aliases: Collection[str] = ()) -> ModelFits:
    """Every model spec fitted: odds ratios, the models table and the joint test of each factor per model.

    ``site_aliases``: 'factor=level' pairs whose breasts are one site's (missingness.site_structure); their
    terms stay in the model (and the odds-ratio table) but out of the factor's joint test.
    """
    usable, left_out = model_factors(frame, factors)
    breasts = breast_table(frame, usable)
    or_rows, model_rows, joint_rows = [], [], []
    for spec in model_specs(breasts, factors, usable, left_out):
        design, y, groups, notes, n_dropped = build_design(breasts, spec)
        n_cancer = int(y.sum())
        info = {
            "model": spec.name,
            "terms": ", ".join(design.columns[1:]),
            "n_breasts": len(y),
            "n_patients": int(groups.nunique()),
            "n_cancer": n_cancer,
            "n_dropped": n_dropped,
        }
        if design.shape[1] < 2 or n_cancer < MIN_EVENTS or n_cancer == len(y):
            model_rows.append(
                {
                    **info,
                    "converged": False,
                    "notes": "; ".join([*notes, "not fitted: too few cancers or no terms"]),
                }
            )
            continue
        try:
            result, converged = fit_logistic(design, y, groups)
        except (np.linalg.LinAlgError, ValueError) as exc:
            model_rows.append(
                {**info, "converged": False, "notes": "; ".join([*notes, f"fit failed: {exc}"])}
            )
            continue
        rows, unstable = odds_ratio_rows(spec.name, result, list(design.columns))
        or_rows += rows
        if spec.name != AGE_ALONE:
            aliased = [t for t in design.columns if t.split(" (vs")[0] in site_aliases]
            joint_rows += joint_test_rows(spec.name, result, design, left_out=[*unstable, *aliased])
        if unstable:
            notes.append(f"{', '.join(unstable)}: estimate unstable (near-separation), not reported")
        model_rows.append({**info, "converged": converged, "notes": "; ".join(notes)})
        log.info("model %s: %d breasts, %d cancers, %d dropped", spec.name, len(y), n_cancer, n_dropped)
    return ModelFits(
        pd.DataFrame(or_rows, columns=OR_COLUMNS),
        pd.DataFrame(model_rows, columns=MODEL_COLUMNS),
        pd.DataFrame(joint_rows, columns=JOINT_COLUMNS),
    )


def age_curve(frame: pl.DataFrame, points: int = 60) -> pd.DataFrame:
    """Breast-level cancer probability by age from the age-alone logistic model, with 95% bands.

    Empty when age is not recorded. Columns: age, rate, ci_low, ci_high.
    """
    breasts = breast_table(frame, []).dropna(subset=["age"])
    empty = pd.DataFrame(columns=["age", "rate", "ci_low", "ci_high"])
    if breasts.empty or breasts["cancer"].nunique() < 2 or breasts["age"].nunique() < 2:
        return empty  # one age (or one outcome) has no curve: the design would be singular
    design = pd.DataFrame({"const": 1.0, AGE_TERM: (breasts["age"] - AGE_CENTER) / AGE_SCALE})
    try:
        result, _ = fit_logistic(design, breasts["cancer"], breasts["patient_id"])
    except np.linalg.LinAlgError:  # e.g. fewer women than clusters need
        log.warning("age curve: the age-alone model cannot be fitted on %d breasts; not drawn", len(breasts))
        return empty
    low, high = breasts["age"].quantile([0.005, 0.995])
    grid = np.linspace(low, high, points)
    pred = result.get_prediction(np.column_stack([np.ones(points), (grid - AGE_CENTER) / AGE_SCALE]))
    frame_ci = pred.summary_frame(alpha=0.05)
    return pd.DataFrame(
        {
            "age": grid,
            "rate": frame_ci["mean"].to_numpy(),
            "ci_low": frame_ci["mean_ci_lower"].to_numpy(),
            "ci_high": frame_ci["mean_ci_upper"].to_numpy(),
        }
    )
