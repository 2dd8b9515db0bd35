"""Where values are missing (by site), and how sites and machines are laid out.

Missingness by site shows structural gaps (RSNA records density at site 1 only), which decide how
the regression must be fitted. The site x machine table shows whether machines are nested in
sites: then a machine effect cannot be told apart from a site effect, whatever the model.
"""

from __future__ import annotations

import pandas as pd
import polars as pl

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
