"""Where values are missing (by site), and how sites and machines are laid out.

Missingness by site shows structural gaps (RSNA records density at site 1 only), which decide how
the regression must be fitted. The site x machine table shows whether machines are nested in
sites: then a machine effect cannot be told apart from a site effect, whatever the model.
"""

from __future__ import annotations

import pandas as pd
import polars as pl

from mammo_insight.stats.factors import Factor

MISSINGNESS_COLUMNS = ["column", "site_id", "missing_fraction"]
ALL_SITES = "all"
NOT_REPORTED = {"patient_id", "image_id", "breast_id", "image_path", "site_id"}


def missingness_by_site(table: pd.DataFrame) -> pd.DataFrame:
    """column, site_id, missing_fraction for every reported column, per site and over all sites (``all``)."""
    columns = [c for c in table.columns if c not in NOT_REPORTED]
    frame = pl.from_pandas(
        table[columns]
        .isna()
        .astype("int8")
        .assign(site_id=table["site_id"].astype(str).where(table["site_id"].notna(), "missing"))
    )
    means = [pl.col(c).mean() for c in columns]
    per_site = frame.group_by("site_id").agg(means)
    overall = frame.select(means).with_columns(pl.lit(ALL_SITES).alias("site_id"))
    wide = pl.concat(
        [overall.select(["site_id", *columns]), per_site.select(["site_id", *columns])]
    ).to_pandas()
    if table["site_id"].isna().all():
        wide = wide[wide["site_id"] == ALL_SITES]
    long = wide.melt(id_vars="site_id", var_name="column", value_name="missing_fraction")
    site_order = [ALL_SITES] + sorted(s for s in wide["site_id"] if s != ALL_SITES)
    long["site_id"] = pd.Categorical(long["site_id"], site_order, ordered=True)
    long["column"] = pd.Categorical(long["column"], columns, ordered=True)
    long = long.sort_values(["column", "site_id"])
    long[["column", "site_id"]] = long[["column", "site_id"]].astype(str)
    return long[MISSINGNESS_COLUMNS].reset_index(drop=True)


def site_machine_table(table: pd.DataFrame) -> pd.DataFrame:
    """Images per machine (rows) and site (columns); empty when either column is entirely empty."""
    if table["site_id"].isna().all() or table["machine_id"].isna().all():
        return pd.DataFrame()
    crosstab = pd.crosstab(
        table["machine_id"].fillna("missing").astype(str), table["site_id"].fillna("missing").astype(str)
    )
    numeric = pd.to_numeric(pd.Series(crosstab.index), errors="coerce")
    if numeric.notna().all():
        crosstab = crosstab.iloc[numeric.argsort(kind="stable").to_numpy()]
    crosstab.index.name, crosstab.columns.name = "machine_id", "site_id"
    return crosstab


def nesting_remark(crosstab: pd.DataFrame) -> str:
    """Plain words on the site x machine structure and what it means for confounding."""
    if crosstab.empty:
        return "Site or machine is not recorded, so their structure cannot be examined."
    sites_per_machine = (crosstab > 0).sum(axis=1)
    n_machines, n_sites = crosstab.shape
    if (sites_per_machine == 1).all():
        return (
            f"Each of the {n_machines} machines appears at exactly one of the {n_sites} site(s): machines are "
            "nested in sites. A machine's cancer rate mixes the machine with its site's population and "
            "practice (age mix, recording, referral), so machine and site effects cannot be separated; "
            "compare machines only within a site."
        )
    shared = sites_per_machine[sites_per_machine > 1].index.tolist()
    return (
        f"{len(shared)} of {n_machines} machines appear at more than one site ({', '.join(shared[:5])}): "
        "site and machine are partly crossed, so their effects can be separated only on those machines."
    )


ALIAS_JACCARD = 0.99  # a level whose images are (almost) exactly one site's images is that site
MIN_EXPECTED_AT_SITE = 10.0  # a level expected this often at a site and never seen there is unrecorded


def site_structure(frame: pl.DataFrame, factors: list[Factor]) -> tuple[list[str], dict[str, str]]:
    """Sentences on levels that are a site (structural aliasing) and levels never recorded at a site, and
    the aliased levels ('density=missing' -> '2').

    ``frame`` is the study frame (one row per labelled image, factor columns as levels, ``site_id``
    present as a factor when recorded). A level holding the same images as a site (Jaccard >= 0.99)
    makes its odds ratio a site contrast. A level that the other sites record often enough to expect
    at least 10 images at a site, yet that site never has, is probably not recorded there (a 0 that
    means 'not asked'), like missingness that looks like a value.
    """
    out: list[str] = []
    aliases: dict[str, str] = {}
    if "site_id" not in frame.columns:
        return out, aliases
    sites = [s for s in frame["site_id"].unique(maintain_order=True).to_list() if s != "missing"]
    if len(sites) < 2:
        return out, aliases
    for factor in factors:
        name = factor.name
        skip = name in ("site_id", "machine_id") or factor.kind == "continuous" or factor.post_outcome
        if skip or name not in frame.columns:
            continue
        counts = frame.group_by([name, "site_id"]).len().to_pandas()
        table = counts.pivot(index=name, columns="site_id", values="len").fillna(0).astype(int)
        per_level, per_site = table.sum(axis=1), table.sum(axis=0)
        for level in table.index:
            for s in sites:
                both = int(table.loc[level, s]) if s in table.columns else 0
                union = int(per_level[level] + per_site.get(s, 0) - both)
                if union and both / union >= ALIAS_JACCARD:
                    aliases[f"{name}={level}"] = str(s)
                    same = "exactly" if both == union else f"almost exactly ({both:,} of {union:,})"
                    out.append(
                        f"{name}={level} is {same} the images of site {s}: its rate and odds ratio are a "
                        f"contrast of site {s} with the other sites, not an effect of {name}."
                    )
        recorded = table.drop(index="missing", errors="ignore")
        if ((recorded > 0).sum(axis=1) <= 1).all():
            continue  # every level at one site only: nested in sites (like machines), not a recording gap
        for s in sites:
            n_here = int(recorded[s].sum()) if s in recorded.columns else 0
            others = recorded.drop(columns=s)
            if n_here == 0 or others.to_numpy().sum() == 0:
                continue  # nothing recorded at this site: the missingness findings say so
            share = others.sum(axis=1) / others.to_numpy().sum()
            for level in recorded.index:
                expected = n_here * share[level]
                if recorded.loc[level, s] == 0 and expected >= MIN_EXPECTED_AT_SITE:
                    out.append(
                        f"{name}={level} never occurs at site {s} (0 of {n_here:,} images, against "
                        f"{100 * share[level]:.1f}% at the other sites): possibly never recorded there (or a "
                        "different population), so its contrast mixes recording with the site."
                    )
    return out, aliases
