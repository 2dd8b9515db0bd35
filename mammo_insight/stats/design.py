"""The design matrix of a logistic model: explicit missing levels, rare levels pooled, aliased and
separating factors left out with a note, unusable breasts counted (see stats/regression.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mammo_insight.stats.factors import MISSING, Factor

AGE_CENTER = 60.0
AGE_SCALE = 10.0
AGE_TERM = "age (per 10 years)"
MIN_EVENTS = 5  # fewer cancers than this in a level: pooled into OTHER
MIN_UNITS = 30  # fewer breasts than this in a level: pooled too
ALIAS_CORR = 0.95  # a factor this correlated with an earlier one is left out of the model
OTHER = "other"
POOLED = " + "  # joins an ordered factor's neighbouring levels pooled into one ('A + B')


@dataclass
class ModelSpec:
    """One model: its name, the breasts it uses and the factors it tries."""

    name: str
    rows: np.ndarray
    factors: list[Factor]
    use_age: bool = True
    notes: list[str] = field(default_factory=list)


def _pool_rare(values: pd.Series, y: pd.Series, factor: Factor) -> tuple[pd.Series, list[str]]:
    """Pool rare levels: an ordered factor's into their neighbours (density A with B, never A with D),
    another factor's into 'other' (when there are two or more of them)."""
    counts = pd.DataFrame({"v": values, "y": y}).groupby("v")["y"].agg(["size", "sum"])
    if factor.ordered:
        return _pool_neighbours(values, counts, factor)
    rare = counts.index[(counts["sum"] < MIN_EVENTS) | (counts["size"] < MIN_UNITS)].tolist()
    if len(rare) < 2:
        return values, []
    return (
        values.where(~values.isin(rare), OTHER),
        [f"{factor.name}: rare levels {', '.join(map(str, rare))} pooled as '{OTHER}'"],
    )


def _pool_neighbours(values: pd.Series, counts: pd.DataFrame, factor: Factor) -> tuple[pd.Series, list[str]]:
    """An ordered factor's rare recorded levels merged, one at a time, with the smaller of their neighbours
    until every run of levels has MIN_EVENTS cancers and MIN_UNITS breasts (or one run is left)."""
    runs = [[lv] for lv in factor.levels if lv in counts.index and lv != MISSING]

    def rare(run: list[str]) -> bool:
        return counts.loc[run, "sum"].sum() < MIN_EVENTS or counts.loc[run, "size"].sum() < MIN_UNITS

    while len(runs) > 1 and any(rare(run) for run in runs):
        i = next(i for i, run in enumerate(runs) if rare(run))
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(runs)]
        j = min(neighbours, key=lambda j: counts.loc[runs[j], "size"].sum())
        lo, hi = sorted((i, j))
        runs[lo : hi + 1] = [runs[lo] + runs[hi]]
    pooled = {lv: POOLED.join(run) for run in runs if len(run) > 1 for lv in run}
    if not pooled:
        return values, []
    names = ", ".join(f"'{POOLED.join(run)}'" for run in runs if len(run) > 1)
    return values.replace(pooled), [f"{factor.name}: sparse levels pooled with their neighbours as {names}"]


def _position(level: str, factor: Factor) -> int:
    """A level's place in the factor's order: a pooled run ('A + B') takes its first level's, 'other' last."""
    places = [factor.levels.index(part) for part in level.split(POOLED) if part in factor.levels]
    return min(places) if places else len(factor.levels)


def _separated(values: pd.Series, y: pd.Series) -> list[str]:
    """Levels where every breast is negative (or every one positive): their odds ratio does not exist."""
    counts = pd.DataFrame({"v": values, "y": y}).groupby("v")["y"].agg(["size", "sum"])
    return counts.index[(counts["sum"] == 0) | (counts["sum"] == counts["size"])].tolist()


def _reference(values: pd.Series, factor: Factor) -> str:
    """The lowest recorded level of an ordered factor, else the most common level (ties: factor order)."""
    counts = values.value_counts()
    order = sorted(counts.index, key=lambda lv: _position(lv, factor))
    if factor.ordered:
        recorded = [lv for lv in order if lv not in (MISSING, OTHER)]
        if recorded:
            return recorded[0]
    return str(counts.reindex(order).idxmax())


def design_block(values: pd.Series, factor: Factor) -> pd.DataFrame:
    """Treatment-coded dummies (reference = lowest ordered level or the most common level)."""
    if factor.kind == "continuous":
        sd = values.std()
        return pd.DataFrame({f"{factor.name} (per SD = {sd:.3g})": (values - values.mean()) / sd})
    ref = _reference(values, factor)
    order = sorted((lv for lv in values.unique() if lv != ref), key=lambda lv: _position(lv, factor))
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
        block = design_block(data[f.name], f)
        alias = _aliased(block, design)
        if alias:
            notes.append(f"{f.name} left out: {alias}")
            continue
        design = pd.concat([design, block], axis=1)
        blocks[f.name] = list(block.columns)
    design.attrs["blocks"] = blocks
    return design, y, data["patient_id"], notes, len(spec.rows) - len(data)
