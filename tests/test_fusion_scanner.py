"""Does the image model read the scanner? The probes find a planted scanner signature and stay at chance
without one; the within-machine heterogeneity test and the adjusted odds ratio behave as their textbooks say.

The image features here are the breast's intensity histogram of the rendered synthetic images (a
frozen, model-free feature): what a CNN could pick up most easily.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_insight.fusion.incremental import adjusted_odds_ratio
from mammo_insight.fusion.probes import heterogeneity, run_probes, scanner_verdict, within_group_auc
from mammo_insight.synth.images import render_image, scanner_curve
from mammo_insight.synth.table import SCANNER_EFFECTS, TRUE_EFFECTS, make_synthetic_table

BINS = 16


def histogram_features(
    signature: bool, n_patients: int = 100, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    table = make_synthetic_table(
        n_patients, seed, 0.2, effects=SCANNER_EFFECTS if signature else TRUE_EFFECTS
    )
    rows = []
    for i, row in enumerate(table.itertuples()):
        image = render_image(
            np.random.default_rng([seed, i]),
            48,
            32,
            row.laterality,
            view=row.view,
            density=row.density_true,
            lesion=None,
            pad_far_side=False,
        )
        if signature:
            image = scanner_curve(image, row.machine_id)
        tissue = image.pixels[image.pixels > 0.05]
        rows.append(np.histogram(tissue, bins=BINS, range=(0, 1), density=True)[0])
    cols = [f"emb_{i:03d}" for i in range(BINS)]
    images = pd.concat([table.reset_index(drop=True), pd.DataFrame(np.array(rows), columns=cols)], axis=1)
    return images.astype({"patient_id": str}), cols


@pytest.mark.slow
def test_machine_probe_finds_a_planted_scanner_signature_and_chance_without_one():
    found = {}
    for signature in (True, False):
        images, cols = histogram_features(signature)
        probes = run_probes(images, cols, n_boot=100).set_index("probe")
        found[signature] = probes.loc["machine"]
    assert found[True]["roc_auc"] > 0.95
    assert found[False]["ci_low"] < 0.5 < found[False]["ci_high"]
    assert abs(found[False]["roc_auc"] - 0.5) < 0.07
    assert "Yes" in scanner_verdict(pd.DataFrame([found[True].rename(None)]).assign(probe="machine"), {})


def test_scanner_signature_plants_machine_specific_cancer_rates_and_nothing_by_default():
    def rates(effects):
        table = make_synthetic_table(6000, 0, 0.2, effects=effects).drop_duplicates(
            ["patient_id", "laterality"]
        )
        return table.groupby("machine_id")["cancer"].mean()

    planted, default = rates(SCANNER_EFFECTS), rates(TRUE_EFFECTS)
    assert planted["170"] > 2 * planted["210"]  # log-OR +1.0 against -1.5
    assert abs(default["170"] - default["210"]) < planted["170"] - planted["210"]


def test_heterogeneity_tells_equal_from_different_aucs():
    same = [
        {"roc_auc": 0.70, "ci_low": 0.65, "ci_high": 0.75},
        {"roc_auc": 0.71, "ci_low": 0.66, "ci_high": 0.76},
    ]
    apart = [
        {"roc_auc": 0.55, "ci_low": 0.50, "ci_high": 0.60},
        {"roc_auc": 0.85, "ci_low": 0.80, "ci_high": 0.90},
    ]
    assert heterogeneity(same)["p_value"] > 0.5
    assert heterogeneity(apart)["p_value"] < 1e-6
    assert np.isnan(heterogeneity(same[:1])["p_value"])


def _breasts_with_a_score(score_effect: float, machine_effect: float, n: int = 4000, seed: int = 0):
    """Breasts of n/2 women on two machines; cancer depends on the machine and (optionally) on a score."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n // 2), 2).astype(str)
    machine = np.repeat(rng.choice(["A", "B"], n // 2), 2)
    score = rng.normal(size=n) + machine_effect * (machine == "B")
    logit = -2.0 + score_effect * score + machine_effect * (machine == "B")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    breasts = pd.DataFrame({"patient_id": patient, "machine_id": machine, "cancer": y, "age": 60.0})
    return breasts, score


def test_adjusted_odds_ratio_removes_what_the_score_only_borrows_from_the_machine():
    breasts, score = _breasts_with_a_score(score_effect=0.0, machine_effect=1.5)
    odds = adjusted_odds_ratio(breasts, score, "test score")
    assert odds["crude"]["ci_low"] > 1.1  # the score looks predictive: it reads the machine
    assert odds["adjusted"]["ci_low"] < 1 < odds["adjusted"]["ci_high"]  # within machines it is not
    real, score = _breasts_with_a_score(score_effect=0.8, machine_effect=1.5)
    assert adjusted_odds_ratio(real, score, "test score")["adjusted"]["ci_low"] > 1.5


def test_within_machine_auc_and_its_test():
    breasts, score = _breasts_with_a_score(score_effect=0.8, machine_effect=0.0)
    within, tests = within_group_auc(breasts, score, ("machine_id",), n_boot=100)
    assert set(within["level"]) == {"A", "B"} and (within["roc_auc"] > 0.6).all()
    assert tests["machine_id"]["p_value"] > 0.01 and tests["machine_id"]["left_out"] == []


def _machine_rate_breasts(n_women: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Breasts on six machines whose cancer rates differ (0.5 % to 8 %), nothing else planted."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_women), 2).astype(str)
    machine = np.repeat(rng.choice(list("ABCDEF"), n_women), 2)
    rate = pd.Series(dict(zip("ABCDEF", [0.005, 0.01, 0.02, 0.03, 0.05, 0.08], strict=True)))[
        machine
    ].to_numpy()
    y = (rng.random(2 * n_women) < rate).astype(int)
    site = np.where(np.isin(machine, list("ABC")), "1", "2")
    return pd.DataFrame({"patient_id": patient, "machine_id": machine, "site_id": site, "cancer": y})


def test_a_score_that_is_the_machine_rate_is_called_scanner_driven():
    from mammo_insight.fusion.stratified import audit_sentence, stratified_audit

    breasts = _machine_rate_breasts()
    score = breasts.groupby("machine_id")["cancer"].transform("mean").to_numpy()  # the score
    audit = stratified_audit(breasts, score, ("machine_id",), n_boot=200).set_index("factor")
    row = audit.loc["machine_id"]
    assert row["pooled_low"] > 0.55 and row["stratified_auc"] == pytest.approx(0.5)
    assert row["gap_low"] > 0 and row["grade"] == "scanner-driven"
    assert abs(row["factor_only_auc"] - row["pooled_auc"]) < 0.05  # the machine alone gives the same
    text = audit_sentence(audit.reset_index().iloc[0])
    assert text.startswith("Scanner-driven") and "within-machine (stratified) ROC-AUC 0.500" in text
    _, tests = within_group_auc(breasts, score, ("machine_id",), n_boot=100)
    verdict = scanner_verdict(pd.DataFrame(columns=["probe", "input"]), tests, audit.reset_index())
    assert "Scanner-driven" in verdict and "no sign that the pooled figure" not in verdict


def test_a_score_that_ranks_within_machines_is_not_called_scanner_driven():
    from mammo_insight.fusion.stratified import stratified_audit

    breasts, score = _breasts_with_a_score(score_effect=0.8, machine_effect=0.0)
    audit = stratified_audit(breasts, score, ("machine_id",), n_boot=200).iloc[0]
    assert audit["grade"] == "no" and audit["stratified_low"] > 0.6
    assert audit["gap_low"] < 0 < audit["gap_high"]
    # a real score on top of a machine effect it shares: ranks within machines, and borrows from them
    mixed, score = _breasts_with_a_score(score_effect=0.5, machine_effect=2.0)
    assert stratified_audit(mixed, score, ("machine_id",), n_boot=200).iloc[0]["grade"] == "partly"


@pytest.mark.slow
def test_the_synthetic_scanner_signature_makes_an_image_score_scanner_driven():
    """A score learnt from the rendered images' histograms of ``synth --scanner-signature`` reads the
    machine's intensity curve: the audit calls it scanner-driven; without the signature it has nothing to read."""
    from mammo_insight.fusion.probes import oof_probe
    from mammo_insight.fusion.stratified import stratified_audit

    grades = {}
    for signature in (True, False):
        images, cols = histogram_features(signature, n_patients=600)
        breasts = images.groupby(["patient_id", "laterality"], as_index=False).agg(
            cancer=("cancer", "max"),
            machine_id=("machine_id", "first"),
            site_id=("site_id", "first"),
            **{c: (c, "mean") for c in cols},
        )
        label = np.where(breasts["cancer"] == 1, "cancer", "normal")
        score = oof_probe(breasts[cols].to_numpy(float), label, breasts["patient_id"].to_numpy(), 0)[:, 0]
        audit = stratified_audit(breasts, score, ("machine_id",), n_boot=200).iloc[0]
        grades[signature] = audit
    assert grades[True]["grade"] == "scanner-driven", grades[True].to_dict()
    assert grades[True]["pooled_low"] > 0.5
    assert grades[False]["grade"] != "scanner-driven" and grades[False]["pooled_low"] < 0.5


def test_the_cohort_s_own_factor_is_adjusted_for_when_named():
    """mini-MIAS has no BI-RADS density but its background tissue: a score that only reads the tissue looks
    predictive crude and adjusted for the canonical factors, and loses it once the tissue is adjusted for."""
    breasts, score = _breasts_with_a_score(score_effect=0.0, machine_effect=1.5)
    breasts = breasts.rename(columns={"machine_id": "tissue"}).assign(
        tissue=lambda b: b["tissue"].map({"A": "F", "B": "D"}).astype("category")
    )
    canonical_only = adjusted_odds_ratio(breasts, score, "test score")
    assert "tissue" not in canonical_only["adjusted_for"]
    assert canonical_only["adjusted"]["ci_low"] > 1.1
    with_tissue = adjusted_odds_ratio(breasts, score, "test score", factors=["tissue"])
    assert with_tissue["adjusted_for"] == ["tissue"]
    assert with_tissue["adjusted"]["ci_low"] < 1 < with_tissue["adjusted"]["ci_high"]
