"""The synthetic cohort's metadata table: planted, documented effects that later analyses must recover.

Generative model (one woman -> two breasts -> images), chosen to mirror RSNA's train.csv:

- site 1 (49 % of women) and site 2; machines are nested in sites (site 1: 49, 216, 93, 210, 170, 190,
  197; site 2: 21, 29, 48) with RSNA-like shares. Site and machine have NO direct effect on cancer by
  default: any crude association is confounding through age/density or chance. ``SCANNER_EFFECTS``
  (synth --scanner-signature) plants machine-specific cancer rates (``machine_log_or``), which the
  images then betray through a machine-specific intensity curve (synth.images.scanner_curve).
- age ~ Normal(58.5, 10) rounded, clipped to 35-90; a tiny fraction recorded missing.
- density (A-D) is a latent for every woman; it is RECORDED only at site 1 (empty at site 2), as in RSNA.
- implant only at site 1 (about 5 % of its women, about 3 % overall); no effect on cancer.
- each breast independently: logit P(cancer) = intercept + log(OR_age) * (age - 60) / 10 + log(OR_density),
  intercept solved so the mean probability over the drawn women equals ``prevalence``.
- post-outcome columns, tied to the label the way RSNA's are: every cancer is biopsied; invasive is a
  subset of cancers; at site 1 cancers have BIRADS 0, at site 2 BIRADS is missing; a negative breast is
  "recalled" with a site-specific probability: recalled negatives are difficult_negative_case=True with
  BIRADS 0 and a share of them biopsied (site 2: biopsied ones have BIRADS missing); other negatives have
  BIRADS 1/2/missing at site 1 and missing at site 2.
- every breast has CC and MLO; a few women have one extra image (a repeated CC/MLO or ML/LM/AT).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

RSNA_COLUMNS = [
    "site_id",
    "patient_id",
    "image_id",
    "laterality",
    "view",
    "age",
    "cancer",
    "biopsy",
    "invasive",
    "BIRADS",
    "implant",
    "density",
    "machine_id",
    "difficult_negative_case",
]
DENSITY_LEVELS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class TrueEffects:
    """The planted effects; tests and analyses import ``TRUE_EFFECTS`` to check they are recovered.

    Odds ratios are on breast-level cancer; age is centred at ``age_center`` and scaled per 10 years.
    """

    age_or_per_10y: float = 1.6
    age_center: float = 60.0
    density_or: dict[str, float] = field(default_factory=lambda: {"A": 1.0, "B": 1.4, "C": 2.0, "D": 2.8})
    density_share: dict[str, float] = field(
        default_factory=lambda: {"A": 0.11, "B": 0.43, "C": 0.41, "D": 0.05}
    )
    site_share: dict[str, float] = field(default_factory=lambda: {"1": 0.49, "2": 0.51})
    machines: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "1": {
                "49": 0.80,
                "216": 0.065,
                "93": 0.065,
                "210": 0.035,
                "170": 0.03,
                "190": 0.004,
                "197": 0.001,
            },
            "2": {"21": 0.33, "29": 0.33, "48": 0.34},
        }
    )
    machine_log_or: dict[str, float] = field(default_factory=dict)  # per machine; empty = no machine effect
    site_or: float = 1.0  # no direct site effect (documented null)
    machine_or: float = 1.0  # no direct machine effect (documented null)
    implant_or: float = 1.0  # no implant effect
    implant_rate_site1: float = 0.05
    age_mean: float = 58.5
    age_sd: float = 10.0
    age_range: tuple[int, int] = (35, 90)
    age_missing_rate: float = 0.001
    density_missing_rate_site1: float = 0.002
    invasive_given_cancer: float = 0.70
    recall_rate_negative: dict[str, float] = field(default_factory=lambda: {"1": 0.17, "2": 0.105})
    biopsy_given_recall: dict[str, float] = field(default_factory=lambda: {"1": 0.34, "2": 0.045})
    # BIRADS of non-recalled negatives at site 1: 1, 2 or missing
    birads_site1_negative: dict[str, float] = field(
        default_factory=lambda: {"1": 0.667, "2": 0.09, "": 0.243}
    )
    extra_image_rate: float = 0.08
    extra_views: dict[str, float] = field(
        default_factory=lambda: {"MLO": 0.35, "CC": 0.25, "ML": 0.15, "LM": 0.10, "AT": 0.15}
    )

    def odds_ratios(self) -> dict[str, float]:
        """The planted breast-level odds ratios by name (density vs A; site, machine, implant: none)."""
        ors = {"age_per_10y": self.age_or_per_10y}
        ors.update(
            {f"density_{k}_vs_A": v / self.density_or["A"] for k, v in self.density_or.items() if k != "A"}
        )
        ors.update({"site_2_vs_1": self.site_or, "machine": self.machine_or, "implant": self.implant_or})
        return ors


TRUE_EFFECTS = TrueEffects()
# machine-specific cancer rates, as RSNA's (0 % on machine 210, 2.6 % on 170): what a CNN that recognises the
# scanner could exploit
SCANNER_MACHINE_LOG_OR = {
    "49": 0.0,
    "216": 0.6,
    "93": -0.6,
    "210": -1.5,
    "170": 1.0,
    "21": 0.4,
    "29": -0.4,
    "48": 0.8,
}
SCANNER_EFFECTS = TrueEffects(machine_log_or=SCANNER_MACHINE_LOG_OR)
# metadata effects a small cohort can detect (the demo's 120 women): age OR 3 per 10 years, density D 8x A
STRONG_AGE_OR = 3.0
STRONG_DENSITY_OR = {"A": 1.0, "B": 2.0, "C": 4.0, "D": 8.0}


def effects_for(*, strong: bool = False, scanner_signature: bool = False) -> TrueEffects:
    """The planted effects for synth's options: the documented defaults, stronger metadata effects, a scanner."""
    return replace(
        TRUE_EFFECTS,
        **({"age_or_per_10y": STRONG_AGE_OR, "density_or": dict(STRONG_DENSITY_OR)} if strong else {}),
        **({"machine_log_or": dict(SCANNER_MACHINE_LOG_OR)} if scanner_signature else {}),
    )


def solve_intercept(linear: np.ndarray, prevalence: float) -> float:
    """The intercept b0 such that mean(expit(b0 + linear)) == prevalence."""
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
    return brentq(lambda b: float(expit(b + linear).mean()) - prevalence, -40.0, 40.0, xtol=1e-10)


def _choice(rng: np.random.Generator, shares: dict[str, float], size: int) -> np.ndarray:
    keys = list(shares)
    p = np.array([shares[k] for k in keys], dtype=float)
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=size, p=p / p.sum())]


def _women(rng: np.random.Generator, n: int, eff: TrueEffects) -> pd.DataFrame:
    patient_id = np.sort(rng.choice(max(65536, 8 * n), size=n, replace=False) + 1)
    site = _choice(rng, eff.site_share, n)
    machine = np.empty(n, dtype=object)
    for s, shares in eff.machines.items():
        mask = site == s
        machine[mask] = _choice(rng, shares, int(mask.sum()))
    lo, hi = eff.age_range
    age = np.clip(np.round(rng.normal(eff.age_mean, eff.age_sd, n)), lo, hi)
    density = _choice(rng, eff.density_share, n)
    implant = ((site == "1") & (rng.random(n) < eff.implant_rate_site1)).astype(int)
    return pd.DataFrame(
        {
            "patient_id": patient_id,
            "site_id": site,
            "machine_id": machine,
            "age": age,
            "density_true": density,
            "implant": implant,
        }
    )


def _breasts(
    rng: np.random.Generator, women: pd.DataFrame, prevalence: float, eff: TrueEffects
) -> pd.DataFrame:
    b = women.loc[women.index.repeat(2)].reset_index(drop=True)
    b["laterality"] = np.tile(["L", "R"], len(women))
    n = len(b)
    linear = (
        np.log(eff.age_or_per_10y) * (b["age"].to_numpy() - eff.age_center) / 10.0
        + np.log(b["density_true"].map(eff.density_or).to_numpy(dtype=float))
        + b["machine_id"].map(eff.machine_log_or).fillna(0.0).to_numpy(dtype=float)
    )
    if 0.0 < prevalence < 1.0:
        b["p_cancer"] = expit(solve_intercept(linear, prevalence) + linear)
    else:  # degenerate cohorts (all negative / all positive) are allowed for testing pipelines
        b["p_cancer"] = float(prevalence >= 1.0)
    cancer = (rng.random(n) < b["p_cancer"].to_numpy()).astype(int)
    site = b["site_id"].to_numpy()
    u_recall, u_biopsy, u_inv, u_birads = rng.random((4, n))
    recall_p = np.where(site == "1", eff.recall_rate_negative["1"], eff.recall_rate_negative["2"])
    biopsy_p = np.where(site == "1", eff.biopsy_given_recall["1"], eff.biopsy_given_recall["2"])
    recalled_neg = (cancer == 0) & (u_recall < recall_p)
    biopsied_neg = recalled_neg & (u_biopsy < biopsy_p)
    b["cancer"] = cancer
    b["biopsy"] = ((cancer == 1) | biopsied_neg).astype(int)
    b["invasive"] = ((cancer == 1) & (u_inv < eff.invasive_given_cancer)).astype(int)
    b["difficult_negative_case"] = recalled_neg
    cuts = np.cumsum(list(eff.birads_site1_negative.values()))
    site1_neg = np.array(list(eff.birads_site1_negative), dtype=object)[
        np.minimum(np.searchsorted(cuts / cuts[-1], u_birads, side="right"), len(cuts) - 1)
    ]
    birads = np.full(n, "", dtype=object)
    s1 = site == "1"
    birads[s1 & (cancer == 0)] = site1_neg[s1 & (cancer == 0)]
    birads[s1 & ((cancer == 1) | recalled_neg)] = "0"
    birads[~s1 & recalled_neg & ~biopsied_neg] = "0"
    b["BIRADS"] = birads
    return b


def _images(rng: np.random.Generator, breasts: pd.DataFrame, eff: TrueEffects) -> pd.DataFrame:
    rows = breasts.loc[breasts.index.repeat(2)].reset_index(drop=True)
    rows["view"] = np.tile(["CC", "MLO"], len(breasts))
    women = breasts["patient_id"].unique()
    has_extra = rng.random(len(women)) < eff.extra_image_rate
    extra_pid = women[has_extra]
    extra_lat = rng.choice(["L", "R"], size=len(extra_pid))
    extra_view = _choice(rng, eff.extra_views, len(extra_pid))
    src = breasts.set_index(["patient_id", "laterality"])
    extra = src.loc[list(zip(extra_pid, extra_lat, strict=True))].reset_index()
    extra["view"] = extra_view
    table = pd.concat([rows, extra], ignore_index=True)
    table["image_id"] = rng.choice(2**31 - 10**6, size=len(table), replace=False) + 10**6
    order = np.lexsort((table["image_id"].to_numpy(), table["patient_id"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def make_synthetic_table(
    n_patients: int, seed: int, prevalence: float = 0.2, effects: TrueEffects = TRUE_EFFECTS
) -> pd.DataFrame:
    """One row per image with RSNA's columns plus latent truth columns (density_true, p_cancer).

    Fast (vectorised, no images): 5,000 women take well under a second. Values are strings
    where RSNA's CSV has empties (density, BIRADS), so writing ``table[RSNA_COLUMNS]`` gives RSNA's format.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    rng = np.random.default_rng(seed)
    women = _women(rng, n_patients, effects)
    breasts = _breasts(rng, women, prevalence, effects)
    table = _images(rng, breasts, effects)
    recorded = table["density_true"].where(table["site_id"] == "1", "")
    # density and age missingness are per woman, like RSNA
    pid = table["patient_id"].to_numpy()
    u_d = _per_woman(rng, pid)
    u_a = _per_woman(rng, pid)
    table["density"] = recorded.where(u_d >= effects.density_missing_rate_site1, "")
    table["age_true"] = table["age"]
    table["age"] = table["age"].where(u_a >= effects.age_missing_rate)
    table["age"] = table["age"].astype("Int64")
    return table[RSNA_COLUMNS + ["density_true", "age_true", "p_cancer"]]


def _per_woman(rng: np.random.Generator, patient_id: np.ndarray) -> np.ndarray:
    """One uniform draw per woman, broadcast to her rows."""
    uniq, inverse = np.unique(patient_id, return_inverse=True)
    return rng.random(len(uniq))[inverse]


def breast_level(table: pd.DataFrame) -> pd.DataFrame:
    """One row per breast (the unit of the label), with the latent columns, for checking the planted model."""
    cols = ["site_id", "patient_id", "laterality", "age_true", "density_true", "cancer", "p_cancer"]
    return table[cols].drop_duplicates(["patient_id", "laterality"]).reset_index(drop=True)
